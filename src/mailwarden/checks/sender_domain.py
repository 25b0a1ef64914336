"""sender.*: can the envelope sender's domain receive replies at all?

A sender domain must have a mail host: MX records whose hosts have addresses, or (without MX)
an A/AAAA record (RFC 5321 5.1). Refused, each with its own reason: a domain with no records at
all (sender.domain_missing 550 5.1.8), a null MX (RFC 7505, sender.null_mx 550 5.7.27), MX
targets that are IP addresses written as names (`1.2.3.4.`, `[1.2.3.4]`: RFC 5321 5.1 and
RFC 2181 10.3 say an MX names a host; sender.mx_ip_literal, quoting the record) and MX hosts
that do not resolve (sender.no_mail_host). While DNS fails: 450 4.1.8, never a 5xx. The null
sender `<>` (bounces) is always allowed.
"""

from __future__ import annotations

import asyncio
import ipaddress
from dataclasses import dataclass, field
from typing import Any, Final

from mailwarden.addresses import AddressError, split
from mailwarden.checks.base import Action, Check, CheckContext, Services, Verdict
from mailwarden.checks.dnsfail import dns_failure
from mailwarden.dns import MX, DnsTempError, Resolver

MAX_MX_HOSTS: Final = 10


def ip_literal(exchange: str) -> bool:
    """An MX target that is an address, not a hostname: 1.2.3.4, [1.2.3.4], [IPv6:2001:db8::1]."""
    text = exchange.strip().rstrip(".").strip("[]")
    if text[:5].lower() == "ipv6:":
        text = text[5:]
    try:
        ipaddress.ip_address(text)
    except ValueError:
        return False
    return True


@dataclass
class MailHost:
    preference: int
    name: str
    ip_literal: bool = False
    addresses: list[str] = field(default_factory=list)
    failure: str | None = None  # a temporary DNS failure while resolving it

    @property
    def record(self) -> str:
        return f"{self.preference} {self.name}."

    def to_dict(self) -> dict[str, Any]:
        return {k: v for k, v in self.__dict__.items() if v not in (None, False, [])} | {"name": self.name}


@dataclass
class DomainReport:
    """What DNS says about a domain as a mail destination (for the check and for check-sender)."""

    domain: str
    exists: bool = True
    mx: list[MailHost] = field(default_factory=list)
    implicit: list[str] = field(default_factory=list)  # addresses of the domain itself when it has no MX
    problem: str | None = None  # the reason code of what is wrong, if anything
    values: dict[str, object] = field(default_factory=dict)  # for the catalog template

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"domain": self.domain, "exists": self.exists, "mx": [h.to_dict() for h in self.mx]}
        if self.implicit:
            out["implicit_mx_addresses"] = self.implicit
        if self.problem:
            out["problem"] = self.problem
        return out


async def inspect(resolver: Resolver, domain: str) -> DomainReport:
    """Look the domain up; raises DnsTempError when a missing answer could change the finding."""
    report = DomainReport(domain)
    answer = await resolver.query(domain, "MX")
    if answer.nxdomain:
        report.exists = False
        report.problem = "sender.domain_missing"
        return report
    records = sorted(answer.records, key=lambda r: (r.preference, r.exchange))
    if not records:
        report.implicit = await resolver.host_addresses(domain)
        if not report.implicit:
            report.problem = "sender.domain_missing"
        return report
    usable = [r for r in records if r.exchange]
    if not usable:
        report.mx = [MailHost(r.preference, ".") for r in records]
        report.problem = "sender.null_mx"
        return report
    report.mx = await _resolve_hosts(resolver, usable[:MAX_MX_HOSTS])
    if any(host.addresses for host in report.mx):
        return report
    failed = next((h for h in report.mx if h.failure), None)
    if failed is not None:
        raise DnsTempError(failed.name, "A", failed.failure or "")
    literal = next((h for h in report.mx if h.ip_literal), None)
    if literal is not None:
        report.problem = "sender.mx_ip_literal"
        report.values = {"record": f"{domain}. MX {literal.record}"}
    else:
        report.problem = "sender.no_mail_host"
        report.values = {"hosts": ", ".join(h.name for h in report.mx)}
    return report


async def _resolve_hosts(resolver: Resolver, records: list[MX]) -> list[MailHost]:
    hosts = [MailHost(r.preference, r.exchange, ip_literal(r.exchange)) for r in records]

    async def resolve(host: MailHost) -> None:
        if host.ip_literal:
            return  # as a name it cannot resolve; senders' MTAs fail on it
        try:
            host.addresses = await resolver.host_addresses(host.name)
        except DnsTempError as exc:
            host.failure = str(exc)

    await asyncio.gather(*(resolve(h) for h in hosts))
    return hosts


class SenderDomainCheck(Check):
    name = "sender_domain"

    def __init__(self, resolver: Resolver) -> None:
        self.resolver = resolver

    @classmethod
    def create(cls, services: Services) -> Check:
        return cls(services.resolver)

    async def mail(self, ctx: CheckContext) -> Verdict | None:
        assert ctx.txn is not None
        sender = ctx.txn.sender or ""
        if not sender:
            return None  # bounces must always be accepted (RFC 5321 4.5.5)
        try:
            domain = split(sender).domain
        except AddressError:
            return None  # the address syntax is the protocol layer's business
        if not domain or domain.startswith("["):
            return None
        try:
            report = await inspect(self.resolver, domain)
        except DnsTempError as exc:
            return dns_failure(ctx, f"the sender domain {domain}", exc, smtp_code=450, enhanced="4.1.8")
        ctx.txn.results["sender_domain"] = report.to_dict()
        if report.problem is None:
            return None
        values = {"domain": domain, "sender": sender, **report.values}
        return Verdict(Action.REJECT, report.problem, values, report.to_dict())
