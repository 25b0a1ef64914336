"""rate_limited: connections and messages per client address per minute.

Counted in memory on this node with a sliding window (the previous minute's count weighted by
how much of it still lies in the window), so memory stays one small record per active address.
Too many connections: 421 4.7.0 at once (the connection closes); too many messages: 451 4.7.0
at MAIL. Both are temporary: a well-behaved sender slows down and retries. The estimate is
rounded up: 3.01 events in the window are four, so the limit is never exceeded by rounding.
Time comes from `Services.clock`.
"""

from __future__ import annotations

import ipaddress
import math
from dataclasses import dataclass

from mailwarden.checks.base import Action, Check, CheckContext, Clock, Services, Verdict
from mailwarden.config import RateLimitConfig

WINDOW = 60.0


@dataclass
class _Counter:
    minute: int
    current: int = 0
    previous: int = 0

    def rate(self, now: float) -> float:
        """Events in the last 60 seconds (estimated), counting one more now."""
        minute = int(now // WINDOW)
        if minute != self.minute:
            self.previous = self.current if minute == self.minute + 1 else 0
            self.current = 0
            self.minute = minute
        self.current += 1
        elapsed = (now % WINDOW) / WINDOW
        return self.current + self.previous * (1.0 - elapsed)


class SlidingCounter:
    """Per-key events per minute; forgets keys idle for two minutes."""

    def __init__(self) -> None:
        self._counters: dict[str, _Counter] = {}
        self._swept = 0

    def hit(self, key: str, now: float) -> int:
        """Count one event for `key` and return the events of the last minute, rounded up."""
        counter = self._counters.get(key)
        if counter is None:
            counter = self._counters[key] = _Counter(int(now // WINDOW))
        rate = counter.rate(now)
        self._sweep(now)
        # Up, never down: 3.99 are four events (truncated, the limit 3 let a fourth through). The
        # rounding to 9 places keeps a float error (2.0000000000000004) from counting one too many.
        return math.ceil(round(rate, 9))

    def _sweep(self, now: float) -> None:
        minute = int(now // WINDOW)
        if minute == self._swept:
            return
        self._swept = minute
        for key in [k for k, c in self._counters.items() if c.minute < minute - 1]:
            del self._counters[key]


class RateLimitCheck(Check):
    name = "ratelimit"

    def __init__(self, config: RateLimitConfig, clock: Clock) -> None:
        self.config = config
        self.clock = clock
        self.exempt = [ipaddress.ip_network(n, strict=False) for n in config.exempt_networks]
        self.connections = SlidingCounter()
        self.messages = SlidingCounter()

    @classmethod
    def create(cls, services: Services) -> Check:
        return cls(services.config.ratelimit, services.clock)

    def _exempt(self, ip: str) -> bool:
        return any(ipaddress.ip_address(ip) in network for network in self.exempt)

    async def connect(self, ctx: CheckContext) -> Verdict | None:
        limit = self.config.connections_per_minute
        ip = ctx.session.client_ip
        if not limit or self._exempt(ip):
            return None
        count = self.connections.hit(ip, self.clock())
        if count <= limit:
            return None
        values = {"what": "connections", "client_ip": ip, "count": count, "limit": limit}
        return Verdict(Action.TEMPFAIL, "rate_limited", values, values, smtp_code=421, enhanced="4.7.0")

    async def mail(self, ctx: CheckContext) -> Verdict | None:
        limit = self.config.messages_per_minute
        ip = ctx.session.client_ip
        if not limit or self._exempt(ip):
            return None
        count = self.messages.hit(ip, self.clock())
        if count <= limit:
            return None
        values = {"what": "messages", "client_ip": ip, "count": count, "limit": limit}
        return Verdict(Action.TEMPFAIL, "rate_limited", values, values)
