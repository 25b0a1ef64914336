"""Work handed between the event loop and the threads that wait for the disk (group commit).

The Maildir delivery threads and the event store's writer share two moves: a thread takes
whatever queued up while it was busy (so concurrent messages share their fsyncs), and answers
the sessions waiting on the event loop. Both are here once. Thread switches are what this
costs most (measured under smtp-source: about 24 per message), so both wake a thread only
when it has something to do.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable, Iterable
from typing import Any, Final, Generic, TypeVar

Item = TypeVar("Item")


IDLE_AFTER: Final = 1.0  # seconds without items after which a lingering worker sleeps until woken


class Inbox(Generic[Item]):
    """A queue for worker threads that wakes them only when there is a reason to (group commit).

    A worker takes what has queued up, at most `limit` items at once. An `urgent` item (someone
    waits for it) wakes a worker at once. Other items never wake one while it is busy: with
    `linger`, a worker looks for them every `linger` seconds and takes them once the first has
    waited that long - many events, one commit, and no thread switch per event. A worker idle
    for `IDLE_AFTER` seconds sleeps until the next item of any kind. An item that `ends_batch`
    is the last of its batch, which is then taken without lingering.
    """

    def __init__(self, limit: int, linger: float = 0.0, ends_batch: Callable[[Item], bool] | None = None) -> None:
        self._limit = limit
        self._linger = linger
        self._ends_batch = ends_batch
        self._items: list[Item] = []
        self._first_at = 0.0  # when the oldest waiting item came
        self._urgent = False
        self._asleep = False
        self._closed = False
        self._ready = threading.Condition(threading.Lock())

    def put(self, item: Item, *, urgent: bool = False) -> None:
        with self._ready:
            if not self._items:
                self._first_at = time.monotonic()
            self._items.append(item)
            self._urgent = self._urgent or urgent or (self._ends_batch is not None and self._ends_batch(item))
            if urgent or self._asleep:
                self._asleep = False
                self._ready.notify()

    def backlog(self) -> tuple[int, float | None]:
        """Items waiting, and when the oldest of them came (monotonic; None with none)."""
        with self._ready:
            return len(self._items), self._first_at if self._items else None

    def close(self) -> None:
        """No more items: workers take what is left, then get an empty batch."""
        with self._ready:
            self._closed = True
            self._ready.notify_all()

    def take(self) -> list[Item]:
        """The next batch (waiting for one); empty once the inbox is closed and drained."""
        with self._ready:
            empty_since = time.monotonic()
            while not self._items and not self._closed:
                if self._linger > 0 and time.monotonic() - empty_since < IDLE_AFTER:
                    self._ready.wait(self._linger)
                else:
                    self._asleep = True
                    self._ready.wait()
            while not (self._urgent or self._closed or len(self._items) >= self._limit):
                remaining = self._first_at + self._linger - time.monotonic()
                if remaining <= 0:
                    break
                self._ready.wait(remaining)
            size = min(len(self._items), self._limit)
            if self._ends_batch is not None:
                size = next((n + 1 for n in range(size) if self._ends_batch(self._items[n])), size)
            batch = self._items[:size]
            del self._items[:size]
            self._urgent = bool(self._items)  # what is left has waited long enough
            self._first_at = time.monotonic()
            return batch


def settle_soon(
    loop: asyncio.AbstractEventLoop, outcomes: Iterable[tuple[asyncio.Future[Any], BaseException | None, Any]]
) -> None:
    """From another thread: resolve futures of `loop` - (future, error, result) each - in one wake-up of the loop.

    A future already done (its waiter went away) is left alone, and so is a closed loop.
    """
    pending = list(outcomes)

    def settle() -> None:
        for future, error, result in pending:
            if future.done():
                continue
            if error is None:
                future.set_result(result)
            else:
                future.set_exception(error)

    try:
        loop.call_soon_threadsafe(settle)
    except RuntimeError:  # the loop is closed: nobody waits any more
        pass
