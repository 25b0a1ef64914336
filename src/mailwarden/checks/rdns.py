"""client.no_rdns, client.fcrdns_mismatch, client.dynamic_rdns: who the client says it is in DNS.

The PTR names of the client address are looked up and forward-confirmed (a name counts only if
its A/AAAA records lead back to the address, FCrDNS); the confirmed name becomes the session's
`client_name` (Received header, events). A generic name - the address embedded in it, or words
like dyn, dsl, pool, cust - marks an end-user line, typically an in-house server sending
directly instead of through its provider's relay. Each finding is answered as configured
(reject, tempfail, or points that add up with other findings).
"""

from __future__ import annotations

import asyncio
import ipaddress
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Final, Literal

from mailwarden.checks.base import Check, CheckContext, Services, Verdict
from mailwarden.checks.dnsfail import dns_failure
from mailwarden.config import FindingPolicy, RdnsConfig
from mailwarden.dns import DnsTempError, Resolver

MAX_PTR_NAMES: Final = 10  # like RFC 7208's limit for the ptr mechanism


class GenericNames:
    """Detects generic (dynamic, end-user) hostnames."""

    def __init__(self, keywords: Sequence[str], patterns: Sequence[str]) -> None:
        self.keywords = frozenset(k.lower() for k in keywords)
        self.patterns = [re.compile(p) for p in patterns]

    def why(self, name: str, ip: str) -> str | None:
        """Why `name` looks generic for `ip` (a short phrase), or None."""
        host = name.lower().rstrip(".")
        embedded = _embedded_address(host, ip)
        if embedded:
            return f"it contains the address as {embedded}"
        labels = host.split(".")
        for word in re.split(r"[^a-z]+", ".".join(labels[:-2])):
            if word in self.keywords:
                return f"it contains the word {word!r}"
        for pattern in self.patterns:
            if pattern.search(host):
                return f"it matches the pattern {pattern.pattern!r}"
        return None


def _embedded_address(host: str, ip: str) -> str | None:
    address = ipaddress.ip_address(ip)
    if address.version != 4:
        return None
    octets = str(address).split(".")
    forms = []
    for order in (octets, octets[::-1]):
        for sep in "-._":
            forms.append(sep.join(order))
            forms.append(sep.join(o.zfill(3) for o in order))
        forms.append("".join(o.zfill(3) for o in order))
    for form in forms:
        if re.search(rf"(?<![0-9]){re.escape(form)}(?![0-9])", host):
            return form
    hexed = f"{int(address):08x}"
    if re.search(rf"(?<![0-9a-f]){hexed}(?![0-9a-f])", host):
        return hexed
    return None


@dataclass
class RdnsReport:
    """The reverse DNS of one address (for the check and for check-sender)."""

    ip: str
    ptr: list[str] = field(default_factory=list)
    confirmed: str | None = None  # the first PTR name whose A/AAAA leads back to the address
    forward: dict[str, list[str]] = field(default_factory=dict)
    generic: str | None = None  # why the name looks generic

    def to_dict(self) -> dict[str, Any]:
        return {k: v for k, v in self.__dict__.items() if v not in (None, [], {})}


async def inspect(resolver: Resolver, ip: str, generic: GenericNames) -> RdnsReport:
    """PTR, forward confirmation, generic name; raises DnsTempError if a missing answer could change it."""
    report = RdnsReport(ip)
    answer = await resolver.ptr(ip)
    report.ptr = list(answer.records[:MAX_PTR_NAMES])
    if not report.ptr:
        return report
    rtype: Literal["A", "AAAA"] = "A" if ipaddress.ip_address(ip).version == 4 else "AAAA"
    lookups = await asyncio.gather(*(resolver.query(n, rtype) for n in report.ptr), return_exceptions=True)
    failure: DnsTempError | None = None
    for name, result in zip(report.ptr, lookups, strict=True):
        if isinstance(result, DnsTempError):
            failure = failure or result
        elif isinstance(result, BaseException):
            raise result
        else:
            report.forward[name] = list(result.records)
            if report.confirmed is None and _same_address(ip, result.records):
                report.confirmed = name
    if report.confirmed is None and failure is not None:
        raise failure
    report.generic = generic.why(report.confirmed or report.ptr[0], ip)
    return report


def _same_address(ip: str, addresses: Sequence[str]) -> bool:
    wanted = ipaddress.ip_address(ip)
    return any(ipaddress.ip_address(a) == wanted for a in addresses)


class RdnsCheck(Check):
    name = "rdns"

    def __init__(self, config: RdnsConfig, resolver: Resolver) -> None:
        self.config = config
        self.resolver = resolver
        self.generic = GenericNames(config.generic_keywords, config.generic_patterns)
        self.exempt = [ipaddress.ip_network(n, strict=False) for n in config.exempt_networks]

    @classmethod
    def create(cls, services: Services) -> Check:
        return cls(services.config.rdns, services.resolver)

    async def connect(self, ctx: CheckContext) -> Verdict | None:
        ip = ctx.session.client_ip
        if any(ipaddress.ip_address(ip) in network for network in self.exempt):
            return None
        try:
            report = await inspect(self.resolver, ip, self.generic)
        except DnsTempError as exc:
            return dns_failure(ctx, f"the reverse DNS of {ip}", exc, smtp_code=450, enhanced="4.7.25")
        ctx.session.results["rdns"] = report.to_dict()
        if report.confirmed:
            ctx.session.client_name = report.confirmed
        detail = report.to_dict()
        config = self.config
        if not report.ptr:
            return Verdict.as_configured(
                FindingPolicy(config.no_rdns, config.no_rdns_score), "client.no_rdns", detail, client_ip=ip
            )
        if report.confirmed is None:
            verdict = Verdict.as_configured(
                FindingPolicy(config.fcrdns_mismatch, config.fcrdns_mismatch_score),
                "client.fcrdns_mismatch",
                detail,
                client_ip=ip,
                client_name=report.ptr[0],
            )
            if verdict is not None:
                return verdict
        if report.generic:
            return Verdict.as_configured(
                FindingPolicy(config.dynamic, config.dynamic_score),
                "client.dynamic_rdns",
                detail,
                client_ip=ip,
                client_name=report.confirmed or report.ptr[0],
                why=report.generic,
            )
        return None
