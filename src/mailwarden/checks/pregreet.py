"""client.pregreet: refuse clients that talk before our greeting, as Postfix's postscreen does.

A real mail server waits for the 220 greeting before it says EHLO; spam software often sends
at once. A client not seen before is greeted only after `[pregreet] wait` seconds, while the
protocol watches for input (`SessionInfo.watch_input`, smtp/server.py). One that talks first is
refused like every connect verdict, at each RCPT (550 5.5.1, "protocol error", with our sentence
and ref), so its sender's bounce names the recipient. One that waits is remembered in the
store for `pass_ttl` (postscreen's pass cache) and greeted at once from then on, across
restarts. Time for that cache comes from `Services.clock`.

The record of the connect event says what the client sent and how soon (`detail.sent`,
`detail.after`); a pass shows as the check's time in `detail.checks`.
"""

from __future__ import annotations

import asyncio
import ipaddress
from typing import Final

from mailwarden.checks.base import Action, Check, CheckContext, Clock, Services, Verdict
from mailwarden.config import PregreetConfig
from mailwarden.store.parts import PregreetPasses
from mailwarden.text import printable

SHOWN: Final = 100  # characters of what an early talker sent, kept in the event


class PregreetCheck(Check):
    name = "pregreet"

    def __init__(self, config: PregreetConfig, store: PregreetPasses, clock: Clock, check_timeout: float) -> None:
        self.config = config
        self.store = store
        self.clock = clock
        self.exempt = [ipaddress.ip_network(n, strict=False) for n in config.exempt_networks]
        self.timeout = config.wait + check_timeout  # the wait is not the check being slow

    @classmethod
    def create(cls, services: Services) -> Check:
        return cls(services.config.pregreet, services.store, services.clock, services.config.checks.timeout)

    async def connect(self, ctx: CheckContext) -> Verdict | None:
        session = ctx.session
        if not self.config.wait or session.watch_input is None:
            return None
        client_ip = session.client_ip
        if any(ipaddress.ip_address(client_ip) in network for network in self.exempt):
            return None
        if await self._passed_lately(client_ip):
            return None
        loop = asyncio.get_running_loop()
        started = loop.time()
        sent = await session.watch_input(self.config.wait)
        if sent is None:  # gone before the greeting: neither passed nor failed
            return None
        if not sent:
            now = self._now_us()
            forget = now - int(self.config.pass_ttl * 1_000_000)
            await asyncio.to_thread(self.store.pregreet_pass, client_ip, now, forget)
            return None
        after = round(loop.time() - started, 3)
        text = printable(sent.decode("utf-8", "replace"), SHOWN)
        detail = {"after": after, "wait": self.config.wait, "sent": text}
        values = {"client_ip": client_ip, "after": after, "wait": self.config.wait}
        return Verdict(Action.REJECT, "client.pregreet", values, detail)

    async def _passed_lately(self, client_ip: str) -> bool:
        passed = await asyncio.to_thread(self.store.pregreet_passed, client_ip)
        return passed is not None and self._now_us() - passed < self.config.pass_ttl * 1_000_000

    def _now_us(self) -> int:
        return int(self.clock() * 1_000_000)
