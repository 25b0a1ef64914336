"""A circuit breaker for the PostgreSQL store: once one attempt found the database away, every
session is told so at once instead of waiting for the pool again, and one thread probes until
the database answers.

Without it each read of a session (a mailbox, greylisting, a rate limit, a pregreet pass) that
came while the database was away waited the pool's timeout, and the known mailboxes were asked
again every few seconds, each time with every session of that moment waiting: bench/README.md
("PostgreSQL outage") measured a node accepting a sixth of its normal rate. What a session does
with the failure is unchanged (a known mailbox is still used, anything else is the store's
temporary failure); it only learns it without waiting.

The breaker opens on a failure that says the database cannot be reached (the pool found no
connection in time, a connection broke, the event writer could not connect) and closes when a
probe connects or any write of this process reached the database again. A pool whose
connections were all busy for its whole timeout opens it too: the probe, which needs no
connection of the pool, closes it again within its interval.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable

log = logging.getLogger(__name__)


class CircuitBreaker:
    def __init__(self, probe: Callable[[], bool], interval: float, name: str) -> None:
        """`probe` says whether the database answers now; it runs on the breaker's own thread every
        `interval` seconds while the breaker is open, so that no session waits for it."""
        self._probe = probe
        self._interval = interval
        self._name = name
        self._cause: str | None = None
        self._lock = threading.Lock()
        self._prober: threading.Thread | None = None
        self._closing = threading.Event()

    @property
    def away(self) -> str | None:
        """Why the database is taken as away, or None when it is to be asked."""
        return self._cause

    def lost(self, cause: str) -> None:
        """An attempt found the database away: from now on fail at once, and probe until it is back."""
        with self._lock:
            if self._cause is None:
                log.warning("%s is away (%s): its reads fail at once until a probe reaches it", self._name, cause)
            self._cause = cause
            if self._prober is None and not self._closing.is_set():
                self._prober = threading.Thread(target=self._probe_until_back, name=f"probe:{self._name}", daemon=True)
                self._prober.start()

    def reached(self) -> None:
        """Something of this process reached the database: ask it again."""
        if self._cause is not None:
            log.info("%s answers again", self._name)
        self._cause = None

    def close(self) -> None:
        self._closing.set()

    def _probe_until_back(self) -> None:
        while not self._closing.wait(self._interval):
            with self._lock:  # decided under the lock: a `lost` meanwhile finds this thread still probing
                if self._cause is None:
                    self._prober = None
                    return
            if self._probe():
                self.reached()
