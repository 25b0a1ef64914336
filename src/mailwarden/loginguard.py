"""Slowing down and locking out password guessing, per client address and per user name (POP3 and the web).

Each failed login makes the next reply wait longer (doubling from `base_delay` up to `max_delay`);
after `max_failures` failures within `lock_seconds`, the address or the user name is locked for
`lock_seconds`: every login attempt is then refused at once, even with the right password, so a
guesser learns nothing. Locking a user name lets a stranger lock its owner out for a while; that
is the price of stopping a distributed guesser, and the lock is short and visible in the events.
The user is the canonical mailbox the session read from the login name (`addresses.login_name`),
so every spelling of one name counts and is locked together. POP3 keeps the state in memory (a
restart forgets it); the tracking center keeps it in the store, shared by all its processes.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Final, Protocol

_SWEEP_ABOVE: Final = 10_000  # tracked keys before expired ones are swept out


@dataclass(frozen=True)
class Lock:
    scope: str  # "address" or "user"
    remaining: float  # seconds


Key = tuple[str, str]  # ("address", client address) or ("user", user name)


class GuardState(Protocol):
    """Where the failures and locks are kept: in this process (`MemoryGuardState`, POP3) or in the
    store, shared by every process of the tracking center (store/web_state.py)."""

    def locked_until(self, key: Key) -> float | None:
        """The end of the key's lock (it may have passed), or None."""

    def add_failure(self, key: Key, now: float, since: float) -> int:
        """Record a failure at `now`; the key's failures after `since`, this one included."""

    def lock(self, key: Key, now: float, until: float) -> None:
        """Lock the key until `until` and forget its failures."""

    def forget_failures(self, key: Key) -> None: ...


class MemoryGuardState:
    """Failures and locks in this process's memory: a restart forgets them."""

    def __init__(self) -> None:
        self._failures: dict[Key, deque[float]] = {}
        self._locked_until: dict[Key, float] = {}

    def locked_until(self, key: Key) -> float | None:
        return self._locked_until.get(key)

    def add_failure(self, key: Key, now: float, since: float) -> int:
        if len(self._failures) > _SWEEP_ABOVE:
            self._sweep(now, since)
        times = self._failures.setdefault(key, deque())
        times.append(now)
        while times and times[0] <= since:
            times.popleft()
        return len(times)

    def lock(self, key: Key, now: float, until: float) -> None:
        self._locked_until[key] = until
        self._failures.pop(key, None)

    def forget_failures(self, key: Key) -> None:
        self._failures.pop(key, None)

    def _sweep(self, now: float, since: float) -> None:
        for key in [k for k, times in self._failures.items() if not times or times[-1] <= since]:
            del self._failures[key]
        for key in [k for k, until in self._locked_until.items() if until <= now]:
            del self._locked_until[key]


class LoginGuard:
    def __init__(
        self,
        *,
        base_delay: float,
        max_delay: float,
        max_failures: int,
        lock_seconds: float,
        clock: Callable[[], float] = time.monotonic,
        state: GuardState | None = None,
    ) -> None:
        """`clock`: seconds; a `state` shared between processes needs the wall clock (time.time)."""
        self.base_delay = base_delay
        self.max_delay = max_delay
        self.max_failures = max_failures
        self.lock_seconds = lock_seconds
        self._clock = clock
        self._state: GuardState = MemoryGuardState() if state is None else state

    def locked(self, address: str, user: str | None) -> Lock | None:
        """The lock that applies to this attempt, if any (the longer one when both do)."""
        now = self._clock()
        found: Lock | None = None
        for key in self._keys(address, user):
            until = self._state.locked_until(key)
            if until is None or until <= now:
                continue
            if found is None or until - now > found.remaining:
                found = Lock(key[0], until - now)
        return found

    def failed(self, address: str, user: str | None) -> tuple[int, float]:
        """Record a failure; returns the failure count that counts (the larger) and the delay to impose."""
        now = self._clock()
        worst = 0
        for key in self._keys(address, user):
            failures = self._state.add_failure(key, now, now - self.lock_seconds)
            if failures >= self.max_failures:
                self._state.lock(key, now, now + self.lock_seconds)
                failures = self.max_failures
            worst = max(worst, failures)
        return worst, min(self.base_delay * 2 ** (max(worst, 1) - 1), self.max_delay)

    def succeeded(self, user: str) -> None:
        """A correct login forgets the user's failures (not the address's: one good account must not
        let a guesser from the same address start over)."""
        self._state.forget_failures(("user", user))

    @staticmethod
    def _keys(address: str, user: str | None) -> list[Key]:
        keys: list[Key] = [("address", address)]
        if user:
            keys.append(("user", user))
        return keys
