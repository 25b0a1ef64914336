"""Holding events back briefly so that facts from neighbouring lines can complete them.

Different processes log to syslog independently, so within a second the lines of one message
may come in any order: Postfix's `qmgr ... removed` before the LMTP delivery line, a Dovecot
`saved mail` before the matching Postfix line, cleanup's `message-id=` after the delivery. An
event therefore waits in a queue until the log's clock has moved `holdback` past it (or the
queue is full, or the input ends) and is completed from its bound context only when it leaves:
by then every line of that second has been read.

Events leave in the order they were read (first in, first out), so the oldest waiting event
marks how far the input is fully stored; followers use `pending_offsets` for their checkpoints.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable

from mailwarden.events import Event
from mailwarden.ingest.base import Context

Release = Callable[[Event], None]


class Holdback:
    __slots__ = ("_latest", "_queue", "holdback_us", "limit", "release")

    def __init__(self, release: Release, holdback_us: int, limit: int = 20_000) -> None:
        self.release = release
        self.holdback_us = holdback_us
        self.limit = limit
        self._queue: deque[tuple[Event, Context | None, str, int]] = deque()
        self._latest = 0

    def __len__(self) -> int:
        return len(self._queue)

    def add(self, event: Event, context: Context | None, origin: str, offset: int) -> None:
        queue = self._queue
        queue.append((event, context, origin, offset))
        latest = self._latest
        if event.ts > latest:
            self._latest = latest = event.ts
        if queue[0][0].ts <= latest - self.holdback_us or len(queue) > self.limit:  # the usual: nothing due
            self.advance(latest)

    def advance(self, now_us: int) -> None:
        """Release every event older than `now_us - holdback` (and any beyond the size limit)."""
        queue = self._queue
        horizon = now_us - self.holdback_us
        limit = self.limit
        release = self.release
        while queue and (queue[0][0].ts <= horizon or len(queue) > limit):
            event, context, _, _ = queue.popleft()
            if context is not None:
                context.fill(event)
            release(event)

    def drain(self) -> None:
        """Release everything (end of input, or the input went quiet)."""
        self.advance(1 << 62)

    def pending_offsets(self) -> dict[str, int]:
        """For each origin, the offset of its first line with an event not yet released."""
        offsets: dict[str, int] = {}
        for _, _, origin, offset in self._queue:
            if origin not in offsets:
                offsets[origin] = offset
        return offsets
