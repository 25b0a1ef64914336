"""Checks: one module per check, all with the interface in `checks/base.py`.

`REGISTRY` maps the names used in `[checks] order` to their classes; `Config.check_order` is the
configured order, or the one derived from what is configured.
"""

from __future__ import annotations

from typing import Final

from mailwarden.checks.base import Check, Services
from mailwarden.checks.chain import CheckChain
from mailwarden.checks.content import ContentCheck
from mailwarden.checks.dnsbl import DnsblCheck
from mailwarden.checks.greylist import GreylistCheck
from mailwarden.checks.helo import HeloCheck
from mailwarden.checks.pregreet import PregreetCheck
from mailwarden.checks.ratelimit import RateLimitCheck
from mailwarden.checks.rdns import RdnsCheck
from mailwarden.checks.recipients import RecipientsCheck
from mailwarden.checks.sender_domain import SenderDomainCheck
from mailwarden.checks.size import SizeCheck
from mailwarden.checks.spf import SpfCheck
from mailwarden.config import ConfigError

REGISTRY: Final[dict[str, type[Check]]] = {
    ContentCheck.name: ContentCheck,
    RecipientsCheck.name: RecipientsCheck,
    SizeCheck.name: SizeCheck,
    RateLimitCheck.name: RateLimitCheck,
    DnsblCheck.name: DnsblCheck,
    RdnsCheck.name: RdnsCheck,
    HeloCheck.name: HeloCheck,
    SenderDomainCheck.name: SenderDomainCheck,
    SpfCheck.name: SpfCheck,
    GreylistCheck.name: GreylistCheck,
    PregreetCheck.name: PregreetCheck,
}


def build_chain(services: Services) -> CheckChain:
    checks = []
    for name in services.config.check_order:
        cls = REGISTRY.get(name)
        if cls is None:
            raise ConfigError(
                f"key `checks.order`: unknown check {name!r}. Fix: use some of {', '.join(sorted(REGISTRY))}"
            )
        checks.append(cls.create(services))
    return CheckChain(checks, services.config.checks.timeout, services.config.checks.reject_score)
