"""One identity per message, decided when it is written (issue 12, items 1 and 3's trace part).

Postfix reuses queue ids, Message-IDs are shared: neither may make two messages one. The lines
below are real output of the private Postfix of the test setup (tests/support/postfix.py, 3.7:
a content filter that re-injects into a second smtpd, `smtp_send_xforward_command = yes`),
moved in time and given other queue ids where a case needs it.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from mailwarden.events import Event
from mailwarden.ingest.inputs import Follower, Positions
from mailwarden.ingest.pipeline import Ingester, parse_lines
from mailwarden.messages.keys import QueueFile, mailbox_server_key, queue_files, queue_life_key
from mailwarden.store import EventQuery, Store
from mailwarden.store.sqlite import MIGRATIONS, SqliteStore
from mailwarden.store.sqlite_messages import delivered_query
from mailwarden.trace import report
from mailwarden.trace.correlate import key_of_id, load
from mailwarden.trace.model import MessageTrace
from mailwarden.trace.search import AddressFilter, SearchSpec, search
from tests.support.stores import Handles

T0 = 1_764_979_200_000_000  # 2025-12-06 00:00:00 UTC, the logs' year
HOUR = 3_600_000_000


def ingest(store: Store, lines: list[str], origin: str = "/var/log/mail.log", node: str = "mta") -> None:
    store.append_many(parse_lines(lines, node=node, origin=origin, reference_us=T0 + 2 * 86400 * 1_000_000))
    store.flush()


def found(store: Store, **spec: object) -> list[MessageTrace]:
    return search(store, SearchSpec(**spec), retention_days=3650, now=T0).messages  # type: ignore[arg-type]


def delivery(queue_id: str, at: str, sender: str, recipient: str, msgid: str, pid: int) -> list[str]:
    """One message received and delivered into a Maildir (virtual), as Postfix 3.7 logs it."""
    return f"""\
Dec 06 {at} mta postfix/smtpd[{pid}]: connect from unknown[127.0.0.1]
Dec 06 {at} mta postfix/smtpd[{pid}]: {queue_id}: client=unknown[127.0.0.1]
Dec 06 {at} mta postfix/cleanup[31289]: {queue_id}: message-id={msgid}
Dec 06 {at} mta postfix/qmgr[31220]: {queue_id}: from=<{sender}>, size=405, nrcpt=1 (queue active)
Dec 06 {at} mta postfix/smtpd[{pid}]: disconnect from unknown[127.0.0.1] ehlo=1 mail=1 rcpt=1 data=1 quit=1 commands=5
Dec 06 {at} mta postfix/virtual[31296]: {queue_id}: to=<{recipient}>, relay=virtual, delay=0.01, delays=0/0.01/0/0, dsn=2.0.0, status=sent (delivered to maildir)
Dec 06 {at} mta postfix/qmgr[31220]: {queue_id}: removed
""".splitlines()


def on_day(lines: list[str], day: int) -> list[str]:
    return [line.replace("Dec 06", f"Dec {day:02d}") for line in lines]


# ---------------------------------------------------------------------------- a reused queue id
@pytest.mark.parametrize("later", ["five_hours", "a_day"])
def test_a_reused_queue_id_is_two_messages_each_with_its_own_sender_message_id_and_evidence(
    store: Store, later: str
) -> None:
    first = delivery("32E7B20E1A7", "04:58:31", "alice@sender.test", "bob@dest.test", "<first@sender.test>", 31284)
    second = delivery("32E7B20E1A7", "09:58:31", "carol@other.test", "dave@dest.test", "<second@other.test>", 31984)
    if later == "a_day":
        second = on_day(second, 7)
    ingest(store, first + second)

    traces = found(store, queue_id="32E7B20E1A7")
    assert len(traces) == 2
    newer, older = traces
    assert (older.sender, older.message_id, [f.address for f in older.recipients]) == (
        "alice@sender.test",
        "<first@sender.test>",
        ["bob@dest.test"],
    )
    assert (newer.sender, newer.message_id, [f.address for f in newer.recipients]) == (
        "carol@other.test",
        "<second@other.test>",
        ["dave@dest.test"],
    )
    assert newer.key != older.key
    built = report.build(store, newer.id, redact=False, domains=("dest.test",), now=T0)
    evidence = "\n".join(built.diagnosis.evidence)
    assert "message-id=<second@other.test>" in evidence and "to=<dave@dest.test>" in evidence
    assert "first@sender.test" not in evidence and "bob@dest.test" not in evidence
    assert "09:58:31" in evidence and "04:58:31" not in evidence
    facts = " ".join(value for _, value in built.facts)
    assert "<carol@other.test>" in facts and "alice" not in facts and "first@" not in facts


def test_a_reused_queue_id_imported_in_two_runs_is_still_two_messages(store: Store) -> None:
    ingest(store, delivery("32E7B20E1A7", "04:58:31", "alice@sender.test", "bob@dest.test", "<a@s.test>", 1))
    ingest(
        store, delivery("32E7B20E1A7", "09:58:31", "carol@other.test", "dave@dest.test", "<b@o.test>", 2), "mail.log.0"
    )
    assert sorted(t.sender or "" for t in found(store, queue_id="32E7B20E1A7")) == [
        "alice@sender.test",
        "carol@other.test",
    ]


# ---------------------------------------------------------------------------- a content filter
# Two messages with the same Message-ID, each re-injected by the content filter under a new queue id.
FILTERED = """\
Dec 06 22:58:31 mta postfix/smtpd[31284]: connect from unknown[127.0.0.1]
Dec 06 22:58:31 mta postfix/smtpd[31284]: 32E7B20E1A7: client=unknown[127.0.0.1]
Dec 06 22:58:31 mta postfix/cleanup[31289]: 32E7B20E1A7: message-id=<same@sender.test>
Dec 06 22:58:31 mta postfix/qmgr[31220]: 32E7B20E1A7: from=<alice@sender.test>, size=405, nrcpt=1 (queue active)
Dec 06 22:58:31 mta postfix/smtpd[31284]: disconnect from unknown[127.0.0.1] ehlo=1 mail=1 rcpt=1 data=1 quit=1 commands=5
Dec 06 22:58:31 mta postfix/smtpd[31284]: connect from unknown[127.0.0.1]
Dec 06 22:58:31 mta postfix/smtpd[31284]: 4542020E225: client=unknown[127.0.0.1]
Dec 06 22:58:31 mta postfix/cleanup[31289]: 4542020E225: message-id=<same@sender.test>
Dec 06 22:58:31 mta postfix/qmgr[31220]: 4542020E225: from=<alice@sender.test>, size=405, nrcpt=1 (queue active)
Dec 06 22:58:31 mta postfix/smtpd[31284]: disconnect from unknown[127.0.0.1] ehlo=1 mail=1 rcpt=1 data=1 quit=1 commands=5
Dec 06 22:58:31 mta postfix/smtpd[31292]: connect from unknown[127.0.0.1]
Dec 06 22:58:31 mta postfix/smtpd[31292]: 4F3C520E2D3: client=unknown[127.0.0.1], orig_queue_id=32E7B20E1A7, orig_client=unknown[127.0.0.1]
Dec 06 22:58:31 mta postfix/cleanup[31289]: 4F3C520E2D3: message-id=<same@sender.test>
Dec 06 22:58:31 mta postfix/smtp[31290]: 32E7B20E1A7: to=<bob@dest.test>, relay=127.0.0.1[127.0.0.1]:58513, delay=0.14, delays=0.03/0.04/0.06/0.01, dsn=2.0.0, status=sent (250 2.0.0 Ok: queued as 4F3C520E2D3)
Dec 06 22:58:31 mta postfix/smtpd[31292]: disconnect from unknown[127.0.0.1] ehlo=1 xforward=2 mail=1 rcpt=1 data=1 quit=1 commands=7
Dec 06 22:58:31 mta postfix/qmgr[31220]: 32E7B20E1A7: removed
Dec 06 22:58:31 mta postfix/qmgr[31220]: 4F3C520E2D3: from=<alice@sender.test>, size=579, nrcpt=1 (queue active)
Dec 06 22:58:31 mta postfix/smtpd[31292]: connect from unknown[127.0.0.1]
Dec 06 22:58:31 mta postfix/smtpd[31292]: 523A420E2DE: client=unknown[127.0.0.1], orig_queue_id=4542020E225, orig_client=unknown[127.0.0.1]
Dec 06 22:58:31 mta postfix/cleanup[31289]: 523A420E2DE: message-id=<same@sender.test>
Dec 06 22:58:31 mta postfix/virtual[31296]: 4F3C520E2D3: to=<bob@dest.test>, relay=virtual, delay=0.01, delays=0/0.01/0/0, dsn=2.0.0, status=sent (delivered to maildir)
Dec 06 22:58:31 mta postfix/qmgr[31220]: 4F3C520E2D3: removed
Dec 06 22:58:31 mta postfix/qmgr[31220]: 523A420E2DE: from=<alice@sender.test>, size=579, nrcpt=1 (queue active)
Dec 06 22:58:31 mta postfix/smtp[31290]: 4542020E225: to=<bob@dest.test>, relay=127.0.0.1[127.0.0.1]:58513, delay=0.08, delays=0.02/0.04/0.01/0.01, dsn=2.0.0, status=sent (250 2.0.0 Ok: queued as 523A420E2DE)
Dec 06 22:58:31 mta postfix/qmgr[31220]: 4542020E225: removed
Dec 06 22:58:31 mta postfix/virtual[31296]: 523A420E2DE: to=<bob@dest.test>, relay=virtual, delay=0.01, delays=0.01/0/0/0, dsn=2.0.0, status=sent (delivered to maildir)
Dec 06 22:58:31 mta postfix/qmgr[31220]: 523A420E2DE: removed
""".splitlines()


def hops(trace: MessageTrace) -> list[str]:
    """The queue ids of a message's deliveries, in order."""
    return [str(e.queue_id) for e in trace.events if e.kind == "deliver"]


@pytest.mark.parametrize("xforward", [True, False], ids=["orig_queue_id", "queued_as_only"])
def test_a_message_re_injected_after_a_content_filter_is_one_message_with_two_hops(
    store: Store, xforward: bool
) -> None:
    lines = FILTERED if xforward else [line.split(", orig_queue_id=")[0] for line in FILTERED]
    ingest(store, lines)
    for queue_id, hop in (("32E7B20E1A7", "4F3C520E2D3"), ("4542020E225", "523A420E2DE")):
        for spec in ({"queue_id": queue_id}, {"queue_id": hop}):
            (trace,) = found(store, **spec)
            assert hops(trace) == [queue_id, hop]
            assert trace.queue_id == queue_id and trace.sender == "alice@sender.test"
            (bob,) = trace.recipients
            assert (bob.address, bob.status) == ("bob@dest.test", "delivered")


def test_two_messages_sharing_a_message_id_stay_two(store: Store) -> None:
    ingest(store, FILTERED)
    traces = found(store, message_id="<same@sender.test>")
    assert sorted(hops(t)[0] for t in traces) == ["32E7B20E1A7", "4542020E225"]
    assert len({t.key for t in traces}) == 2
    assert len(found(store, recipient=AddressFilter.parse("bob@dest.test"))) == 2


# ---------------------------------------------------------------------------- NOQUEUE transactions
def test_refusals_without_a_queue_id_are_one_message_per_transaction(store: Store) -> None:
    refused = "Dec 06 10:00:0{s} mx postfix/smtpd[700]: NOQUEUE: reject: RCPT from unknown[192.0.2.9]: 550 5.1.1 <{to}>: Recipient address rejected: User unknown in virtual mailbox table; from=<{sender}> to=<{to}> proto=ESMTP helo=<client.test>"
    ingest(
        store,
        [
            "Dec 06 10:00:00 mx postfix/smtpd[700]: connect from unknown[192.0.2.9]",
            refused.format(s=1, sender="spam@bulk.test", to="a@dest.test"),
            refused.format(s=1, sender="spam@bulk.test", to="b@dest.test"),
            refused.format(s=2, sender="other@bulk.test", to="c@dest.test"),
            "Dec 06 10:00:03 mx postfix/smtpd[700]: disconnect from unknown[192.0.2.9] ehlo=1 mail=2 rcpt=0/3 quit=1 commands=4/7",
        ],
    )
    traces = found(store, client="192.0.2.9")
    assert sorted(sorted(f.address for f in t.recipients) for t in traces) == [
        ["a@dest.test", "b@dest.test"],
        ["c@dest.test"],
    ]
    for trace in traces:  # the connection's own events belong to each of its messages
        assert [e.kind for e in trace.events if e.message_key is None] == ["connect", "disconnect"]


# ---------------------------------------------------------------------------- Postfix and Dovecot apart
LMTP_SESSION = "oJU8FT9sCmtKRAAAg+zDdQ"
MX1 = f"""\
Dec 06 07:59:59 mx1 postfix/smtpd[4101]: connect from mail.sender.test[192.0.2.10]
Dec 06 07:59:59 mx1 postfix/smtpd[4101]: 3F1A22066C: client=mail.sender.test[192.0.2.10]
Dec 06 07:59:59 mx1 postfix/cleanup[4102]: 3F1A22066C: message-id=<m1@sender.test>
Dec 06 07:59:59 mx1 postfix/qmgr[4103]: 3F1A22066C: from=<alice@sender.test>, size=3100, nrcpt=1 (queue active)
Dec 06 07:59:59 mx1 postfix/smtpd[4101]: disconnect from mail.sender.test[192.0.2.10] ehlo=1 mail=1 rcpt=1 data=1 quit=1 commands=5
Dec 06 08:00:00 mx1 postfix/lmtp[4104]: 3F1A22066C: to=<bob@example.test>, relay=store1.example.test[192.0.2.30]:24, delay=0.4, delays=0.1/0/0.1/0.2, dsn=2.0.0, status=sent (250 2.0.0 <bob@example.test> {LMTP_SESSION} Saved)
Dec 06 08:00:00 mx1 postfix/qmgr[4103]: 3F1A22066C: removed
""".splitlines()
STORE1 = f"""\
2025-12-06 08:00:00 lmtp(17482): Info: Connect from 192.0.2.25
2025-12-06 08:00:00 lmtp(bob@example.test)<17482><{LMTP_SESSION}>: Info: save: box=INBOX, uid=6, msgid=<m1@sender.test>, size=3193, from=, subject=x
2025-12-06 08:00:00 lmtp(bob@example.test)<17482><{LMTP_SESSION}>: Info: msgid=<m1@sender.test>: saved mail to INBOX
2025-12-06 08:00:00 lmtp(17482): Info: Disconnect from 192.0.2.25: Logged out (state=READY)
2025-12-06 08:05:00 pop3-login: Info: Login: user=<bob@example.test>, method=PLAIN, rip=198.51.100.20, lip=192.0.2.30, mpid=16547, session=<4GDrtU9h7e1/AAAF>
2025-12-06 08:05:01 pop3(bob@example.test)<16547><4GDrtU9h7e1/AAAF>: Info: expunge: box=INBOX, uid=6, msgid=<m1@sender.test>, size=3193, from=, subject=x
2025-12-06 08:05:01 pop3(bob@example.test)<16547><4GDrtU9h7e1/AAAF>: Info: Disconnected: Logged out top=0/0, retr=1/3193, del=1/1, size=3193
""".splitlines()


def story(trace: MessageTrace) -> tuple[object, ...]:
    return (
        trace.queue_id,
        trace.sender,
        sorted((e.source, e.kind, e.ts) for e in trace.events),
        [(f.address, f.status, f.reason) for f in trace.recipients],
    )


def test_postfix_and_dovecot_imported_in_separate_runs_in_either_order_are_one_message(
    store_handles: Handles,
) -> None:
    stories = []
    for order in ([(MX1, "mx1"), (STORE1, "store1")], [(STORE1, "store1"), (MX1, "mx1")]):
        store_handles.start_over()  # each order into an empty store
        db = store_handles.open(batch_interval=0.001)
        for lines, node in order:
            ingest(db, lines, node=node)
        (trace,) = found(db, recipient=AddressFilter.parse("bob@example.test"))
        assert {e.source for e in trace.events} == {"postfix", "dovecot"}
        assert trace.recipients[0].status == "deleted"
        assert [t.key for t in found(db, message_id="<m1@sender.test>")] == [trace.key]
        stories.append(story(trace))
    assert stories[0] == stories[1]


# ---------------------------------------------------------------------------- a follower restarted mid-life
def test_a_follower_restarted_in_the_middle_of_a_queue_files_life_keeps_its_key(store: Store, tmp_path: Path) -> None:
    lines = FILTERED[:4]  # 32E7B20E1A7 accepted; its delivery and removal come after the restart
    rest = [FILTERED[13], FILTERED[15]]
    path = tmp_path / "mail.log"
    path.write_text("\n".join(lines) + "\n")

    def follow() -> None:
        ingester = Ingester(store.append, default_node="mta", lives=store.queue_life)
        positions = Positions(store, ingester)
        follower = Follower(path, ingester, positions, warmup_bytes=0, max_line=65536)  # no warm-up: contexts lost
        follower.poll()
        ingester.finish()
        positions.checkpoint(follower.checkpoint_values())
        follower.close()
        store.flush()

    follow()
    (accepted,) = store.query_events(EventQuery(kinds=("accept",)))
    with path.open("a") as handle:
        handle.write("\n".join(rest) + "\n")
    follow()
    (delivered,) = store.query_events(EventQuery(kinds=("deliver",)))
    assert delivered.queue_id == accepted.queue_id == "32E7B20E1A7"
    assert delivered.message_key == accepted.message_key  # looked up in the store: the writer decides once
    (trace,) = found(store, queue_id="32E7B20E1A7")
    assert trace.sender == "alice@sender.test" and trace.recipients[0].status == "delivered"


# ---------------------------------------------------------------------------- a store from before message keys
@contextmanager
def opened(path: Path) -> Iterator[SqliteStore]:
    db = SqliteStore(path, batch_interval=0.001)
    try:
        yield db
    finally:
        db.close()


def old_store(path: Path, rows: list[dict[str, object]]) -> None:
    """A store as mailwarden wrote it before message keys: the migrations up to reading positions."""
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute("CREATE TABLE migrations (name TEXT PRIMARY KEY, applied_us INTEGER NOT NULL)")
    for name, script in MIGRATIONS[: [n for n, _ in MIGRATIONS].index("ingest_positions") + 1]:
        assert isinstance(script, str)
        conn.executescript(script)
        conn.execute("INSERT INTO migrations VALUES (?, 0)", (name,))
    for row in rows:
        conn.execute(f"INSERT INTO events ({', '.join(row)}) VALUES ({', '.join('?' * len(row))})", list(row.values()))
    conn.close()


def old(at: int, node: str, source: str, kind: str, session: str, **fields: object) -> dict[str, object]:
    return {"ts": T0 + at, "node": node, "source": source, "kind": kind, "session": session, **fields}


def test_a_store_from_before_message_keys_gets_keys_by_the_old_rules_on_start(tmp_path: Path) -> None:
    path = tmp_path / "old.db"
    q, ref = "32E7B20E1A7", "1AAAAAAAAAA0"
    ours = {"ref": ref, "client_ip": "192.0.2.1", "sender": "a@s.test", "recipient": "bob@x.test"}
    first = {"queue_id": q, "client_ip": "192.0.2.2", "sender": "a@s.test", "message_id": "<a@s>"}
    second = {"queue_id": q, "client_ip": "192.0.2.3", "sender": "b@s.test", "message_id": "<b@s>"}
    old_store(
        path,
        [
            old(0, "mx", "gateway", "connect", ref, ref=ref, client_ip="192.0.2.1"),
            old(1, "mx", "gateway", "rcpt", ref, **ours),
            old(2, "mx", "gateway", "deliver", ref, **ours, reason="delivered", message_id="<m@s>"),
            old(3, "mx", "pop3", "delete", "P1", ref=ref, recipient="bob@x.test", reason="access.deleted"),
            old(10, "pf", "postfix", "accept", "smtpd[1]@1", **first),
            old(11, "pf", "postfix", "deliver", "smtpd[1]@1", **first, recipient="c@x.test", reason="delivered"),
            old(5 * HOUR, "pf", "postfix", "accept", "smtpd[2]@2", **second),
            old(5 * HOUR + 1, "pf", "postfix", "deliver", "smtpd[2]@2", **second, recipient="d@x.test"),
            old(
                6 * HOUR,
                "pf",
                "postfix",
                "reject",
                "smtpd[3]@3",
                sender="s@b.test",
                recipient="e@x.test",
                smtp_code=550,
            ),
        ],
    )
    with opened(path) as migrated:
        events = migrated.query_events(EventQuery())
        keys = [e.message_key for e in events]
        assert keys[:4] == [None, ref, ref, ref]  # the connection's own event has none
        assert keys[4] == keys[5] == queue_life_key("pf", q, T0 + 10)
        assert keys[6] == keys[7] == queue_life_key("pf", q, T0 + 5 * HOUR)  # a second life of the queue id
        assert keys[8] is not None and keys[8] not in keys[:8]
        traces = load(migrated, [k for k in keys if k])
        assert sorted(t.sender or "" for t in traces) == ["a@s.test", "a@s.test", "b@s.test", "s@b.test"]
        assert key_of_id(migrated, ref) == ref
        (ours,) = load(migrated, [ref])
        assert ours.recipients[0].status == "deleted"
    with opened(path) as again:  # applied once
        assert [e.message_key for e in again.query_events(EventQuery())] == keys


# ---------------------------------------------------------------------------- writers stamp their keys
def test_events_written_by_the_ingester_carry_their_key_before_the_store_sees_them() -> None:
    events: list[Event] = parse_lines(FILTERED + STORE1, node="mta", reference_us=T0 + 2 * 86400 * 1_000_000)
    keyless = {(e.source, e.kind) for e in events if e.message_key is None}
    assert keyless == {("postfix", "connect"), ("postfix", "disconnect"), ("dovecot", "login"), ("dovecot", "logout")}


# ---------------------------------------------------------------------------- queue files
def test_a_messages_queue_files_are_noted_with_their_latest_event_but_not_a_mailbox_servers_queue_ids() -> None:
    """What both stores write to `message_queues`: a queue id found there leads to its message."""
    events = [
        Event("accept", "postfix", "mta", ts=T0 + 2, queue_id="4AB", message_key="Q1"),
        Event("deliver", "postfix", "mta", ts=T0 + 9, queue_id="4AB", message_key="Q1"),
        Event("accept", "postfix", "mta", ts=T0 + 5, queue_id="4AB", message_key="Q1"),
        Event("accept", "postfix", "mta", ts=T0 + 7, queue_id="7CD", message_key="Q2"),  # re-injected
        Event("deliver", "dovecot", "mta", ts=T0 + 8, queue_id="dovecot-id", message_key="L1"),
        Event("connect", "postfix", "mta", ts=T0 + 1, queue_id="4AB"),  # a connection's: no message
    ]
    assert queue_files(events) == [QueueFile("4AB", "mta", "Q1", T0 + 9), QueueFile("7CD", "mta", "Q2", T0 + 7)]


# ---------------------------------------------------------------------------- links by Message-ID
def test_a_mailbox_access_is_linked_by_its_message_id_without_walking_every_message_its_user_got(
    tmp_path: Path,
) -> None:
    """Dovecot's POP3 RETR of a copy no delivery named is linked to the latest delivery of its
    Message-ID to that user. The lookup must go by Message-ID: by the user's rows (SQLite's choice
    without statistics) it would read back every message the user ever got, per access."""
    store = SqliteStore(tmp_path / "store.db")
    delivered = [
        Event(
            "deliver",
            "gateway",
            "mx",
            T0 + number * HOUR,
            ref=f"REF{number:04d}",
            recipient="bob@example.test",
            message_id=f"<m{number}@sender.test>",
            reason="delivered",
            message_key=f"REF{number:04d}",
        )
        for number in range(300)
    ]
    access = Event(
        "retrieve",
        "dovecot",
        "store1",
        T0 + 400 * HOUR,
        session="pop3-1",
        recipient="Bob@example.test",
        message_id="<m7@sender.test>",
        detail={"uid": 7, "box": "INBOX", "action": "retr"},
    )
    access.message_key = mailbox_server_key(access)
    store.append_many([*delivered, access])
    store.flush()
    store.close()
    with sqlite3.connect(tmp_path / "store.db") as conn:
        roots = conn.execute("SELECT root FROM message_roots WHERE key = ?", (access.message_key,)).fetchall()
        sql, params = delivered_query(access)
        plan = " ".join(str(row[3]) for row in conn.execute(f"EXPLAIN QUERY PLAN {sql}", params))
    assert roots == [("REF0007",)]
    assert "message_index_message_id" in plan, plan
