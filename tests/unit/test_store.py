"""The SQLite store: named migrations, several processes opening it at once, the batching writer.

"250 means on disk" includes the evidence: what `durable()` waited for must be committed (a
killed process keeps it), and a failed write must not lose queued events nor claim the
transaction's own events were stored. Migrations, file-level faults and the writer's retries are
SQLite's own; what another reader sees and mailbox lookups run on both stores (`open_node`).
"""

from __future__ import annotations

import asyncio
import sqlite3
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from mailwarden.events import Event
from mailwarden.store import EventQuery, StoreError
from mailwarden.store import sqlite as sqlite_store
from mailwarden.store.base import BatchWriter, Position, committed
from mailwarden.store.sqlite import MIGRATIONS, SqliteStore
from tests.support.stores import Handles, Opener, run_sql

ROOT = Path(__file__).resolve().parents[2]


def event(kind: str = "connect", ref: str = "R1", **fields: object) -> Event:
    return Event(kind=kind, source="gateway", node="mx1", ref=ref, **fields)  # type: ignore[arg-type]


def applied(path: Path) -> list[tuple[str, int]]:
    with sqlite3.connect(path) as conn:
        return conn.execute("SELECT name, applied_us FROM migrations ORDER BY name").fetchall()


# ---------------------------------------------------------------------------- migrations
def test_a_new_store_has_every_named_migration_once(tmp_path: Path) -> None:
    SqliteStore(tmp_path / "s.db").close()
    assert [name for name, _ in applied(tmp_path / "s.db")] == sorted(name for name, _ in MIGRATIONS)


def test_reopening_applies_nothing_again(tmp_path: Path) -> None:
    SqliteStore(tmp_path / "s.db").close()
    first = applied(tmp_path / "s.db")
    SqliteStore(tmp_path / "s.db").close()
    assert applied(tmp_path / "s.db") == first


def test_an_appended_migration_is_applied_once_and_may_hold_semicolons_in_strings_and_triggers(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    SqliteStore(tmp_path / "s.db").close()
    extra = (
        "9999_test_notes",
        """
        CREATE TABLE notes (body TEXT NOT NULL DEFAULT 'a;b');
        CREATE TRIGGER notes_stamp AFTER INSERT ON notes BEGIN UPDATE notes SET body = body || ';'; END;
        """,
    )
    monkeypatch.setattr(sqlite_store, "MIGRATIONS", [*MIGRATIONS, extra])
    SqliteStore(tmp_path / "s.db").close()
    SqliteStore(tmp_path / "s.db").close()
    names = [name for name, _ in applied(tmp_path / "s.db")]
    assert names.count("9999_test_notes") == 1
    with sqlite3.connect(tmp_path / "s.db") as conn:
        conn.execute("INSERT INTO notes DEFAULT VALUES")
        assert conn.execute("SELECT body FROM notes").fetchone() == ("a;b;",)


def test_a_failing_migration_leaves_no_trace_and_says_so(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    SqliteStore(tmp_path / "s.db").close()
    broken = ("9998_broken", "CREATE TABLE half (x INTEGER); INSERT INTO no_such_table VALUES (1);")
    monkeypatch.setattr(sqlite_store, "MIGRATIONS", [*MIGRATIONS, broken])
    with pytest.raises(StoreError, match="no_such_table"):
        SqliteStore(tmp_path / "s.db")
    with sqlite3.connect(tmp_path / "s.db") as conn:
        assert conn.execute("SELECT 1 FROM sqlite_master WHERE name = 'half'").fetchone() is None
    assert "9998_broken" not in [name for name, _ in applied(tmp_path / "s.db")]


def test_a_store_migrated_by_a_newer_version_is_refused(open_node: Opener, store_url: str) -> None:
    open_node()
    run_sql(store_url, "INSERT INTO migrations VALUES ('9999_from_the_future', 0)")
    with pytest.raises(StoreError, match=r"migrated by a newer mailwarden.*9999_from_the_future"):
        open_node()


def test_several_processes_opening_a_new_store_at_once_all_succeed(tmp_path: Path) -> None:
    path = tmp_path / "shared.db"
    start_at = time.time() + 2.0  # all processes start opening at the same moment
    script = textwrap.dedent(
        f"""
        import sys, time
        from pathlib import Path
        from mailwarden.store.sqlite import SqliteStore
        while time.time() < {start_at}:
            time.sleep(0.001)
        store = SqliteStore(Path({str(path)!r}))
        store.add_mailbox(f"user{{sys.argv[1]}}@example.test", "hash")
        store.close()
        """
    )
    processes = [
        subprocess.Popen([sys.executable, "-c", script, str(n)], cwd=ROOT, stderr=subprocess.PIPE) for n in range(8)
    ]
    errors = [p.communicate(timeout=120)[1].decode() for p in processes]
    assert [p.returncode for p in processes] == [0] * 8, errors
    assert [name for name, _ in applied(path)] == sorted(name for name, _ in MIGRATIONS)
    store = SqliteStore(path)
    assert len(store.list_mailboxes()) == 8
    store.close()


# ---------------------------------------------------------------------------- the writer
def test_durable_events_are_visible_to_another_reader_in_order(open_node: Opener) -> None:
    store = open_node()
    store.append(event("connect"))
    store.append(event("helo"))

    async def finish() -> None:
        await store.durable([event("deliver", recipient="bob@example.test"), event("accept")])

    asyncio.run(finish())
    reader = open_node()
    assert [e.kind for e in reader.query_events(EventQuery(ref="R1"))] == ["connect", "helo", "deliver", "accept"]


UNSTORABLE = {  # what a database refuses to hold as it is, and what it holds instead
    "a number beyond 64 bits": ({"size": 1 << 70}, "size", None),
    "text that is no UTF-8": ({"sender": "a\udcff@sender.test"}, "sender", "a\ufffd@sender.test"),
    "text that is no UTF-8 in the detail": ({"detail": {"subject": "\udcff"}}, "detail", {"subject": "\ufffd"}),
}


@pytest.mark.parametrize("unstorable", sorted(UNSTORABLE))
def test_an_event_the_database_refuses_as_written_is_stored_changed_instead_of_holding_back_every_later_event(
    open_node: Opener, unstorable: str
) -> None:
    """The writer keeps a failed batch for a retry: an event no retry can store stopped all evidence after it."""
    fields, name, stored_as = UNSTORABLE[unstorable]
    store = open_node()
    store.append(event("mail", ref="unstorable", **fields))
    store.flush()
    asyncio.run(committed(store.commit_soon, [event("accept", ref="later")]))
    found = {e.ref: e for e in open_node().query_events(EventQuery(refs=["unstorable", "later"]))}
    assert set(found) == {"unstorable", "later"}
    changed = found["unstorable"]
    assert changed.detail["changed_to_be_stored"] == [name]
    shown = {key: value for key, value in changed.detail.items() if key != "changed_to_be_stored"}
    assert (shown if name == "detail" else getattr(changed, name)) == stored_as


def test_a_bulk_import_stores_events_the_database_refuses_as_written_changed_instead_of_failing_at_that_batch_for_ever(
    open_node: Opener,
) -> None:
    """An import that failed on such an event failed again at the same batch however often it was run."""
    store = open_node()
    store.append_bulk(
        [
            event("connect", ref=None, session="S1", client_name="a\udcff.sender.test"),  # a connection's own: a row
            event("mail", ref="R1", session="S1", message_key="R1", size=1 << 70),  # keyed: fields and row
            event("reject", ref="R2", session="S1", sender="b\udcff@sender.test"),  # keyed by the writer
            event("disconnect", ref=None, session="S1"),
        ],
        [Position("mail.log", "4")],
    )
    store.flush()
    stored = open_node().query_events(EventQuery(session="S1"))
    assert [e.kind for e in stored] == ["connect", "mail", "reject", "disconnect"]
    assert [(e.client_name, e.size, e.sender) for e in stored[:3]] == [
        ("a\ufffd.sender.test", None, None),
        (None, None, None),
        (None, None, "b\ufffd@sender.test"),
    ]
    assert [e.detail.get("changed_to_be_stored") for e in stored] == [["client_name"], ["size"], ["sender"], None]
    assert open_node().load_position("mail.log") == "4"


def test_a_bulk_batch_handed_over_in_parts_is_committed_only_with_its_end_and_an_unstorable_event_in_any_part_is_changed(
    tmp_path: Path,
) -> None:
    """SQLite's writer process writes a batch's parts as they come, in one transaction: a failure in
    the last part rolls back the earlier ones too, and all of them are written again."""
    store = SqliteStore(tmp_path / "s.db")
    reader = SqliteStore(tmp_path / "s.db")
    try:
        assert store.append_bulk_part([event("mail", ref="R1", session="S1", message_key="R1", size=1 << 70)])
        store.flush()
        assert reader.query_events(EventQuery(session="S1")) == []  # a part alone is not committed
        store.append_bulk([event("reject", ref="R2", session="S1", sender="b\udcff@sender.test")], [Position("f", "2")])
        store.flush()
        stored = reader.query_events(EventQuery(session="S1"))
        assert [(e.kind, e.size, e.sender, e.detail.get("changed_to_be_stored")) for e in stored] == [
            ("mail", None, None, ["size"]),
            ("reject", None, "b\ufffd@sender.test", ["sender"]),
        ]
        assert reader.load_position("f") == "2"
    finally:
        store.close()
        reader.close()


def test_parts_of_a_bulk_batch_whose_end_never_came_are_not_stored(tmp_path: Path) -> None:
    store = SqliteStore(tmp_path / "s.db")
    store.append_bulk([event(ref="R1", session="S1")], [Position("f", "1")])
    assert store.append_bulk_part([event(ref="R2", session="S1")])
    store.close()  # the import stopped before the batch's end: its writer rolls the part back
    reopened = SqliteStore(tmp_path / "s.db")
    try:
        assert [e.ref for e in reopened.query_events(EventQuery(session="S1"))] == ["R1"]
        assert reopened.load_position("f") == "1"
    finally:
        reopened.close()


def test_a_nul_character_is_stored_where_the_database_holds_it_and_replaced_where_it_does_not(
    store_handles: Handles, open_node: Opener
) -> None:
    """SQLite's text holds NUL; PostgreSQL's does not, and refused the batch at every retry."""
    store = open_node()
    store.append(event("helo", ref="nul", helo="mx\x00.sender.test"))
    store.flush()
    (stored,) = open_node().query_events(EventQuery(ref="nul"))
    if store_handles.backend == "sqlite":
        assert (stored.helo, stored.detail) == ("mx\x00.sender.test", {})
    else:
        assert (stored.helo, stored.detail) == ("mx\ufffd.sender.test", {"changed_to_be_stored": ["helo"]})


def test_events_committed_by_durable_survive_a_killed_process(tmp_path: Path) -> None:
    path = tmp_path / "s.db"
    script = textwrap.dedent(
        f"""
        import asyncio, os, signal
        from pathlib import Path
        from mailwarden.events import Event
        from mailwarden.store.sqlite import SqliteStore
        store = SqliteStore(Path({str(path)!r}), batch_interval=5)
        for n in range(500):
            store.append(Event(kind="rcpt", source="gateway", node="mx1", ref=f"R{{n}}"))
        asyncio.run(store.durable([Event(kind="accept", source="gateway", node="mx1", ref="LAST")]))
        print("durable", flush=True)
        os.kill(os.getpid(), signal.SIGKILL)
        """
    )
    done = subprocess.run([sys.executable, "-c", script], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert done.stdout == "durable\n", done.stderr
    store = SqliteStore(path)
    assert len(store.query_events(EventQuery(kinds=["rcpt"]))) == 500
    assert [e.ref for e in store.query_events(EventQuery(kinds=["accept"]))] == ["LAST"]
    store.close()


class FlakyDisk:
    """A write function that fails its first `failures` calls, and remembers what it wrote."""

    def __init__(self, failures: int) -> None:
        self.failures = failures
        self.written: list[str] = []

    def __call__(self, events: list[Event], positions: list[Position]) -> None:
        if self.failures:
            self.failures -= 1
            raise sqlite3.OperationalError("disk I/O error")
        self.written.extend(str(e.ref) for e in events)


def test_a_failed_write_keeps_queued_events_for_a_retry_but_not_the_transactions_own() -> None:
    disk = FlakyDisk(failures=1)
    writer = BatchWriter(disk, interval=0.01, name="test-writer")
    writer.put(event(ref="queued-1"))

    async def deliver() -> None:
        await committed(writer.commit_soon, [event("accept", ref="withdrawn")])

    with pytest.raises(StoreError, match="disk I/O error"):
        asyncio.run(deliver())
    writer.put(event(ref="queued-2"))
    asyncio.run(committed(writer.commit_soon, [event("accept", ref="accepted")]))
    writer.close()
    assert disk.written == ["queued-1", "queued-2", "accepted"]


def test_no_queued_event_is_dropped_however_long_the_store_stays_unwritable() -> None:
    """The writer once kept only the newest 200,000 events for a retry and dropped the rest."""
    disk = FlakyDisk(failures=1_000_000)  # unwritable until it is repaired below
    writer = BatchWriter(disk, interval=0.01, name="test-writer")
    writer.put_many(event(ref=f"q{number}") for number in range(200_005))
    with pytest.raises(StoreError, match="disk I/O error"):
        writer.flush()  # its batch comes after every event: all of them wait for a retry now
    disk.failures = 0
    writer.flush()
    writer.close()
    assert len(disk.written) == 200_005 and disk.written[0] == "q0" and disk.written[-1] == "q200004"


class Disk:
    """A write function that remembers each transaction: its events' refs and its positions' names."""

    def __init__(self, failures: int = 0) -> None:
        self.failures = failures
        self.transactions: list[tuple[list[str], list[str]]] = []

    def __call__(self, events: list[Event], positions: list[Position]) -> None:
        if self.failures:
            self.failures -= 1
            raise sqlite3.OperationalError("disk I/O error")
        self.transactions.append(([str(e.ref) for e in events], [p.name for p in positions]))


def test_a_position_ends_its_transaction_so_no_later_line_is_committed_with_it() -> None:
    """A restart resumes at the position: an event read after it, committed with it, would be stored twice."""
    disk = Disk()
    writer = BatchWriter(disk, interval=1.0, name="test-writer")  # long enough to gather everything below
    writer.put_many([event(ref="e1"), event(ref="e2")])
    writer.put_position(Position("p", "2"))
    writer.put_many([event(ref="e3"), event(ref="e4")])
    writer.close()
    (with_position,) = [refs for refs, names in disk.transactions if names == ["p"]]
    assert "e3" not in with_position and "e4" not in with_position
    assert [ref for refs, _ in disk.transactions for ref in refs] == ["e1", "e2", "e3", "e4"]


def test_bulk_batches_commit_with_their_positions_and_a_failed_one_is_retried_without_blocking_the_next() -> None:
    disk = Disk(failures=1)
    writer = BatchWriter(disk, interval=0.01, name="test-writer")
    for n in range(BatchWriter.BULK_QUEUED + 2):  # more than may wait: each commit, failed or not, makes room
        writer.put_bulk([event(ref=f"b{n}-1"), event(ref=f"b{n}-2")], [Position("file", str(n))])
    writer.close()
    assert [ref for refs, _ in disk.transactions for ref in refs] == [
        f"b{n}-{i}" for n in range(BatchWriter.BULK_QUEUED + 2) for i in (1, 2)
    ]
    assert all(names == ["file"] for _, names in disk.transactions)


def test_a_bulk_import_stores_every_event_in_its_order_also_those_that_cross_as_finished_rows(tmp_path: Path) -> None:
    """The writer process gets a connection's own events as rows, keyed events as events with their
    rows, and events it keys itself as events only: all keep their place (their ids follow the
    batch's order) and every field."""
    store = SqliteStore(tmp_path / "s.db")
    base = 1_700_000_000_000_000
    batch = [
        Event("connect", "postfix", "mx", ts=base, session="s1", client_ip="192.0.2.1", detail={"port": 25}),
        Event(
            "reject",
            "postfix",
            "mx",
            ts=base,
            session="s1",
            recipient="a@example.test",
            smtp_code=550,
            message_key="K1",
            detail={"stage": "rcpt"},
        ),
        Event("check", "postfix", "mx", ts=base, session="s1", detail={"check": "dnsbl"}),  # keyed by the writer
        Event("disconnect", "postfix", "mx", ts=base, session="s1"),
        Event("login", "dovecot", "mx", ts=base + 1, session="d1", recipient="a@example.test"),
    ]
    try:
        store.append_bulk([event.replace() for event in batch], [Position("file", "1")])
        store.flush()
        stored = store.query_events(EventQuery())
    finally:
        store.close()
    assert [e.id for e in stored] == sorted(e.id for e in stored)
    assert [(e.kind, e.detail, e.message_key is not None) for e in stored] == [
        (e.kind, e.detail, e.kind in ("reject", "check")) for e in batch
    ]
    assert [e.replace(id=None, message_key=None) for e in stored] == [e.replace(message_key=None) for e in batch]


def test_a_store_path_that_cannot_be_opened_is_a_clear_error(tmp_path: Path) -> None:
    (tmp_path / "plain-file").write_text("x")
    with pytest.raises(StoreError, match="cannot open the SQLite store"):
        SqliteStore(tmp_path / "plain-file" / "s.db")


# ---------------------------------------------------------------------------- mailbox lookups
def test_a_new_mailbox_is_found_at_once_and_a_removed_one_soon(open_node: Opener) -> None:
    daemon = open_node()
    cli = open_node()  # `mailwarden users` in another process

    def find(address: str) -> object:
        return asyncio.run(daemon.find_mailbox(address))

    assert find("bob@example.test") is None
    cli.add_mailbox("bob@example.test", "hash")
    assert find("bob@example.test") is not None  # a miss is never remembered
    cli.remove_mailbox("bob@example.test")
    deadline = time.monotonic() + 5
    while find("bob@example.test") is not None:
        assert time.monotonic() < deadline, "a removed mailbox is still found"
        time.sleep(0.05)
    daemon.add_mailbox("carol@example.test", "hash")
    assert find("carol@example.test") is not None
    daemon.remove_mailbox("carol@example.test")
    assert find("carol@example.test") is None  # a change through the same store counts at once
