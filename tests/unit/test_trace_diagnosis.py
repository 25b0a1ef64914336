"""The trace's verdicts, from synthetic events shaped exactly like the gateway's, POP3's and ingest's.

Each test plays one case of issue 7 into a real SQLite store and asserts status, reason, who
must act and the key facts the customer reads.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from mailwarden.events import Event
from mailwarden.store.sqlite import SqliteStore
from mailwarden.trace.correlate import key_of_id, link_attempts, load
from mailwarden.trace.diagnose import Diagnosis, diagnose, not_found
from mailwarden.trace.model import MessageTrace
from mailwarden.trace.search import AddressFilter, SearchSpec, search

T0 = 1_800_000_000_000_000  # microseconds; 2027-01-15
MINUTE = 60_000_000
HOUR = 60 * MINUTE
DOMAINS = ("example.test", "example.org")


@pytest.fixture
def store(tmp_path: Path) -> Iterator[SqliteStore]:
    db = SqliteStore(tmp_path / "events.db", batch_interval=0.001)
    for mailbox in ("bob@example.test", "carol@example.test", "dave@example.org"):
        db.add_mailbox(mailbox, "x")
    try:
        yield db
    finally:
        db.close()


class Session:
    """Writes the events one gateway connection would write (see smtp/gateway.py)."""

    def __init__(self, store: SqliteStore, ref: str, at: int, client_ip: str = "192.0.2.10", **conn: Any) -> None:
        self.store, self.ref, self.at = store, ref, at
        self.common: dict[str, Any] = {"session": ref, "client_ip": client_ip, **conn}
        self.sender: str | None = None
        self.emit("connect", detail={"port": 40000})
        self.emit("helo", helo=conn.get("helo", "mail.sender.test"), detail={"esmtp": True})

    def emit(self, kind: str, **fields: Any) -> Event:
        self.at += 1000
        fields.setdefault("ref", self.ref)
        if self.sender is not None:
            fields.setdefault("sender", self.sender)
        event = Event(kind=kind, source="gateway", node="mx1", ts=self.at, **self.common, **fields)
        self.store.append(event)
        return event

    def mail(self, sender: str) -> None:
        self.sender = sender
        self.emit("mail")

    def rcpt(self, address: str, mailbox: str | None = None) -> None:
        self.emit("rcpt", recipient=address, detail={"mailbox": mailbox or address.lower()})

    def refuse(
        self, reason: str, code: int, enhanced: str, stage: str, recipient: str | None = None, **values: Any
    ) -> None:
        kind = "reject" if code >= 500 else "tempfail"
        reply = f"{code} {enhanced} refused ref={self.ref}"
        detail: dict[str, Any] = {"stage": stage, **values}
        if values:
            detail["values"] = values
        self.emit(
            kind, recipient=recipient, smtp_code=code, enhanced_code=enhanced, reply=reply, reason=reason, detail=detail
        )

    def deliver(
        self, recipients: list[str], folder: str = "INBOX", message_id: str = "<m1@sender.test>", uid: str = "U1"
    ) -> None:
        self.emit("data", size=1200, message_id=message_id)
        for address in recipients:
            reason = "delivered.junk" if folder == "Junk" else "delivered"
            detail = {"mailbox": address, "folder": folder, "uid": uid}
            self.emit("deliver", recipient=address, message_id=message_id, size=1300, reason=reason, detail=detail)
        reply = f"250 2.0.0 Message accepted and stored for {len(recipients)} recipient(s) ref={self.ref}"
        self.emit(
            "accept", smtp_code=250, enhanced_code="2.0.0", reply=reply, message_id=message_id, reason="delivered"
        )

    def close(self) -> None:
        self.emit("disconnect", ref=self.common["session"], detail={"commands": {}})


def pop3(
    store: SqliteStore, kind: str, ref: str, mailbox: str, at: int, client_ip: str, session: str, uid: str = "U1"
) -> None:
    """Events shaped like the POP3 server's: recipient = mailbox, ref = the delivery's ref."""
    ref_value = None if kind in ("login", "logout") else ref
    detail = {"uid": uid} if ref_value else {}
    store.append(
        Event(
            kind=kind,
            source="pop3",
            node="mx1",
            ts=at,
            ref=ref_value,
            session=session,
            recipient=mailbox,
            client_ip=client_ip,
            detail=detail,
        )
    )


def traced(store: SqliteStore, trace_id: str) -> MessageTrace:
    store.flush()
    found = key_of_id(store, trace_id)
    assert found is not None, f"{trace_id} not found"
    (trace,) = load(store, {found[0]: found[1]})
    link_attempts(store, trace)
    return trace


def verdict(
    store: SqliteStore, trace_id: str, recipient: str | None = None, lang: str = "en", now: int | None = None
) -> Diagnosis:
    trace = traced(store, trace_id)
    return diagnose(store, trace, recipient=recipient, lang=lang, domains=DOMAINS, now=now or T0 + 3 * HOUR)  # type: ignore[arg-type]


# ---------------------------------------------------------------------------- refusals
def test_unknown_recipient_suggests_the_mailbox_with_a_typo_in_the_local_part(store: SqliteStore) -> None:
    s = Session(store, "1AAAAAAAAAA0", T0)
    s.mail("alice@sender.test")
    s.refuse("rcpt.unknown_user", 550, "5.1.1", "rcpt", recipient="bbo@example.test")
    s.close()
    d = verdict(store, "1AAAAAAAAAA0")
    assert (d.status, d.reason, d.responsibility) == ("rejected", "rcpt.unknown_user", "sender")
    assert any("Did you mean bob@example.test?" in note for note in d.notes)
    assert "550 5.1.1" in d.summary


def test_recipient_domain_typo_is_relay_denied_and_suggests_our_domain(store: SqliteStore) -> None:
    s = Session(store, "1AAAAAAAAAA1", T0)
    s.mail("alice@sender.test")
    s.refuse(
        "rcpt.relay_denied",
        554,
        "5.7.1",
        "rcpt",
        recipient="bob@exmaple.test",
        problem="exmaple.test is not a domain we serve",
    )
    d = verdict(store, "1AAAAAAAAAA1", lang="de")
    assert (d.status, d.reason, d.responsibility) == ("rejected", "rcpt.relay_denied", "sender")
    assert any("Meinten Sie bob@example.test?" in note for note in d.notes)
    assert "exmaple.test is not a domain we serve" in d.summary


@pytest.mark.parametrize(
    ("reason", "code", "enhanced", "stage", "values", "fact"),
    [
        (
            "client.dnsbl",
            554,
            "5.7.1",
            "rcpt",
            {
                "client_ip": "192.0.2.10",
                "zone": "zen.spamhaus.org",
                "meaning": "a dynamic (end-user) address (PBL)",
                "advice": "use your provider's relay",
            },
            "zen.spamhaus.org",
        ),
        (
            "client.dynamic_rdns",
            550,
            "5.7.25",
            "rcpt",
            {"client_ip": "192.0.2.10", "client_name": "dsl-192-0-2-10.dyn.example.net"},
            "dsl-192-0-2-10.dyn.example.net",
        ),
        ("sender.mx_ip_literal", 550, "5.1.8", "mail", {"domain": "sender.test", "record": "192.0.2.99"}, "192.0.2.99"),
        (
            "msg.virus",
            554,
            "5.7.1",
            "data",
            {"virus": "Eicar-Test-Signature", "where": "the attachment eicar.com"},
            "Eicar-Test-Signature",
        ),
        ("msg.spam", 550, "5.7.1", "data", {"score": "15.2", "limit": "10", "symbols": "GTUBE"}, "GTUBE"),
        ("msg.macro", 554, "5.7.1", "data", {"filename": "invoice.docm", "finding": "AutoOpen"}, "invoice.docm"),
        (
            "msg.dangerous_attachment",
            554,
            "5.7.1",
            "data",
            {"filename": "run.exe", "filetype": "Windows program"},
            "run.exe",
        ),
        (
            "msg.dmarc_reject",
            550,
            "5.7.1",
            "data",
            {"domain": "sender.test", "dmarc_detail": "SPF and DKIM not aligned"},
            "p=reject",
        ),
        ("msg.too_big", 552, "5.3.4", "data", {"size": 30000000, "limit": 26214400}, "26214400"),
    ],
)
def test_every_kind_of_refusal_names_its_cause_and_that_the_sender_must_act(
    store: SqliteStore, reason: str, code: int, enhanced: str, stage: str, values: dict[str, Any], fact: str
) -> None:
    s = Session(store, "1AAAAAAAAAB0", T0)
    s.mail("alice@sender.test")
    if stage == "mail":
        s.refuse(reason, code, enhanced, "mail", **values)
    else:
        s.rcpt("bob@example.test")
        s.refuse(reason, code, enhanced, stage, recipient="bob@example.test" if stage == "rcpt" else None, **values)
    s.close()
    for lang in ("en", "de"):
        d = verdict(store, "1AAAAAAAAAB0", lang=lang)
        assert (d.status, d.reason, d.responsibility) == ("rejected", reason, "sender")
        assert fact in d.summary + d.remedy
        assert "(not recorded)" not in d.summary and "(nicht erfasst)" not in d.summary


def test_refusal_at_mail_from_has_a_verdict_without_recipient(store: SqliteStore) -> None:
    s = Session(store, "1AAAAAAAAAB1", T0)
    s.mail("alice@ip-mx.test")
    s.refuse("sender.mx_ip_literal", 550, "5.1.8", "mail", domain="ip-mx.test", record="192.0.2.99")
    trace = traced(store, "1AAAAAAAAAB1")
    assert trace.recipients == [] and trace.outcome is not None
    assert trace.to_json()["recipients"][0]["status"] == "rejected"


# ---------------------------------------------------------------------------- accepted mail
def test_delivered_then_deleted_by_another_device_in_the_customers_network(store: SqliteStore) -> None:
    for day in range(1, 6):  # the office PC fetches every day
        pop3(store, "login", "", "bob@example.test", T0 - day * 24 * HOUR, "198.51.100.20", f"P{day}")
    s = Session(store, "1AAAAAAAAAC0", T0)
    s.mail("alice@sender.test")
    s.rcpt("bob@example.test")
    s.deliver(["bob@example.test"])
    s.close()
    pop3(store, "login", "", "bob@example.test", T0 + 3 * MINUTE, "198.51.100.77", "PX")
    pop3(store, "retrieve", "1AAAAAAAAAC0", "bob@example.test", T0 + 3 * MINUTE + 10, "198.51.100.77", "PX")
    pop3(store, "delete", "1AAAAAAAAAC0", "bob@example.test", T0 + 3 * MINUTE + 20, "198.51.100.77", "PX")
    d = verdict(store, "1AAAAAAAAAC0")
    assert (d.status, d.reason, d.responsibility) == ("deleted", "access.deleted", "recipient")
    assert "198.51.100.77" in d.summary and "198.51.100.77" in d.remedy
    assert any("another device in your network" in n and "198.51.100.20" in n for n in d.notes)
    trace = traced(store, "1AAAAAAAAAC0")
    (fate,) = trace.recipients
    assert [(a.kind, a.client_ip, a.at) for a in fate.accesses] == [
        ("retrieve", "198.51.100.77", T0 + 3 * MINUTE + 10),
        ("delete", "198.51.100.77", T0 + 3 * MINUTE + 20),
    ]


def test_deletion_by_the_usual_client_is_not_flagged(store: SqliteStore) -> None:
    pop3(store, "login", "", "bob@example.test", T0 - 24 * HOUR, "198.51.100.20", "P1")
    s = Session(store, "1AAAAAAAAAC1", T0)
    s.mail("alice@sender.test")
    s.rcpt("bob@example.test")
    s.deliver(["bob@example.test"])
    pop3(store, "delete", "1AAAAAAAAAC1", "bob@example.test", T0 + MINUTE, "198.51.100.20", "P2")
    d = verdict(store, "1AAAAAAAAAC1", lang="de")
    assert d.status == "deleted"
    assert any("regelmäßig" in n for n in d.notes) and not any("weiteres Gerät" in n for n in d.notes)


def test_delivered_into_junk_tells_the_recipient_to_look_there(store: SqliteStore) -> None:
    s = Session(store, "1AAAAAAAAAD0", T0)
    s.mail("alice@sender.test")
    s.rcpt("bob@example.test")
    s.deliver(["bob@example.test"], folder="Junk")
    d = verdict(store, "1AAAAAAAAAD0")
    assert (d.status, d.reason, d.responsibility) == ("junk", "delivered.junk", "recipient")
    assert "Junk" in d.summary


def test_greylisted_then_accepted_on_the_retry(store: SqliteStore) -> None:
    first = Session(store, "1AAAAAAAAAE0", T0)
    first.mail("alice@sender.test")
    first.refuse("greylisted", 451, "4.7.1", "rcpt", recipient="bob@example.test", client_ip="192.0.2.10", delay=300)
    first.close()
    retry = Session(store, "1AAAAAAAAAE1", T0 + 7 * MINUTE)
    retry.mail("alice@sender.test")
    retry.rcpt("bob@example.test")
    retry.deliver(["bob@example.test"])
    accepted = verdict(store, "1AAAAAAAAAE1")
    assert accepted.status == "delivered"
    assert any("greylisting" in n and "1AAAAAAAAAE0" in n for n in accepted.notes)
    deferred = verdict(store, "1AAAAAAAAAE0")
    assert (deferred.status, deferred.reason, deferred.responsibility) == ("tempfailed", "greylisted", "none")
    assert any("1AAAAAAAAAE1" in n and "delivered" in n for n in deferred.notes)


def test_temporary_refusal_never_retried_puts_the_sender_in_charge(store: SqliteStore) -> None:
    s = Session(store, "1AAAAAAAAAF0", T0)
    s.mail("alice@sender.test")
    s.refuse("infra.dns_tempfail", 451, "4.4.3", "rcpt", recipient="bob@example.test", what="the sender domain")
    s.close()
    soon = verdict(store, "1AAAAAAAAAF0", now=T0 + 10 * MINUTE)
    assert soon.responsibility == "provider" and any("No retry has arrived yet" in n for n in soon.notes)
    late = verdict(store, "1AAAAAAAAAF0", now=T0 + 30 * HOUR)
    assert (late.status, late.responsibility) == ("tempfailed", "sender")
    assert any("did not try again" in n for n in late.notes)
    assert "outgoing queue" in late.remedy


def test_connection_lost_during_data_is_a_transaction_not_accepted(store: SqliteStore) -> None:
    s = Session(store, "1AAAAAAAAAG0", T0)
    s.mail("alice@sender.test")
    s.rcpt("bob@example.test")
    s.emit("data", size=100, detail={"incomplete": True})
    s.close()
    d = verdict(store, "1AAAAAAAAAG0")
    assert (d.status, d.reason) == ("tempfailed", "transaction.abandoned")


# ---------------------------------------------------------------------------- foreign logs
def test_postfix_queue_and_dovecot_deletion_join_by_queue_id_and_message_id(store: SqliteStore) -> None:
    common = {"source": "postfix", "node": "relay1"}
    raw = "/var/log/mail.log:{} Nov 28 04:43:17 relay1 postfix/{}"
    store.append_many(
        [
            Event(
                kind="connect",
                ts=T0,
                session="smtpd-19314",
                client_ip="192.0.2.50",
                evidence=raw.format(10, "smtpd: connect"),
                **common,
            ),
            Event(
                kind="accept",
                ts=T0 + 10,
                session="smtpd-19314",
                queue_id="A59FE214716",
                client_ip="192.0.2.50",
                evidence=raw.format(90, "smtpd: A59FE214716: client="),
                **common,
            ),
            Event(
                kind="data",
                ts=T0 + 20,
                queue_id="A59FE214716",
                message_id="<pf1@sender.test>",
                evidence=raw.format(160, "cleanup"),
                **common,
            ),
            Event(
                kind="mail",
                ts=T0 + 30,
                queue_id="A59FE214716",
                sender="alice@sender.test",
                size=430,
                evidence=raw.format(240, "qmgr"),
                **common,
            ),
            Event(
                kind="deliver",
                ts=T0 + 40,
                queue_id="A59FE214716",
                recipient="dave@example.org",
                reason="delivered",
                message_id="<pf1@sender.test>",
                evidence=raw.format(330, "lmtp: status=sent"),
                **common,
            ),
            Event(
                kind="delete",
                source="dovecot",
                node="imap1",
                ts=T0 + 5 * MINUTE,
                session="I3wyyE5hXpx",
                recipient="dave@example.org",
                message_id="<pf1@sender.test>",
                client_ip="203.0.113.9",
                detail={"protocol": "pop3"},
                evidence="/var/log/dovecot.log:512 pop3(dave@example.org): expunge: box=INBOX, uid=1, msgid=<pf1@sender.test>",
            ),
        ]
    )
    store.flush()
    result = search(
        store, SearchSpec(recipient=AddressFilter.parse("dave@example.org")), retention_days=90, now=T0 + HOUR
    )
    (trace,) = result.messages
    assert trace.queue_id == "A59FE214716" and trace.client_ip == "192.0.2.50"
    (fate,) = trace.recipients
    assert fate.status == "deleted"
    assert [(a.client_ip, a.protocol) for a in fate.accesses] == [("203.0.113.9", "pop3")]
    d = diagnose(store, trace, domains=DOMAINS, now=T0 + HOUR)
    assert d.responsibility == "recipient" and "203.0.113.9" in d.summary
    assert any(line.endswith("msgid=<pf1@sender.test>") and "dovecot.log:512" in line for line in d.evidence)


# ---------------------------------------------------------------------------- nothing found and search
def test_nothing_found_says_what_was_searched_and_names_the_near_miss(store: SqliteStore) -> None:
    s = Session(store, "1AAAAAAAAAH0", T0)
    s.mail("alice@sender.test")
    s.rcpt("bob@example.test")
    s.deliver(["bob@example.test"])
    store.flush()
    spec = SearchSpec(recipient=AddressFilter.parse("bob@exmaple.test"), since_us=T0 - HOUR, until_us=T0 + HOUR)
    result = search(store, spec, retention_days=90, now=T0 + HOUR)
    assert result.rows == []
    d = not_found(store, spec, lang="en", domains=DOMAINS)
    assert (d.status, d.responsibility) == ("not_found", "sender")
    assert "bob@exmaple.test" in d.summary and "never reached our mail server" in d.summary
    assert "outgoing queue" in d.remedy and "bounce" in d.remedy
    assert d.notes == ["Similar address bob@example.test: 1 message(s) in the same window."]


def test_search_pages_newest_first_and_filters_status_domain_and_network(store: SqliteStore) -> None:
    for n in range(5):
        s = Session(store, f"1AAAAAAAAAJ{n}", T0 + n * MINUTE, client_ip=f"192.0.2.{n}")
        s.mail("alice@sender.test")
        if n % 2:
            s.refuse("rcpt.unknown_user", 550, "5.1.1", "rcpt", recipient="nobody@example.test")
        else:
            s.rcpt("bob@example.test")
            s.deliver(["bob@example.test"])
    store.flush()
    first = search(
        store, SearchSpec(recipient=AddressFilter.parse("@EXAMPLE.test"), limit=2), retention_days=90, now=T0
    )
    assert [t.id for t in first.messages] == ["1AAAAAAAAAJ4", "1AAAAAAAAAJ3"] and first.more
    second = search(
        store, SearchSpec(recipient=AddressFilter.parse("example.test"), limit=2, offset=4), retention_days=90, now=T0
    )
    assert [t.id for t in second.messages] == ["1AAAAAAAAAJ0"] and not second.more
    rejected = search(store, SearchSpec(status="rejected"), retention_days=90, now=T0)
    assert sorted(t.id for t in rejected.messages) == ["1AAAAAAAAAJ1", "1AAAAAAAAAJ3"]
    network = search(store, SearchSpec(client="192.0.2.0/31"), retention_days=90, now=T0)
    assert sorted(t.id for t in network.messages) == ["1AAAAAAAAAJ0", "1AAAAAAAAAJ1"]
    contains = search(store, SearchSpec(recipient=AddressFilter.parse("*BODY*")), retention_days=90, now=T0)
    assert {f.address for _, f in contains.rows} == {"nobody@example.test"}


def test_a_window_older_than_the_retention_is_reported(store: SqliteStore) -> None:
    store.append(Event(kind="connect", source="gateway", node="mx1", ts=T0, ref="1AAAAAAAAAK0", session="1AAAAAAAAAK0"))
    store.flush()
    result = search(store, SearchSpec(since_us=T0 - 100 * 24 * HOUR), retention_days=90, now=T0)
    assert result.retention is not None and result.retention.oldest_us == T0
    assert search(store, SearchSpec(since_us=T0 - HOUR), retention_days=90, now=T0).retention is None


def test_failed_logins_do_not_make_an_address_a_usual_client(store: SqliteStore) -> None:
    pop3(store, "login", "", "bob@example.test", T0 - 24 * HOUR, "198.51.100.20", "P1")
    store.append(
        Event(
            kind="login",
            source="pop3",
            node="mx1",
            ts=T0 - HOUR,
            session="PF",
            recipient="bob@example.test",
            client_ip="203.0.113.66",
            reason="access.login_failed",
        )
    )
    s = Session(store, "1AAAAAAAAAC2", T0)
    s.mail("alice@sender.test")
    s.rcpt("bob@example.test")
    s.deliver(["bob@example.test"])
    pop3(store, "delete", "1AAAAAAAAAC2", "bob@example.test", T0 + MINUTE, "203.0.113.66", "P2")
    d = verdict(store, "1AAAAAAAAAC2")
    assert any("change the mailbox password" in n and "198.51.100.20" in n for n in d.notes)


# Postfix lines as the recipes captured them (shared/recipes/README.md, section 1).
POSTFIX_LOG = """\
Nov 28 04:43:17 mta postfix/smtpd[19314]: connect from localhost[127.0.0.1]
Nov 28 04:43:17 mta postfix/smtpd[19314]: A59FE214716: client=localhost[127.0.0.1]
Nov 28 04:43:17 mta postfix/cleanup[19438]: A59FE214716: message-id=<pf1@sender.test>
Nov 28 04:43:17 mta postfix/qmgr[19311]: A59FE214716: from=<alice@sender.test>, size=430, nrcpt=2 (queue active)
Nov 28 04:43:17 mta postfix/smtpd[19314]: disconnect from localhost[127.0.0.1] ehlo=1 mail=1 rcpt=2 data=1 quit=1 commands=6
Nov 28 04:43:17 mta postfix/smtp[19439]: A59FE214716: to=<reject-me@dest.test>, relay=127.0.0.1[127.0.0.1]:2525, delay=0.02, delays=0.01/0.01/0/0.01, dsn=5.7.1, status=bounced (host 127.0.0.1[127.0.0.1] said: 550 5.7.1 <reject-me@dest.test>: Recipient address rejected: test policy says no (in reply to RCPT TO command))
Nov 28 04:43:17 mta postfix/smtp[19439]: A59FE214716: to=<bob@dest.test>, relay=127.0.0.1[127.0.0.1]:2525, delay=0.02, delays=0.01/0.01/0/0.01, dsn=2.0.0, status=sent (250 2.0.0 Ok: queued as TEST1)
Nov 28 04:43:17 mta postfix/qmgr[19311]: A59FE214716: removed
Nov 28 04:44:17 mta postfix/smtpd[6917]: connect from unknown[192.0.2.99]
Nov 28 04:44:18 mta postfix/smtpd[6917]: NOQUEUE: reject: RCPT from unknown[192.0.2.99]: 550 5.1.1 <bbo@dest.test>: Recipient address rejected: User unknown in virtual mailbox table; from=<alice@sender.test> to=<bbo@dest.test> proto=ESMTP helo=<client.test>
Nov 28 04:44:18 mta postfix/smtpd[6917]: disconnect from unknown[192.0.2.99] ehlo=1 mail=1 rcpt=0/1 quit=1 commands=3/4
"""


def test_ingested_postfix_log_is_traced_per_queue_id_and_noqueue_session(store: SqliteStore) -> None:
    from mailwarden.ingest.pipeline import parse_lines

    store.add_mailbox("bob@dest.test", "x")
    store.append_many(parse_lines(POSTFIX_LOG.splitlines(), node="mta", origin="/var/log/mail.log", reference_us=T0))
    store.flush()
    queued = search(store, SearchSpec(queue_id="A59FE214716"), retention_days=3650, now=T0)
    (trace,) = queued.messages
    assert (trace.client_ip, trace.message_id, trace.sender) == ("127.0.0.1", "<pf1@sender.test>", "alice@sender.test")
    assert {f.address: f.status for f in trace.recipients} == {
        "reject-me@dest.test": "bounced",
        "bob@dest.test": "delivered",
    }
    noqueue = search(store, SearchSpec(recipient=AddressFilter.parse("bbo@dest.test")), retention_days=3650, now=T0)
    (refused,) = noqueue.messages
    d = diagnose(store, refused, domains=("dest.test",), now=T0)
    assert (d.status, d.reason, d.responsibility) == ("rejected", "rcpt.unknown_user", "sender")
    assert any("Did you mean bob@dest.test?" in n for n in d.notes)
    assert any("/var/log/mail.log:" in line and "NOQUEUE: reject" in line for line in d.evidence)
