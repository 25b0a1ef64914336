"""No crash hides a delivery: what was about to be linked is journaled first, and a start records
every journaled copy found in a mailbox without its event as `delivered.unconfirmed`."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable, Sequence
from pathlib import Path

import pytest

from mailwarden.deliver.journal import JOURNAL_DIR, UNCONFIRMED, Journal, journaled, reconcile
from mailwarden.deliver.maildir import Delivered, Maildirs, Message, Sink, Target
from mailwarden.deliver.writer import DeliveryThreads
from mailwarden.events import Event
from mailwarden.store import EventQuery, StoreError
from mailwarden.store.parts import Store
from mailwarden.store.sqlite import SqliteStore

MESSAGE = b"Subject: hi\r\n\r\nhello\r\n"
BOB, CAROL = "bob@example.test", "carol@example.test"


def write(sink: Sink) -> None:
    sink.write(MESSAGE)


def deliver_event(copy: Delivered, ref: str) -> Event:
    detail = {"mailbox": copy.mailbox, "folder": copy.folder, "uid": copy.uid}
    return Event(
        kind="deliver",
        source="gateway",
        node="mx1",
        ref=ref,
        sender="alice@sender.test",
        recipient=copy.mailbox,
        reason="delivered",
        detail=detail,
        size=len(MESSAGE),
    )


def delivered(maildirs: Maildirs, ref: str, targets: Sequence[Target]) -> list[Event]:
    """Deliver a message for real and return its (uncommitted) deliver events."""
    copies = maildirs.plan(targets, len(MESSAGE))
    maildirs.deliver_many([Message(targets, write, copies[0].uid)])
    return [deliver_event(copy, ref) for copy in copies]


def recorded(store: Store, ref: str) -> list[Event]:
    return store.query_events(EventQuery(ref=ref, kinds=("deliver",)))


def test_a_copy_linked_when_its_commit_never_came_is_recorded_as_delivered_unconfirmed(
    tmp_path: Path, store: Store
) -> None:
    maildirs = Maildirs(tmp_path / "mail")
    journal = maildirs.root / JOURNAL_DIR
    reached = threading.Event()

    def commit_that_never_answers(events: Sequence[Event], done: Callable[[Exception | None], None]) -> None:
        reached.set()  # the process dies here: linked, fsynced, the events never committed

    threads = DeliveryThreads(maildirs, commit_that_never_answers, journal, threads=1)
    copies = maildirs.plan([Target(BOB), Target(CAROL, "Junk")], len(MESSAGE))

    async def crash() -> None:
        waiting = asyncio.ensure_future(threads.deliver(copies, write, [deliver_event(c, "R1") for c in copies]))
        await asyncio.to_thread(reached.wait, 30)
        waiting.cancel()

    asyncio.run(crash())
    threads.close()
    result = reconcile(maildirs, store, journal)
    events = recorded(store, "R1")
    assert (result.journaled, len(result.recorded)) == (2, 2)
    assert sorted((e.recipient, e.detail["folder"], e.reason) for e in events) == [
        (BOB, "INBOX", UNCONFIRMED),
        (CAROL, "Junk", UNCONFIRMED),
    ]
    assert all(e.detail["uid"] == copies[0].uid and e.detail["unconfirmed"] is True for e in events)
    assert all(e.sender == "alice@sender.test" and e.detail["recorded_at"] for e in events)
    assert journaled(journal) == []  # emptied once they are committed
    assert reconcile(maildirs, store, journal).recorded == []  # a second start records nothing twice


def test_only_copies_in_a_mailbox_without_their_event_are_recorded(tmp_path: Path, store: Store) -> None:
    maildirs = Maildirs(tmp_path / "mail")
    committed = delivered(maildirs, "R1", [Target(BOB)])
    store.append_many(committed)
    store.flush()
    never_linked = [deliver_event(copy, "R2") for copy in maildirs.plan([Target(BOB)], len(MESSAGE))]
    moved_on = delivered(maildirs, "R3", [Target(BOB), Target(CAROL)])
    maildirs.messages(CAROL)  # a reader moved carol's copy from new/ to cur/
    taken_back = delivered(maildirs, "R4", [Target(BOB)])
    (maildirs.folder_dir(BOB) / "new" / str(taken_back[0].detail["uid"])).unlink()  # its commit failed
    journal = Journal(maildirs.root / JOURNAL_DIR, "delivery-0")
    journal.intend(committed + never_linked + moved_on + taken_back)
    journal.close()
    result = reconcile(maildirs, store, maildirs.root / JOURNAL_DIR)
    assert sorted((e.ref, e.recipient) for e in result.recorded) == [("R3", BOB), ("R3", CAROL)]
    assert [e.reason for e in recorded(store, "R1")] == ["delivered"]
    assert recorded(store, "R2") == [] and recorded(store, "R4") == []


def planned(maildirs: Maildirs, ref: str) -> list[Event]:
    return [deliver_event(copy, ref) for copy in maildirs.plan([Target(BOB)], len(MESSAGE))]


def test_a_record_torn_by_a_power_cut_leaves_the_one_written_before_it(tmp_path: Path) -> None:
    maildirs = Maildirs(tmp_path / "mail")
    directory = maildirs.root / JOURNAL_DIR
    journal = Journal(directory, "delivery-0")
    journal.intend(planned(maildirs, "R1"))  # into delivery-0.a
    journal.intend(planned(maildirs, "R2"))  # into delivery-0.b: R1 and R2
    journal.close()
    torn = directory / "delivery-0.b"
    torn.write_bytes(torn.read_bytes()[:-10])
    assert [e.ref for e in journaled(directory)] == ["R1"]  # R2's group was never linked; R1's may have been


def test_a_settled_delivery_drops_out_of_the_next_records(tmp_path: Path) -> None:
    maildirs = Maildirs(tmp_path / "mail")
    directory = maildirs.root / JOURNAL_DIR
    first, second = planned(maildirs, "R1"), planned(maildirs, "R2")
    journal = Journal(directory, "delivery-0")
    journal.intend(first)
    journal.settle(str(first[0].detail["uid"]))  # its events are committed
    journal.intend(second)
    assert sorted(str(e.ref) for e in journaled(directory)) == ["R1", "R2"]  # the older file still names R1
    journal.intend([])
    journal.close()
    assert [e.ref for e in journaled(directory)] == ["R2"]


def test_when_the_store_cannot_take_the_records_the_journal_is_kept_for_the_next_start(tmp_path: Path) -> None:
    class Unwritable(SqliteStore):
        def flush(self) -> None:
            raise StoreError("disk full")

    maildirs = Maildirs(tmp_path / "mail")
    journal = Journal(maildirs.root / JOURNAL_DIR, "delivery-0")
    journal.intend(delivered(maildirs, "R1", [Target(BOB)]))
    journal.close()
    store = Unwritable(tmp_path / "events.db")
    try:
        with pytest.raises(StoreError, match="disk full"):
            reconcile(maildirs, store, maildirs.root / JOURNAL_DIR)
    finally:
        store.close()
    assert [e.ref for e in journaled(maildirs.root / JOURNAL_DIR)] == ["R1"]
