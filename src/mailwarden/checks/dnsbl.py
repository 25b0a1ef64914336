"""client.dnsbl: the client address on DNS block- and allowlists, with what each answer means.

Like postscreen's weighted `dnsbl_sites`: every listing has a weight, and the client is refused
when the weights add up to `[dnsbl] threshold`; listings with action "score" add points to the
session's score instead. A listing on an allowlist (DNSWL) exempts the client from all of it.
The reply names the zone, what the answer means and what to do, plus the list's own TXT text.

An answer in 127.255.255.0/24 (or outside 127.0.0.0/8) is the list telling us something is
wrong on our side - Spamhaus answers 127.255.255.254 to queries through public resolvers - so
it is logged as a warning and never treated as a listing.
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
from dataclasses import dataclass, replace
from typing import Any, Final

from mailwarden.checks.base import Action, Check, CheckContext, Services, Verdict
from mailwarden.checks.dnsfail import dns_failure
from mailwarden.config import DnsblCode, DnsblConfig, DnsblZone, FindingAction, answer_range
from mailwarden.dns import DnsTempError, Resolver, dnsbl_name
from mailwarden.text import printable

log = logging.getLogger(__name__)

_SPAMHAUS_LOOKUP: Final = "look the address up at https://check.spamhaus.org"
SPAMHAUS_ZEN: Final[dict[str, DnsblCode]] = {
    "127.0.0.2": DnsblCode(
        meaning="a spam source (Spamhaus SBL)",
        remedy=f"stop the spam sent from this address, then {_SPAMHAUS_LOOKUP} and follow the removal steps.",
    ),
    "127.0.0.3": DnsblCode(
        meaning="a source of low-reputation mail (Spamhaus CSS)",
        remedy=f"find the compromised account or script sending the mail, then {_SPAMHAUS_LOOKUP} to request removal.",
    ),
    "127.0.0.4-127.0.0.7": DnsblCode(
        meaning="an infected or exploited host (Spamhaus XBL)",
        remedy=f"clean the infected machine or exploited service behind this address, then {_SPAMHAUS_LOOKUP}.",
    ),
    "127.0.0.9": DnsblCode(
        meaning="a hijacked or spam-operated network (Spamhaus DROP)",
        remedy="the whole network is listed; its owner must contact Spamhaus.",
    ),
    "127.0.0.10-127.0.0.11": DnsblCode(
        meaning="a dynamic or end-user address range (Spamhaus PBL)",
        remedy="send through your provider's mail server (smarthost); a mail server with a static address can be "
        f"removed from the PBL: {_SPAMHAUS_LOOKUP}.",
    ),
}
LIST_ERRORS: Final = ipaddress.IPv4Network("127.255.255.0/24")
LOOPBACK: Final = ipaddress.IPv4Network("127.0.0.0/8")


def builtin_meanings(zone: DnsblZone) -> dict[str, DnsblCode]:
    name = zone.zone.strip(".").lower()
    if zone.meanings == "spamhaus-zen" or name == "zen.spamhaus.org" or name.endswith(".zen.dq.spamhaus.net"):
        return SPAMHAUS_ZEN
    return {}


@dataclass(frozen=True)
class Listing:
    zone: str
    answer: str
    meaning: str
    remedy: str
    weight: float
    action: FindingAction
    txt: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return {k: v for k, v in self.__dict__.items() if v is not None}


class ZoneQuery:
    """One configured list: how to ask it and what its answers mean."""

    def __init__(self, zone: DnsblZone, resolver: Resolver, default_action: FindingAction) -> None:
        self.config = zone
        self.name = zone.zone.strip(".").lower()
        self.resolver = resolver.with_nameservers(zone.nameservers) if zone.nameservers else resolver
        self.default_action = default_action
        codes = {**builtin_meanings(zone), **zone.codes}
        self.codes = [(answer_range(key), code) for key, code in codes.items()]

    def explain(self, answer: str) -> DnsblCode | None:
        address = ipaddress.IPv4Address(answer)
        for (low, high), code in self.codes:
            if low <= address <= high:
                return code
        return None

    async def lookup(self, ip: str) -> tuple[list[Listing], list[str]]:
        """The listings of `ip` here, and the list errors it answered (raises DnsTempError)."""
        name = dnsbl_name(ip, self.name)
        answer = await self.resolver.query(name, "A")
        listings: list[Listing] = []
        errors: list[str] = []
        for value in answer.records:
            address = ipaddress.IPv4Address(value)
            if address in LIST_ERRORS or address not in LOOPBACK:
                errors.append(value)
                continue
            code = self.explain(value)
            zone = self.config
            listings.append(
                Listing(
                    zone=self.name,
                    answer=value,
                    meaning=code.meaning if code else zone.meaning,
                    remedy=(code.remedy if code and code.remedy else zone.remedy),
                    weight=code.weight if code and code.weight is not None else zone.weight,
                    action=(code.action if code and code.action else zone.action) or self.default_action,
                )
            )
        if errors:
            log.warning(
                "DNS list %s answered %s for %s: a list error (e.g. queries through a public resolver), "
                "not a listing; use a local caching resolver",
                self.name,
                ", ".join(errors),
                ip,
            )
        if listings and self.config.kind == "block":
            listings = [await self._with_txt(name, listings[0]), *listings[1:]]
        return listings, errors

    async def _with_txt(self, name: str, listing: Listing) -> Listing:
        try:
            texts = await self.resolver.query(name, "TXT")
        except DnsTempError:
            return listing  # the TXT only decorates the reply
        if not texts.records:
            return listing
        text = printable(texts.records[0].decode("utf-8", "replace"), 200)
        return replace(listing, txt=text)


@dataclass
class DnsblReport:
    """Everything the lists said about one address (for the check and for check-sender)."""

    listings: list[Listing]
    allowed_by: Listing | None
    errors: dict[str, list[str]]
    failures: dict[str, DnsTempError]


async def inspect(zones: list[ZoneQuery], ip: str) -> DnsblReport:
    results = await asyncio.gather(*(zone.lookup(ip) for zone in zones), return_exceptions=True)
    report = DnsblReport([], None, {}, {})
    for zone, result in zip(zones, results, strict=True):
        if isinstance(result, DnsTempError):
            report.failures[zone.name] = result
        elif isinstance(result, BaseException):
            raise result
        else:
            listings, errors = result
            if errors:
                report.errors[zone.name] = errors
            if zone.config.kind == "allow":
                if listings and report.allowed_by is None:
                    report.allowed_by = listings[0]
            else:
                report.listings.extend(listings)
    return report


def build_zones(config: DnsblConfig, resolver: Resolver) -> list[ZoneQuery]:
    return [ZoneQuery(zone, resolver, config.action) for zone in config.zones]


class DnsblCheck(Check):
    name = "dnsbl"

    def __init__(self, zones: list[ZoneQuery], threshold: float) -> None:
        self.zones = zones
        self.threshold = threshold

    @classmethod
    def create(cls, services: Services) -> Check:
        return cls(build_zones(services.config.dnsbl, services.resolver), services.config.dnsbl.threshold)

    async def connect(self, ctx: CheckContext) -> Verdict | None:
        ip = ctx.session.client_ip
        report = await inspect(self.zones, ip)
        detail: dict[str, Any] = {"listings": [listing.to_dict() for listing in report.listings]}
        if report.errors:
            detail["list_errors"] = report.errors
        if report.allowed_by is not None:
            allowed = report.allowed_by
            ctx.session.results["dnswl"] = allowed.to_dict()
            return Verdict(
                Action.TAG,
                "client.allowlisted",
                {"client_ip": ip, "zone": allowed.zone, "answer": allowed.answer},
                detail,
            )
        blocking = [x for x in report.listings if x.action in ("reject", "tempfail")]
        if sum(x.weight for x in blocking) >= self.threshold:
            return self._refusal(ip, blocking, detail)
        if report.failures:
            # a zone we could not ask might have listed the client, or allowed it
            return dns_failure(ctx, "the DNS lists " + ", ".join(report.failures), next(iter(report.failures.values())))
        scoring = [x for x in report.listings if x.action == "score"]
        if scoring:
            strongest = max(scoring, key=lambda x: x.weight)
            return Verdict(
                Action.SCORE, "client.dnsbl", _values(ip, strongest), detail, score=sum(x.weight for x in scoring)
            )
        return None

    def _refusal(self, ip: str, blocking: list[Listing], detail: dict[str, Any]) -> Verdict:
        rejecting = [x for x in blocking if x.action == "reject"]
        strongest = max(rejecting or blocking, key=lambda x: x.weight)
        if rejecting:
            return Verdict(Action.REJECT, "client.dnsbl", _values(ip, strongest), detail)
        return Verdict(Action.TEMPFAIL, "client.dnsbl", _values(ip, strongest), detail, smtp_code=450, enhanced="4.7.1")


def _values(ip: str, listing: Listing) -> dict[str, object]:
    return {
        "client_ip": ip,
        "zone": listing.zone,
        "meaning": listing.meaning,
        "advice": listing.remedy,
        "txt": f" The list says: {listing.txt}" if listing.txt else "",
    }
