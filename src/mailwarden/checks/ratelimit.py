"""rate_limited: connections and messages per client address per minute.

Counted by the store's `RateLimitState` with a sliding window (the previous minute's count
weighted by how much of it still lies in the window): in this process's memory with SQLite
(store/rates.py), in the table the SMTP workers share (smtp/clients.py `SharedCounts`, which the
worker's SQLite store counts in), so the limit holds for all workers together; across every node
and worker with a shared store (PostgreSQL).
Too many connections: 421 4.7.0 at once (the connection closes); too many messages: 451 4.7.0
at MAIL. Both are temporary: a well-behaved sender slows down and retries. The estimate is
rounded up: 3.01 events in the window are four, so the limit is never exceeded by rounding.
Time comes from `Services.clock`.
"""

from __future__ import annotations

import ipaddress

from mailwarden.checks.base import Action, Check, CheckContext, Clock, Services, Verdict
from mailwarden.config import RateLimitConfig
from mailwarden.store.parts import RateLimitState


class RateLimitCheck(Check):
    name = "ratelimit"

    def __init__(self, config: RateLimitConfig, rates: RateLimitState, clock: Clock) -> None:
        self.config = config
        self.rates = rates
        self.clock = clock
        self.exempt = [ipaddress.ip_network(n, strict=False) for n in config.exempt_networks]

    @classmethod
    def create(cls, services: Services) -> Check:
        return cls(services.config.ratelimit, services.store, services.clock)

    def _exempt(self, ip: str) -> bool:
        return any(ipaddress.ip_address(ip) in network for network in self.exempt)

    async def connect(self, ctx: CheckContext) -> Verdict | None:
        limit = self.config.connections_per_minute
        ip = ctx.session.client_ip
        if not limit or self._exempt(ip):
            return None
        count = await self.rates.rate_hit("connections", ip, self.clock())
        if count <= limit:
            return None
        values = {"what": "connections", "client_ip": ip, "count": count, "limit": limit}
        return Verdict(Action.TEMPFAIL, "rate_limited", values, values, smtp_code=421, enhanced="4.7.0")

    async def mail(self, ctx: CheckContext) -> Verdict | None:
        limit = self.config.messages_per_minute
        ip = ctx.session.client_ip
        if not limit or self._exempt(ip):
            return None
        count = await self.rates.rate_hit("messages", ip, self.clock())
        if count <= limit:
            return None
        values = {"what": "messages", "client_ip": ip, "count": count, "limit": limit}
        return Verdict(Action.TEMPFAIL, "rate_limited", values, values)
