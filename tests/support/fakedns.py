"""A resolver for unit tests whose wire is a script: (name, type) -> Answer or exception; else NXDOMAIN."""

from __future__ import annotations

import asyncio
from typing import Any

from mailwarden.dns import Answer, Resolver


class ScriptedResolver(Resolver):
    """A resolver whose wire is a script: name -> answer or exception; counts what went out."""

    def __init__(self, script: dict[tuple[str, str], Any], **kwargs: Any) -> None:
        super().__init__(["127.0.0.1:53"], **kwargs)
        self.script = script
        self.asked: list[tuple[str, str]] = []
        self.gate: asyncio.Event | None = None

    async def _ask(self, name: str, rtype: str) -> Answer[Any]:
        self.asked.append((name, rtype))
        if self.gate is not None:
            await self.gate.wait()
        outcome = self.script.get((name, rtype), Answer(name, rtype, (), nxdomain=True))
        if isinstance(outcome, BaseException):
            raise outcome
        result: Answer[Any] = outcome
        return result

    def with_nameservers(self, nameservers: Any) -> Resolver:
        return self  # one script answers for every server
