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
from collections.abc import Iterable
from typing import Any, Generic, TypeVar

Item = TypeVar("Item")


class Inbox(Generic[Item]):
    """A queue for worker threads that wakes them only when there is a reason to (group commit).

    A worker takes what has queued up, at most `limit` items at once. An `urgent` item (someone
    waits for it) wakes a worker at once; another one only when it is the first of a batch,
    which then waits up to `linger` seconds for more: many events, one wake-up and one commit,
    not a thread switch per event.
    """

    def __init__(self, limit: int, linger: float = 0.0) -> None:
        self._limit = limit
        self._linger = linger
        self._items: list[Item] = []
        self._urgent = False
        self._closed = False
        self._ready = threading.Condition(threading.Lock())

    def put(self, item: Item, *, urgent: bool = False) -> None:
        with self._ready:
            self._items.append(item)
            if urgent:
                self._urgent = True
                self._ready.notify()
            elif len(self._items) == 1:
                self._ready.notify()

    def close(self) -> None:
        """No more items: workers take what is left, then get an empty batch."""
        with self._ready:
            self._closed = True
            self._ready.notify_all()

    def take(self) -> list[Item]:
        """The next batch (waiting for one); empty once the inbox is closed and drained."""
        with self._ready:
            while not self._items and not self._closed:
                self._ready.wait()
            deadline = time.monotonic() + self._linger
            while not (self._urgent or self._closed or len(self._items) >= self._limit):
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    break
                self._ready.wait(remaining)
            batch = self._items[: self._limit]
            del self._items[: self._limit]
            self._urgent = bool(self._items)  # what is left has waited long enough
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
