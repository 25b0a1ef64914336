"""DMARC (RFC 7489): the From domain's policy, and whether SPF or DKIM vouch for that domain.

Own code rather than a library: authheaders re-parses the public suffix list on every call
(165 ms per message here); this keeps one `PublicSuffixList` for the process (2 µs a lookup).

The steps: the RFC5322.From domain (exactly one, else no evaluation); its `_dmarc` TXT record,
else the organizational domain's (then `sp=` applies if given); DMARC passes when an SPF pass or
a DKIM pass is aligned with the From domain (relaxed: same organizational domain, strict: the
same name). A DNS failure is `temperror`, never a verdict.
"""

from __future__ import annotations

import email.utils
import functools
import random
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from email.header import decode_header, make_header
from typing import Any

from mailwarden.dns import DnsTempError, Resolver
from mailwarden.headers import first
from mailwarden.scan.dkim import DkimResult
from mailwarden.text import decimal


@functools.cache
def _psl() -> Any:
    from publicsuffixlist import PublicSuffixList

    return PublicSuffixList()


def organizational_domain(domain: str) -> str:
    """example.co.uk for mail.example.co.uk (RFC 7489 3.2); the name itself when it is a suffix."""
    org = _psl().privatesuffix(domain.lower().rstrip("."))
    return str(org) if org else domain.lower().rstrip(".")


@dataclass(frozen=True)
class DmarcRecord:
    policy: str  # none, quarantine, reject
    subdomain_policy: str | None
    adkim: str  # r or s
    aspf: str
    pct: int
    found_at: str  # the name whose _dmarc record applies


@dataclass(frozen=True)
class DmarcResult:
    result: str  # pass, fail, none, temperror, permerror
    domain: str  # the From domain
    policy: str = "none"  # the policy that applies to this message (p= or sp=)
    applied: bool = False  # fail and the policy applies (pct sampling); False for pass and none
    reason: str = ""

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def from_domain(fields: Sequence[tuple[str, str]]) -> str | None:
    """The domain of the single From address, or None (no From, several, or no domain)."""
    froms = [value for name, value in fields if name.lower() == "from"]
    if len(froms) != 1:
        return None
    try:
        text = str(make_header(decode_header(froms[0])))
    except (ValueError, LookupError, UnicodeDecodeError):
        text = froms[0]
    addresses = [address for _, address in email.utils.getaddresses([text]) if address]
    if len(addresses) != 1 or "@" not in addresses[0]:
        return None
    domain = addresses[0].rpartition("@")[2].strip().rstrip(".").lower()
    return domain or None


def parse_record(text: str, found_at: str) -> DmarcRecord | None:
    tags: dict[str, str] = {}
    for part in text.split(";"):
        name, sep, value = part.partition("=")
        if sep:
            tags.setdefault(name.strip().lower(), value.strip())
    if tags.get("v") != "DMARC1" or tags.get("p", "").lower() not in ("none", "quarantine", "reject"):
        return None
    sp = tags.get("sp", "").lower()
    pct = decimal(tags.get("pct", ""))  # the domain owner's text: "²" or 5,000 digits failed the content check
    return DmarcRecord(
        tags["p"].lower(),
        sp if sp in ("none", "quarantine", "reject") else None,
        "s" if tags.get("adkim", "r").lower() == "s" else "r",
        "s" if tags.get("aspf", "r").lower() == "s" else "r",
        min(pct, 100) if pct is not None else 100,
        found_at,
    )


async def find_record(resolver: Resolver, domain: str) -> DmarcRecord | None:
    """The record at _dmarc.DOMAIN, else at the organizational domain (RFC 7489 6.6.3)."""
    names = [domain]
    org = organizational_domain(domain)
    if org != domain:
        names.append(org)
    for name in names:
        answer = await resolver.query(f"_dmarc.{name}", "TXT")
        records = [r.decode("utf-8", "replace") for r in answer.records if r.lower().startswith(b"v=dmarc1")]
        if len(records) == 1:
            return parse_record(records[0], name)
        if len(records) > 1:
            return None  # several records: as if there were none (RFC 7489 6.6.3)
    return None


def aligned(identifier: str, domain: str, mode: str) -> bool:
    identifier, domain = identifier.lower().rstrip("."), domain.lower().rstrip(".")
    if mode == "s":
        return identifier == domain
    return organizational_domain(identifier) == organizational_domain(domain)


async def evaluate(
    resolver: Resolver,
    fields: Sequence[tuple[str, str]],
    spf: Mapping[str, Any] | None,
    dkim: Sequence[DkimResult],
) -> DmarcResult:
    domain = from_domain(fields)
    if domain is None:
        reason = "no From header" if first(list(fields), "From") is None else "not exactly one From address"
        return DmarcResult("none", "", reason=reason)
    try:
        record = await find_record(resolver, domain)
    except DnsTempError as exc:
        return DmarcResult("temperror", domain, reason=exc.problem)
    if record is None:
        return DmarcResult("none", domain, reason="no DMARC record")
    policy = record.policy
    if record.found_at != domain and record.subdomain_policy is not None:
        policy = record.subdomain_policy
    passes = []
    # SPF of MAIL FROM, or of the HELO name when MAIL FROM is <> (RFC 7489 4.1)
    if spf is not None and spf.get("result") == "pass" and aligned(str(spf.get("domain", "")), domain, record.aspf):
        passes.append(f"spf {spf.get('domain')}")
    passes.extend(f"dkim {r.domain}" for r in dkim if r.result == "pass" and aligned(r.domain, domain, record.adkim))
    if passes:
        return DmarcResult("pass", domain, policy, reason=f"aligned {', '.join(passes)}")
    why = []
    why.append("SPF not evaluated" if spf is None else f"SPF {spf.get('result')} for {spf.get('domain', '?')}")
    signatures = ", ".join(f"{r.result} d={r.domain}" for r in dkim) or "none"
    why.append(f"DKIM {signatures}")
    # Only a complete evaluation is proof: without SPF, or with a DKIM signature left unchecked, it is not.
    complete = spf is not None and all(r.result in ("pass", "fail", "permerror") for r in dkim)
    applied = complete and (record.pct >= 100 or random.randrange(100) < record.pct)
    return DmarcResult("fail", domain, policy, applied, "; ".join(why))
