"""greylisted: delay the first mail of an unknown (client network, sender, recipient) triplet.

Genuine mail servers retry a 4xx after a few minutes; most spam software does not. The first
attempt gets 451 4.7.1 with the time to wait; a retry after `delay` seconds (and within
`retry_window`) passes and the triplet stays known for `expire_days`. Clients are grouped by
network (/24, /64) because large senders retry from another address of the same pool.
Exempt: configured networks, clients on a DNS allowlist, and senders that passed before from
the same network.

For the trace, the refusal is a `tempfail` event (reason greylisted, detail with first_seen and
retry_after); the passing retry is recorded on the RCPT event as a TAG of this check with
first_seen and the delay, and the accepted mail carries `X-Greylist: delayed N seconds ...`.
Time comes from `Services.clock`.
"""

from __future__ import annotations

import asyncio
import ipaddress
from dataclasses import replace
from datetime import UTC, datetime
from email.utils import format_datetime

from mailwarden.checks.base import Action, Check, CheckContext, Clock, Recipient, Services, Verdict
from mailwarden.config import GreylistConfig
from mailwarden.events import us_to_iso
from mailwarden.store.base import GreylistEntry
from mailwarden.store.parts import GreylistState

PURGE_EVERY_US = 3600 * 1_000_000


class GreylistCheck(Check):
    name = "greylist"

    def __init__(self, config: GreylistConfig, store: GreylistState, hostname: str, clock: Clock) -> None:
        self.config = config
        self.store = store
        self.hostname = hostname
        self.clock = clock
        self.exempt = [ipaddress.ip_network(n, strict=False) for n in config.exempt_networks]
        self._purged_us = 0

    @classmethod
    def create(cls, services: Services) -> Check:
        return cls(services.config.greylist, services.store, services.config.smtp.hostname, services.clock)

    def network(self, ip: str) -> str:
        address = ipaddress.ip_address(ip)
        prefix = self.config.ipv4_prefix if address.version == 4 else self.config.ipv6_prefix
        return str(ipaddress.ip_network(f"{address}/{prefix}", strict=False))

    async def rcpt(self, ctx: CheckContext, recipient: str) -> Verdict | Recipient | None:
        assert ctx.txn is not None
        client_ip = ctx.session.client_ip
        if any(ipaddress.ip_address(client_ip) in network for network in self.exempt):
            return None
        if self.config.exempt_allowlisted and "dnswl" in ctx.session.results:
            return None
        if ctx.resolved is None:
            return None  # not one of our mailboxes: refused as such, not greylisted
        network = self.network(client_ip)
        sender = (ctx.txn.sender or "").lower()
        mailbox = ctx.resolved.mailbox
        now = int(self.clock() * 1_000_000)
        expiry = now - self.config.expire_days * 86_400_000_000
        await self._purge(now, expiry)
        entry = await asyncio.to_thread(self.store.greylist_get, network, sender, mailbox)
        if entry is not None and entry.passed_us is not None and entry.last_seen_us >= expiry:
            await asyncio.to_thread(self.store.greylist_put, replace(entry, last_seen_us=now))
            return None
        if entry is None or now - entry.first_seen_us > self.config.retry_window * 1_000_000:
            if self.config.exempt_known_senders and await asyncio.to_thread(
                self.store.greylist_sender_passed, network, sender, expiry
            ):
                return None
            entry = GreylistEntry(network, sender, mailbox, now, now)
            await asyncio.to_thread(self.store.greylist_put, entry)
            return self._delay(client_ip, entry, self.config.delay)
        waited = (now - entry.first_seen_us) / 1_000_000
        if waited < self.config.delay:
            entry = replace(entry, last_seen_us=now, attempts=entry.attempts + 1)
            await asyncio.to_thread(self.store.greylist_put, entry)
            return self._delay(client_ip, entry, int(self.config.delay - waited) + 1)
        entry = replace(entry, last_seen_us=now, passed_us=now, attempts=entry.attempts + 1)
        await asyncio.to_thread(self.store.greylist_put, entry)
        first = not any(name == "X-Greylist" for name, _ in ctx.txn.headers)
        return self._passed(client_ip, entry, int(waited), now, header=first)

    def _delay(self, client_ip: str, entry: GreylistEntry, wait: int) -> Verdict:
        detail = {
            "network": entry.network,
            "first_seen": us_to_iso(entry.first_seen_us),
            "attempts": entry.attempts,
            "retry_after": wait,
        }
        return Verdict(Action.TEMPFAIL, "greylisted", {"client_ip": client_ip, "delay": wait}, detail)

    def _passed(self, client_ip: str, entry: GreylistEntry, waited: int, now: int, *, header: bool) -> Verdict:
        detail = {
            "network": entry.network,
            "first_seen": us_to_iso(entry.first_seen_us),
            "attempts": entry.attempts,
            "delayed_seconds": waited,
            "passed": True,
        }
        when = format_datetime(datetime.fromtimestamp(now / 1_000_000, UTC))
        stamp = f"delayed {waited} seconds by mailwarden at {self.hostname}; {when}"
        return Verdict(
            Action.TAG,
            "greylisted",
            {"client_ip": client_ip, "delay": waited},
            detail,
            headers=(("X-Greylist", stamp),) if header else (),
        )

    async def _purge(self, now: int, expiry: int) -> None:
        if now - self._purged_us < PURGE_EVERY_US:
            return
        self._purged_us = now
        await asyncio.to_thread(self.store.greylist_purge, expiry)
