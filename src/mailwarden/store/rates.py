"""Rate-limit counters kept in this process: a sliding window per key, one small record per active key.

The embedded store counts here (one machine, one gateway process); a store shared by several
nodes counts in its database instead (`RateLimitState`, store/parts.py). The web's /why limit
uses `SlidingCounter` directly.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

WINDOW = 60.0


@dataclass
class _Counter:
    minute: int
    current: int = 0
    previous: int = 0

    def rate(self, now: float) -> int:
        """Events in the last 60 seconds (estimated, rounded up), counting one more now."""
        minute = minute_of(now)
        if minute != self.minute:
            self.previous = self.current if minute == self.minute + 1 else 0
            self.current = 0
            self.minute = minute
        self.current += 1
        return estimate(self.current, self.previous, now)


def minute_of(now: float) -> int:
    return int(now // WINDOW)


def estimate(current: int, previous: int, now: float) -> int:
    """Events in the 60 seconds before `now` from this minute's and the previous minute's counts:
    the previous minute weighs as much as of it still lies in the window, and the sum is rounded up."""
    elapsed = (now % WINDOW) / WINDOW
    # Up, never down: 3.99 are four events (truncated, the limit 3 let a fourth through). The
    # rounding to 9 places keeps a float error (2.0000000000000004) from counting one too many.
    return math.ceil(round(current + previous * (1.0 - elapsed), 9))


class SlidingCounter:
    """Per-key events per minute; forgets keys idle for two minutes."""

    def __init__(self) -> None:
        self._counters: dict[str, _Counter] = {}
        self._swept = 0

    def hit(self, key: str, now: float) -> int:
        """Count one event for `key` and return the events of the last minute, rounded up."""
        counter = self._counters.get(key)
        if counter is None:
            counter = self._counters[key] = _Counter(minute_of(now))
        rate = counter.rate(now)
        self._sweep(now)
        return rate

    def _sweep(self, now: float) -> None:
        minute = minute_of(now)
        if minute == self._swept:
            return
        self._swept = minute
        for key in [k for k, c in self._counters.items() if c.minute < minute - 1]:
            del self._counters[key]


class MemoryRates:
    """`RateLimitState` in memory: one `SlidingCounter` per counter name."""

    def __init__(self) -> None:
        self._counters: dict[str, SlidingCounter] = {}

    async def rate_hit(self, counter: str, key: str, now: float) -> int:
        counts = self._counters.get(counter)
        if counts is None:
            counts = self._counters[counter] = SlidingCounter()
        return counts.hit(key, now)
