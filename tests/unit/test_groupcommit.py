"""The hand-off between the event loop and the disk threads: batches, urgency, stopping, answers.

A worker must get everything queued (nothing lost, in order), at once when someone waits
(urgent), and must stop only after the inbox is drained.
"""

from __future__ import annotations

import asyncio
import threading
import time

import pytest

from mailwarden.groupcommit import Inbox, settle_soon


def test_a_worker_takes_what_queued_up_in_order_and_at_most_the_limit() -> None:
    inbox: Inbox[int] = Inbox(limit=3)
    for n in range(5):
        inbox.put(n, urgent=True)
    assert inbox.take() == [0, 1, 2]
    assert inbox.take() == [3, 4]


def test_an_urgent_item_ends_the_lingering_of_a_batch_at_once() -> None:
    inbox: Inbox[str] = Inbox(limit=100, linger=30.0)
    inbox.put("event")
    threading.Timer(0.1, lambda: inbox.put("barrier", urgent=True)).start()
    started = time.monotonic()
    assert inbox.take() == ["event", "barrier"]
    assert time.monotonic() - started < 20  # far less than the 30 s linger


def test_plain_items_are_taken_after_the_linger_without_an_urgent_one() -> None:
    inbox: Inbox[str] = Inbox(limit=100, linger=0.05)
    inbox.put("event")
    assert inbox.take() == ["event"]


def test_a_sleeping_worker_wakes_for_a_plain_item_too() -> None:
    inbox: Inbox[str] = Inbox(limit=100, linger=0.01)
    taken: list[list[str]] = []
    worker = threading.Thread(target=lambda: taken.append(inbox.take()))
    worker.start()
    deadline = time.monotonic() + 30
    while not inbox._asleep:  # past IDLE_AFTER the worker stops looking every linger and sleeps until woken
        assert time.monotonic() < deadline, "the worker never went to sleep"
        time.sleep(0.01)
    inbox.put("late event")
    worker.join(timeout=30)
    assert taken == [["late event"]]


def test_closing_lets_workers_drain_the_inbox_then_stop() -> None:
    inbox: Inbox[int] = Inbox(limit=10, linger=30.0)
    inbox.put(1)
    inbox.put(2)
    inbox.close()
    assert inbox.take() == [1, 2]
    assert inbox.take() == []


def test_futures_are_settled_from_a_thread_and_a_done_one_is_left_alone() -> None:
    async def main() -> tuple[object, BaseException | None, bool]:
        loop = asyncio.get_running_loop()
        ok: asyncio.Future[str] = loop.create_future()
        failed: asyncio.Future[str] = loop.create_future()
        gone: asyncio.Future[str] = loop.create_future()
        gone.cancel()
        outcomes = [(ok, None, "done"), (failed, OSError("disk full"), None), (gone, None, "late")]
        threading.Thread(target=settle_soon, args=(loop, outcomes)).start()
        await asyncio.wait([ok, failed])
        return ok.result(), failed.exception(), gone.cancelled()

    result, error, cancelled = asyncio.run(main())
    assert result == "done" and isinstance(error, OSError) and cancelled


def test_settling_on_a_closed_loop_is_ignored() -> None:
    loop = asyncio.new_event_loop()
    future: asyncio.Future[None] = loop.create_future()
    loop.close()
    settle_soon(loop, [(future, None, None)])
    with pytest.raises(asyncio.InvalidStateError):
        future.result()


def test_an_item_that_ends_a_batch_is_its_last_and_is_taken_without_lingering() -> None:
    inbox: Inbox[str] = Inbox(limit=100, linger=30.0, ends_batch=lambda item: item.startswith("position"))
    for item in ("event 1", "position 1", "event 2", "position 2", "event 3"):
        inbox.put(item)
    started = time.monotonic()
    assert inbox.take() == ["event 1", "position 1"]
    assert inbox.take() == ["event 2", "position 2"]
    assert time.monotonic() - started < 20
