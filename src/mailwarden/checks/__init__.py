"""Checks: one module per check, all with the interface in `checks/base.py`.

`REGISTRY` maps the names used in `[checks] order` to their classes.
"""

from __future__ import annotations

from typing import Final

from mailwarden.checks.base import Check, Services
from mailwarden.checks.chain import CheckChain
from mailwarden.checks.content import ContentCheck
from mailwarden.checks.recipients import RecipientsCheck
from mailwarden.checks.size import SizeCheck
from mailwarden.config import ConfigError

REGISTRY: Final[dict[str, type[Check]]] = {
    ContentCheck.name: ContentCheck,
    RecipientsCheck.name: RecipientsCheck,
    SizeCheck.name: SizeCheck,
}


def build_chain(services: Services) -> CheckChain:
    checks = []
    for name in services.config.checks.order:
        cls = REGISTRY.get(name)
        if cls is None:
            raise ConfigError(
                f"key `checks.order`: unknown check {name!r}. Fix: use some of {', '.join(sorted(REGISTRY))}"
            )
        checks.append(cls.create(services))
    return CheckChain(checks, services.config.checks.timeout)
