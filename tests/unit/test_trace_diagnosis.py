"""The trace's verdicts, from synthetic events shaped exactly like the gateway's, POP3's and ingest's.

Each test plays one case of issue 7 into a real SQLite store and asserts status, reason, who
must act and the key facts the customer reads.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from mailwarden.events import Event
from mailwarden.store import EventQuery, Store
from mailwarden.trace import report
from mailwarden.trace.correlate import key_of_id, link_attempts, load, timeline
from mailwarden.trace.diagnose import Diagnosis, diagnose, not_found
from mailwarden.trace.model import MessageTrace
from mailwarden.trace.search import AddressFilter, SearchSpec, search
from tests.support.postfix import RELAY_LOG

T0 = 1_800_000_000_000_000  # microseconds; 2027-01-15
MINUTE = 60_000_000
HOUR = 60 * MINUTE
DOMAINS = ("example.test", "example.org")


@pytest.fixture
def store(store: Store) -> Store:
    """The shared fixture's store (both backends) with these mailboxes."""
    for mailbox in ("bob@example.test", "carol@example.test", "dave@example.org"):
        store.add_mailbox(mailbox, "x")
    return store


class Session:
    """Writes the events one gateway connection would write (see smtp/gateway.py)."""

    def __init__(self, store: Store, ref: str, at: int, client_ip: str = "192.0.2.10", **conn: Any) -> None:
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
    store: Store, kind: str, ref: str, mailbox: str, at: int, client_ip: str, session: str, uid: str = "U1"
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


def traced(store: Store, trace_id: str) -> MessageTrace:
    store.flush()
    key = key_of_id(store, trace_id)
    assert key is not None, f"{trace_id} not found"
    (trace,) = load(store, [key])
    link_attempts(store, trace)
    return trace


def verdict(
    store: Store, trace_id: str, recipient: str | None = None, lang: str = "en", now: int | None = None
) -> Diagnosis:
    trace = traced(store, trace_id)
    return diagnose(store, trace, recipient=recipient, lang=lang, domains=DOMAINS, now=now or T0 + 3 * HOUR)  # type: ignore[arg-type]


# ---------------------------------------------------------------------------- refusals
def test_unknown_recipient_suggests_the_mailbox_with_a_typo_in_the_local_part(store: Store) -> None:
    s = Session(store, "1AAAAAAAAAA0", T0)
    s.mail("alice@sender.test")
    s.refuse("rcpt.unknown_user", 550, "5.1.1", "rcpt", recipient="bbo@example.test")
    s.close()
    d = verdict(store, "1AAAAAAAAAA0")
    assert (d.status, d.reason, d.responsibility) == ("rejected", "rcpt.unknown_user", "sender")
    assert any("Did you mean bob@example.test?" in note for note in d.notes)
    assert "550 5.1.1" in d.summary


def test_recipient_domain_typo_is_relay_denied_and_suggests_our_domain(store: Store) -> None:
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
    store: Store, reason: str, code: int, enhanced: str, stage: str, values: dict[str, Any], fact: str
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


def test_refusal_at_mail_from_has_a_verdict_without_recipient(store: Store) -> None:
    s = Session(store, "1AAAAAAAAAB1", T0)
    s.mail("alice@ip-mx.test")
    s.refuse("sender.mx_ip_literal", 550, "5.1.8", "mail", domain="ip-mx.test", record="192.0.2.99")
    trace = traced(store, "1AAAAAAAAAB1")
    assert trace.recipients == [] and trace.outcome is not None
    assert trace.to_json()["recipients"][0]["status"] == "rejected"


# ---------------------------------------------------------------------------- accepted mail
def test_delivered_then_deleted_by_another_device_in_the_customers_network(store: Store) -> None:
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


def test_deletion_by_the_usual_client_is_not_flagged(store: Store) -> None:
    pop3(store, "login", "", "bob@example.test", T0 - 24 * HOUR, "198.51.100.20", "P1")
    s = Session(store, "1AAAAAAAAAC1", T0)
    s.mail("alice@sender.test")
    s.rcpt("bob@example.test")
    s.deliver(["bob@example.test"])
    pop3(store, "delete", "1AAAAAAAAAC1", "bob@example.test", T0 + MINUTE, "198.51.100.20", "P2")
    d = verdict(store, "1AAAAAAAAAC1", lang="de")
    assert d.status == "deleted"
    assert any("regelmäßig" in n for n in d.notes) and not any("weiteres Gerät" in n for n in d.notes)


def test_delivered_into_junk_tells_the_recipient_to_look_there(store: Store) -> None:
    s = Session(store, "1AAAAAAAAAD0", T0)
    s.mail("alice@sender.test")
    s.rcpt("bob@example.test")
    s.deliver(["bob@example.test"], folder="Junk")
    d = verdict(store, "1AAAAAAAAAD0")
    assert (d.status, d.reason, d.responsibility) == ("junk", "delivered.junk", "recipient")
    assert "Junk" in d.summary


def test_a_delivery_recorded_at_start_after_a_crash_says_the_sender_got_no_reply_and_it_may_come_twice(
    store: Store,
) -> None:
    s = Session(store, "1AAAAAAAAAD5", T0)
    s.mail("alice@sender.test")
    s.rcpt("bob@example.test")
    s.rcpt("carol@example.test")
    s.emit("data", size=1200, message_id="<m5@sender.test>")
    # what deliver/journal.py records at start for the one copy the crash left linked; no accept event
    detail = {"mailbox": "bob@example.test", "folder": "INBOX", "uid": "U5", "unconfirmed": True}
    s.emit("deliver", recipient="bob@example.test", reason="delivered.unconfirmed", size=1300, detail=detail)
    bob = verdict(store, "1AAAAAAAAAD5", "bob@example.test")
    assert (bob.status, bob.reason, bob.responsibility) == ("delivered", "delivered.unconfirmed", "none")
    assert "The sender got no reply" in bob.summary and "may arrive twice" in bob.summary
    assert "Nothing is lost" in bob.remedy
    german = verdict(store, "1AAAAAAAAAD5", "bob@example.test", lang="de")
    assert "keine Antwort erhalten" in german.summary and "doppelt ankommen" in german.summary
    carol = verdict(store, "1AAAAAAAAAD5", "carol@example.test")  # her copy was never linked
    assert (carol.status, carol.reason) == ("tempfailed", "transaction.abandoned")


def test_a_plain_delivery_is_told_by_its_status_sentence_alone(store: Store) -> None:
    s = Session(store, "1AAAAAAAAAD6", T0)
    s.mail("alice@sender.test")
    s.rcpt("bob@example.test")
    s.deliver(["bob@example.test"])
    d = verdict(store, "1AAAAAAAAAD6")
    assert d.summary.startswith("Accepted and stored at ") and d.summary.endswith("(folder INBOX).")


def test_greylisted_then_accepted_on_the_retry(store: Store) -> None:
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


def test_temporary_refusal_never_retried_puts_the_sender_in_charge(store: Store) -> None:
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


def test_connection_lost_during_data_is_a_transaction_not_accepted(store: Store) -> None:
    s = Session(store, "1AAAAAAAAAG0", T0)
    s.mail("alice@sender.test")
    s.rcpt("bob@example.test")
    s.emit("data", size=100, detail={"incomplete": True})
    s.close()
    d = verdict(store, "1AAAAAAAAAG0")
    assert (d.status, d.reason) == ("tempfailed", "transaction.abandoned")


# ---------------------------------------------------------------------------- foreign logs
def test_postfix_queue_and_dovecot_deletion_join_by_queue_id_and_message_id(store: Store) -> None:
    queue = {"queue_id": "A59FE214716"}
    session = {"session": "smtpd-19314", "client_ip": "192.0.2.50"}

    def relay1(kind: str, at: int, offset: int, line: str, **fields: Any) -> Event:
        evidence = f"/var/log/mail.log:{offset} Nov 28 04:43:17 relay1 postfix/{line}"
        return Event(kind=kind, source="postfix", node="relay1", ts=T0 + at, evidence=evidence, **fields)

    store.append_many(
        [
            relay1("connect", 0, 10, "smtpd: connect", **session),
            relay1("accept", 10, 90, "smtpd: A59FE214716: client=", **session, **queue),
            relay1("data", 20, 160, "cleanup", message_id="<pf1@sender.test>", **queue),
            relay1("mail", 30, 240, "qmgr", sender="alice@sender.test", size=430, **queue),
            relay1(
                "deliver",
                40,
                330,
                "lmtp: status=sent",
                recipient="dave@example.org",
                reason="delivered",
                message_id="<pf1@sender.test>",
                **queue,
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
def test_nothing_found_says_what_was_searched_and_names_the_near_miss(store: Store) -> None:
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


def test_search_pages_newest_first_and_filters_status_domain_and_network(store: Store) -> None:
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


def test_a_window_older_than_the_retention_is_reported(store: Store) -> None:
    store.append(Event(kind="connect", source="gateway", node="mx1", ts=T0, ref="1AAAAAAAAAK0", session="1AAAAAAAAAK0"))
    store.flush()
    result = search(store, SearchSpec(since_us=T0 - 100 * 24 * HOUR), retention_days=90, now=T0)
    assert result.retention is not None and result.retention.oldest_us == T0
    assert search(store, SearchSpec(since_us=T0 - HOUR), retention_days=90, now=T0).retention is None


def test_failed_logins_do_not_make_an_address_a_usual_client(store: Store) -> None:
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


# A delivery and a bounce (tests/support/postfix.py), then a recipient refused before the queue.
POSTFIX_LOG = [
    *RELAY_LOG,
    "Nov 28 04:44:17 mta postfix/smtpd[6917]: connect from unknown[192.0.2.99]",
    "Nov 28 04:44:18 mta postfix/smtpd[6917]: NOQUEUE: reject: RCPT from unknown[192.0.2.99]: 550 5.1.1 <bbo@dest.test>: Recipient address rejected: User unknown in virtual mailbox table; from=<alice@sender.test> to=<bbo@dest.test> proto=ESMTP helo=<client.test>",
    "Nov 28 04:44:18 mta postfix/smtpd[6917]: disconnect from unknown[192.0.2.99] ehlo=1 mail=1 rcpt=0/1 quit=1 commands=3/4",
]


def test_ingested_postfix_log_is_traced_per_queue_id_and_noqueue_session(store: Store) -> None:
    from mailwarden.ingest.pipeline import parse_lines

    store.add_mailbox("bob@dest.test", "x")
    store.append_many(parse_lines(POSTFIX_LOG, node="mta", origin="/var/log/mail.log", reference_us=T0))
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


# ---------------------------------------------------------------------------- a mailbox server on another node
# Dovecot 2.3 lines in its own file format (docs/dovecot.md), all in the second T0 (2027-01-15 08:00:00 UTC).
LMTP_SESSION = "oJU8FT9sCmtKRAAAg+zDdQ"
OPENED = (
    '2027-01-15 08:00:00 stats: Info: {{"event":"mail_opened","hostname":"store1",{start}"categories":["mail",'
    '"storage","service:pop3","mailbox","maildir"],"fields":{{"reason_code":["pop3:cmd_retr"],"duration":34,'
    '"user":"{user}","session":"4GDrtU9h7e1/AAAF","mailbox":"INBOX","reason":"access","seq":1,"uid":{uid},'
    '"mail_age_days":0}}}}'
)
STORE1_LOG = """\
2027-01-15 08:00:00 lmtp(17482): Info: Connect from 192.0.2.25
2027-01-15 08:00:00 lmtp({user})<17482><{session}>: Info: save: box=INBOX, uid={uid}, msgid={msgid}, size=3193, from=, subject=x
2027-01-15 08:00:00 lmtp({user})<17482><{session}>: Info: msgid={msgid}: saved mail to INBOX
2027-01-15 08:00:00 lmtp(17482): Info: Disconnect from 192.0.2.25: Logged out (state=READY)
2027-01-15 08:00:00 pop3-login: Info: Login: user=<{user}>, method=PLAIN, rip=198.51.100.20, lip=192.0.2.30, mpid=16547, session=<4GDrtU9h7e1/AAAF>
{opened}
2027-01-15 08:00:00 pop3({user})<16547><4GDrtU9h7e1/AAAF>: Info: expunge: box=INBOX, uid={uid}, msgid={msgid}, size=3193, from=, subject=x
2027-01-15 08:00:00 pop3({user})<16547><4GDrtU9h7e1/AAAF>: Info: Disconnected: Logged out top=0/0, retr=1/3193, del=1/1, size=3193
"""


def store1_log(
    msgid: str = "<m1@sender.test>",
    user: str = "bob@example.test",
    session: str = LMTP_SESSION,
    start: str | None = "2027-01-15T08:00:00.702192Z",
    uid: int = 6,
) -> list[str]:
    """What Dovecot on store1 logs when it gets a message by LMTP and a POP3 client fetches and deletes it."""
    opened = OPENED.format(start=f'"start_time":"{start}",' if start else "", user=user, uid=uid)
    return STORE1_LOG.format(msgid=msgid, user=user, session=session, opened=opened, uid=uid).splitlines()


def ingest(store: Store, lines: list[str], node: str, origin: str) -> None:
    from mailwarden.ingest.pipeline import parse_lines

    store.append_many(parse_lines(lines, node=node, origin=origin, reference_us=T0))
    store.flush()


def placed(trace: MessageTrace) -> list[tuple[str, str]]:
    return [(e.source, e.kind) for e in trace.events]


def delivered_by_proxy(store: Store, ref: str) -> None:
    """Our gateway in proxy mode hands <m1@sender.test> to Dovecot by LMTP at 08:00:00.606 (sub-second stamps)."""
    s = Session(store, ref, T0 + 600_000)
    s.mail("alice@sender.test")
    s.rcpt("bob@example.test")
    s.emit("data", size=1200, message_id="<m1@sender.test>")
    proxy = {"mailbox": "bob@example.test", "downstream": "lmtp:192.0.2.30:24", "downstream_stage": "data"}
    proxy["downstream_reply"] = f"250 2.0.0 <bob@example.test> {LMTP_SESSION} Saved"
    s.emit("deliver", recipient="bob@example.test", message_id="<m1@sender.test>", reason="delivered", detail=proxy)
    s.emit("accept", smtp_code=250, enhanced_code="2.0.0", message_id="<m1@sender.test>", reason="delivered")
    s.close()


@pytest.mark.parametrize("start", ["2027-01-15T08:00:00.702192Z", None], ids=["exporter_start_time", "stamp_only"])
def test_dovecot_access_in_the_second_of_our_delivery_comes_after_it_in_the_trace(
    store: Store, start: str | None
) -> None:
    delivered_by_proxy(store, "1AAAAAAAAAM0")
    ingest(store, store1_log(start=start), "store1", "/var/log/dovecot.log")

    result = search(store, SearchSpec(recipient=AddressFilter.parse("bob@example.test")), retention_days=90, now=T0)
    (trace,) = result.messages  # Dovecot's delivery and accesses are no message of their own
    assert trace.id == "1AAAAAAAAAM0" and trace.first_seen == T0 + 601_000
    order = placed(trace)
    assert (
        order.index(("gateway", "deliver")) < order.index(("dovecot", "retrieve")) < order.index(("dovecot", "delete"))
    )
    assert order[-2:] == [("dovecot", "retrieve"), ("dovecot", "delete")]  # after our accept and disconnect
    assert order.index(("dovecot", "deliver")) == order.index(("gateway", "deliver")) - 1  # it answered our LMTP
    (fate,) = trace.recipients
    assert fate.status == "deleted"
    assert [(a.kind, a.client_ip, a.protocol) for a in fate.accesses] == [
        ("retrieve", "198.51.100.20", "pop3"),
        ("delete", "198.51.100.20", "pop3"),
    ]
    steps = [step.what for step in timeline(trace)]
    assert steps.index("deliver") < steps.index("retrieve") < steps.index("delete")

    d = diagnose(store, trace, domains=DOMAINS, now=T0 + HOUR)
    assert d.status == "deleted" and "198.51.100.20" in d.summary
    retrieved_line = next(i for i, line in enumerate(d.evidence) if "mail_opened" in line)
    assert retrieved_line > next(i for i, line in enumerate(d.evidence) if " gateway deliver " in line)


def test_report_with_causally_ordered_evidence_verifies(store: Store, tmp_path: Path) -> None:
    delivered_by_proxy(store, "1AAAAAAAAAM1")
    ingest(store, store1_log(start=None), "store1", "/var/log/dovecot.log")
    built = report.build(store, "1AAAAAAAAAM1", domains=DOMAINS, now=T0 + HOUR)
    path = tmp_path / "report.txt"
    path.write_bytes(report.render(built, "text"))
    assert "expunge:" in built.diagnosis.evidence[-1]  # stamped before our delivery, placed after it
    assert report.verify(store, path).ok


POSTFIX_MX1_LOG = """\
Jan 15 07:59:59 mx1 postfix/smtpd[4101]: connect from mail.sender.test[192.0.2.10]
Jan 15 07:59:59 mx1 postfix/smtpd[4101]: 3F1A22066C: client=mail.sender.test[192.0.2.10]
Jan 15 07:59:59 mx1 postfix/cleanup[4102]: 3F1A22066C: message-id={msgid}
Jan 15 07:59:59 mx1 postfix/qmgr[4103]: 3F1A22066C: from=<alice@sender.test>, size=3100, nrcpt=1 (queue active)
Jan 15 07:59:59 mx1 postfix/smtpd[4101]: disconnect from mail.sender.test[192.0.2.10] ehlo=1 mail=1 rcpt=1 data=1 quit=1 commands=5
Jan 15 08:00:00 mx1 postfix/lmtp[4104]: 3F1A22066C: to=<{rcpt}>, relay=store1.example.test[192.0.2.30]:24, delay=0.4, delays=0.1/0/0.1/0.2, dsn=2.0.0, status=sent (250 2.0.0 <{rcpt}> {session} Saved)
Jan 15 08:00:00 mx1 postfix/qmgr[4103]: 3F1A22066C: removed
"""


def mx1_log(msgid: str = "<m1@sender.test>", rcpt: str = "bob@example.test", session: str = LMTP_SESSION) -> list[str]:
    return POSTFIX_MX1_LOG.format(msgid=msgid, rcpt=rcpt, session=session).splitlines()


def one_message(store: Store, spec: SearchSpec) -> MessageTrace:
    (trace,) = search(store, spec, retention_days=3650, now=T0).messages
    return trace


def test_postfix_on_mx1_and_dovecot_on_store1_imported_apart_are_one_message(store: Store) -> None:
    ingest(store, mx1_log(), "mx1", "/var/log/mail.log")
    ingest(store, store1_log(), "store1", "/var/log/dovecot.log")
    for spec in (
        SearchSpec(recipient=AddressFilter.parse("bob@example.test")),
        SearchSpec(message_id="<m1@sender.test>"),
        SearchSpec(queue_id="3F1A22066C"),
    ):
        trace = one_message(store, spec)
        assert (trace.queue_id, trace.node, trace.client_ip) == ("3F1A22066C", "mx1", "192.0.2.10")
        assert ("dovecot", "deliver") in placed(trace)
        assert trace.recipients[0].status == "deleted"
    saved = store.query_events(EventQuery(node="store1", kinds=("deliver",)))[0]
    postfix = store.query_events(EventQuery(node="mx1", queue_id="3F1A22066C"))[0]
    assert key_of_id(store, f"E{saved.id}") == postfix.message_key  # explain of Dovecot's delivery: the Postfix message


def test_one_import_of_both_hosts_logs_gives_one_message(store: Store) -> None:
    from mailwarden.ingest.pipeline import Ingester

    events: list[Event] = []
    ingester = Ingester(events.append, default_node="store1")
    postfix = ingester.stream("/var/log/mail.log", T0)
    dovecot = ingester.stream("/var/log/dovecot.log", T0, default_node="store1")
    for stream, lines in ((postfix, mx1_log()), (dovecot, store1_log())):
        for offset, line in enumerate(lines):
            ingester.feed(stream, line, offset * 200)
    ingester.finish()
    saved = next(e for e in events if e.source == "dovecot" and e.kind == "deliver")
    assert (saved.node, saved.queue_id) == ("store1", "3F1A22066C")  # the ingest run's own join
    store.append_many(events)
    store.flush()
    trace = one_message(store, SearchSpec(recipient=AddressFilter.parse("bob@example.test")))
    assert trace.queue_id == "3F1A22066C" and ("dovecot", "deliver") in placed(trace)


def test_the_lmtp_session_joins_dovecot_under_another_name_and_keeps_another_copy_apart(store: Store) -> None:
    # Postfix delivers to the alias info@, Dovecot stores it for bob: only the session says it is the same.
    ingest(store, mx1_log(rcpt="info@example.test"), "mx1", "/var/log/mail.log")
    ingest(store, store1_log(), "store1", "/var/log/dovecot.log")
    # The same Message-ID once more, to bob, in another LMTP session (a resent copy an hour later).
    later = [line.replace("08:00:00", "09:00:00") for line in store1_log(session="Zm9vYmFyYmF6cXV4cXV1eA", uid=7)]
    ingest(store, later, "store1", "/var/log/dovecot.log.1")
    trace = one_message(store, SearchSpec(queue_id="3F1A22066C"))
    theirs = [e for e in trace.events if e.source == "dovecot"]
    assert {e.session for e in theirs if e.kind == "deliver"} == {LMTP_SESSION}
    assert all(e.ts < T0 + HOUR for e in theirs)
    assert {f.address: f.status for f in trace.recipients} == {
        "info@example.test": "delivered",
        "bob@example.test": "deleted",
    }


def test_a_long_message_id_cut_by_dovecot_still_joins(store: Store) -> None:
    long_id = "<" + "x" * 90 + "@sender.test>"
    ingest(store, mx1_log(msgid=long_id), "mx1", "/var/log/mail.log")
    ingest(store, store1_log(msgid=long_id[:77] + "..."), "store1", "/var/log/dovecot.log")
    for spec in (SearchSpec(queue_id="3F1A22066C"), SearchSpec(recipient=AddressFilter.parse("bob@example.test"))):
        trace = one_message(store, spec)
        assert trace.message_id == long_id and trace.recipients[0].status == "deleted"
