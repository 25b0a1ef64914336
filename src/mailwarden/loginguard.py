"""Slowing down and locking out password guessing, per client address and per user name (POP3 and the web).

Each failed login makes the next reply wait longer (doubling from `base_delay` up to `max_delay`);
after `max_failures` failures within `lock_seconds`, the address or the user name is locked for
`lock_seconds`: every login attempt is then refused at once, even with the right password, so a
guesser learns nothing. Locking a user name lets a stranger lock its owner out for a while; that
is the price of stopping a distributed guesser, and the lock is short and visible in the events.
The user is the canonical mailbox the session read from the login name (`addresses.login_name`),
so every spelling of one name counts and is locked together. The state is in memory: a restart
forgets it.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Final

_SWEEP_ABOVE: Final = 10_000  # tracked keys before expired ones are swept out


@dataclass(frozen=True)
class Lock:
    scope: str  # "address" or "user"
    remaining: float  # seconds


class LoginGuard:
    def __init__(
        self,
        *,
        base_delay: float,
        max_delay: float,
        max_failures: int,
        lock_seconds: float,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.base_delay = base_delay
        self.max_delay = max_delay
        self.max_failures = max_failures
        self.lock_seconds = lock_seconds
        self._clock = clock
        self._failures: dict[tuple[str, str], deque[float]] = {}
        self._locked_until: dict[tuple[str, str], float] = {}

    def locked(self, address: str, user: str | None) -> Lock | None:
        """The lock that applies to this attempt, if any (the longer one when both do)."""
        now = self._clock()
        found: Lock | None = None
        for key in self._keys(address, user):
            until = self._locked_until.get(key)
            if until is None:
                continue
            if until <= now:
                del self._locked_until[key]
                continue
            if found is None or until - now > found.remaining:
                found = Lock(key[0], until - now)
        return found

    def failed(self, address: str, user: str | None) -> tuple[int, float]:
        """Record a failure; returns the failure count that counts (the larger) and the delay to impose."""
        now = self._clock()
        if len(self._failures) > _SWEEP_ABOVE:
            self._sweep(now)
        worst = 0
        for key in self._keys(address, user):
            times = self._failures.setdefault(key, deque())
            times.append(now)
            while times and times[0] <= now - self.lock_seconds:
                times.popleft()
            if len(times) >= self.max_failures:
                self._locked_until[key] = now + self.lock_seconds
                times.clear()
                worst = max(worst, self.max_failures)
            else:
                worst = max(worst, len(times))
        return worst, min(self.base_delay * 2 ** (max(worst, 1) - 1), self.max_delay)

    def succeeded(self, user: str) -> None:
        """A correct login forgets the user's failures (not the address's: one good account must not
        let a guesser from the same address start over)."""
        self._failures.pop(("user", user), None)

    @staticmethod
    def _keys(address: str, user: str | None) -> list[tuple[str, str]]:
        keys = [("address", address)]
        if user:
            keys.append(("user", user))
        return keys

    def _sweep(self, now: float) -> None:
        for key in [k for k, times in self._failures.items() if not times or times[-1] <= now - self.lock_seconds]:
            del self._failures[key]
        for key in [k for k, until in self._locked_until.items() if until <= now]:
            del self._locked_until[key]
