"""`mailwarden check-sender DOMAIN|IP`: the session's network and sender checks on demand.

For support: a report that can be sent to the sender's administrator as it is. For a domain: its
MX records and whether they are valid, the addresses of the MX hosts with their reverse DNS and
forward confirmation, the SPF record and its result for each of those hosts (does the domain
authorize its own mail servers?), and their DNS list status. For an address: reverse DNS,
forward confirmation, generic-name detection and DNS lists. Each problem is worded with the same
catalog sentence the gateway would send, plus the remedy.
"""

from __future__ import annotations

import asyncio
import ipaddress
from datetime import UTC, datetime
from typing import Any, Final

from mailwarden import catalog
from mailwarden.catalog import Lang
from mailwarden.checks.dnsbl import ZoneQuery, build_zones
from mailwarden.checks.dnsbl import inspect as inspect_lists
from mailwarden.checks.rdns import GenericNames
from mailwarden.checks.rdns import inspect as inspect_rdns
from mailwarden.checks.sender_domain import inspect as inspect_domain
from mailwarden.config import Config
from mailwarden.dns import DnsTempError, Resolver
from mailwarden.spf import check_host
from mailwarden.text import printable

MAX_ADDRESSES = 10


# Said of a domain whose SPF record fails its own mail host.
SPF_NOTE: Final[dict[Lang, str]] = {
    "en": "{domain}'s SPF record does not authorize its own mail server {name}",
    "de": "Der SPF-Eintrag von {domain} erlaubt den eigenen Mailserver {name} nicht",
}


def finding(reason: str, lang: Lang, **values: object) -> dict[str, Any]:
    """A problem as the gateway would word it: reason, reply code, sentence (as sent: English) and
    the remedy in `lang`."""
    entry = catalog.get(reason)
    return {
        "reason": reason,
        "smtp_code": entry.smtp_code,
        "enhanced_code": entry.enhanced,
        "reply": catalog.render(entry.reply, reason, values),
        "remedy": catalog.render(entry.remedy[lang], reason, values),
    }


def dns_problem(what: str, error: DnsTempError, lang: Lang) -> dict[str, Any]:
    return {**finding("infra.dns_tempfail", lang, what=what), "dns_error": str(error)}


class SenderCheck:
    def __init__(self, config: Config, resolver: Resolver, lang: Lang) -> None:
        self.config = config
        self.resolver = resolver
        self.lang = lang
        self.zones: list[ZoneQuery] = build_zones(config.dnsbl, resolver)
        self.generic = GenericNames(config.rdns.generic_keywords, config.rdns.generic_patterns)

    async def address(self, ip: str) -> dict[str, Any]:
        """Reverse DNS and DNS lists of one address, with the findings the gateway would refuse for."""
        report: dict[str, Any] = {"address": ip, "findings": []}
        findings: list[dict[str, Any]] = report["findings"]
        try:
            rdns = await inspect_rdns(self.resolver, ip, self.generic)
        except DnsTempError as exc:
            findings.append(dns_problem(f"the reverse DNS of {ip}", exc, self.lang))
        else:
            report["ptr"] = rdns.ptr
            report["forward"] = rdns.forward
            report["confirmed_name"] = rdns.confirmed
            report["generic"] = rdns.generic
            if not rdns.ptr:
                findings.append(finding("client.no_rdns", self.lang, client_ip=ip))
            elif rdns.confirmed is None:
                findings.append(finding("client.fcrdns_mismatch", self.lang, client_ip=ip, client_name=rdns.ptr[0]))
            if rdns.generic:
                name = rdns.confirmed or rdns.ptr[0]
                findings.append(
                    finding("client.dynamic_rdns", self.lang, client_ip=ip, client_name=name, why=rdns.generic)
                )
        lists = await inspect_lists(self.zones, ip)
        report["dnsbl"] = {
            "zones": [zone.name for zone in self.zones],
            "listings": [listing.to_dict() for listing in lists.listings],
            "allowed_by": lists.allowed_by.to_dict() if lists.allowed_by else None,
            "list_errors": lists.errors,
        }
        for listing in lists.listings:
            txt = f" The list says: {listing.txt}" if listing.txt else ""
            findings.append(
                finding(
                    "client.dnsbl",
                    self.lang,
                    client_ip=ip,
                    zone=listing.zone,
                    meaning=listing.meaning,
                    advice=listing.remedy,
                    txt=txt,
                )
            )
        for zone, error in lists.failures.items():
            findings.append(dns_problem(f"the DNS list {zone}", error, self.lang))
        return report

    async def domain(self, domain: str) -> dict[str, Any]:
        report: dict[str, Any] = {"domain": domain, "findings": []}
        findings: list[dict[str, Any]] = report["findings"]
        try:
            mail = await inspect_domain(self.resolver, domain)
        except DnsTempError as exc:
            findings.append(dns_problem(f"the domain {domain}", exc, self.lang))
            return report
        report["mail_hosts"] = mail.to_dict()
        if mail.problem:
            findings.append(
                finding(mail.problem, self.lang, domain=domain, sender=f"postmaster@{domain}", **mail.values)
            )
        report["spf_records"] = await self._spf_records(domain, findings)
        hosts = [(host.name, address) for host in mail.mx for address in host.addresses]
        hosts += [(domain, address) for address in mail.implicit]
        report["hosts"] = await asyncio.gather(*(self._host(domain, n, a) for n, a in hosts[:MAX_ADDRESSES]))
        for host in report["hosts"]:
            findings.extend(host["findings"])
        return report

    async def _spf_records(self, domain: str, findings: list[dict[str, Any]]) -> list[str]:
        try:
            texts = await self.resolver.query(domain, "TXT")
        except DnsTempError as exc:
            findings.append(dns_problem(f"the SPF record of {domain}", exc, self.lang))
            return []
        records = [t.decode("utf-8", "replace") for t in texts.records]
        return [printable(r) for r in records if r.lower().startswith("v=spf1")]

    async def _host(self, domain: str, name: str, address: str) -> dict[str, Any]:
        report = await self.address(address)
        report["name"] = name
        spf = await check_host(self.resolver, address, f"postmaster@{domain}", name, self.config.smtp.hostname)
        report["spf"] = spf.to_dict()
        if spf.result == "fail":
            report["findings"].append(
                {
                    **finding("sender.spf_fail", self.lang, domain=domain, client_ip=address, spf_detail=spf.detail),
                    "note": SPF_NOTE[self.lang].format(domain=domain, name=name),
                }
            )
        return report

    async def run(self, target: str) -> dict[str, Any]:
        try:
            ipaddress.ip_address(target)
        except ValueError:
            report = await self.domain(target.strip().rstrip(".").lower())
        else:
            report = await self.address(target)
        report["checked_at"] = datetime.now(UTC).isoformat(timespec="seconds")
        report["checked_by"] = self.config.smtp.hostname
        report["ok"] = not report["findings"]
        return report


async def check_sender(config: Config, target: str, lang: Lang = "en") -> dict[str, Any]:
    resolver = Resolver.from_config(config.dns)
    try:
        return await SenderCheck(config, resolver, lang).run(target)
    finally:
        resolver.close()


# ---------------------------------------------------------------------------- text
def render_text(report: dict[str, Any]) -> str:
    lines: list[str] = []
    subject = report.get("domain") or report.get("address")
    lines.append(f"Sender check for {subject} by {report['checked_by']} at {report['checked_at']}")
    lines.append("")
    if "domain" in report:
        _domain_text(report, lines)
    else:
        _address_text(report, lines, indent="")
    lines.append("")
    if report["ok"]:
        lines.append("Result: no problems found; our mail servers would accept mail from here.")
    else:
        lines.append(f"Result: {len(report['findings'])} problem(s); our mail servers would answer:")
        for item in report["findings"]:
            lines.append(f"  - {item['smtp_code']} {item['enhanced_code']} {item['reply']}")
            lines.append(f"    What to do: {item['remedy']}")
            if "note" in item:
                lines.append(f"    Note: {item['note']}")
    return "\n".join(lines) + "\n"


def _domain_text(report: dict[str, Any], lines: list[str]) -> None:
    mail = report.get("mail_hosts")
    if mail is None:
        lines.append("The domain could not be looked up (temporary DNS failure).")
        return
    if not mail["exists"]:
        lines.append(f"The domain {report['domain']} does not exist in DNS.")
    elif mail["mx"]:
        lines.append("MX records:")
        for host in mail["mx"]:
            state = (
                "an IP address written as a hostname (invalid)"
                if host.get("ip_literal")
                else ", ".join(host.get("addresses", [])) or "does not resolve"
            )
            lines.append(f"  {host.get('preference', 0)} {host['name']}.  ->  {state}")
    else:
        addresses = ", ".join(mail.get("implicit_mx_addresses", [])) or "none"
        lines.append(f"No MX records; the domain's own addresses act as mail host: {addresses}")
    records = report.get("spf_records", [])
    lines.append("")
    lines.append(f"SPF record: {records[0]}" if len(records) == 1 else f"SPF records: {records or 'none'}")
    for host in report.get("hosts", []):
        lines.append("")
        lines.append(f"Mail host {host['name']} [{host['address']}]:")
        _address_text(host, lines, indent="  ")
        spf = host["spf"]
        lines.append(
            f"  SPF for this host: {spf['result']}" + (f" ({spf['decided_by']})" if spf.get("decided_by") else "")
        )


def _address_text(report: dict[str, Any], lines: list[str], *, indent: str) -> None:
    if "ptr" in report:
        ptr = ", ".join(report["ptr"]) or "none"
        confirmed = report.get("confirmed_name")
        lines.append(f"{indent}Reverse DNS (PTR): {ptr}")
        lines.append(
            f"{indent}Forward-confirmed: "
            + (f"yes, {confirmed} resolves back to {report['address']}" if confirmed else "no")
        )
        if report.get("generic"):
            lines.append(f"{indent}Generic (dynamic-looking) name: {report['generic']}")
    lists = report["dnsbl"]
    if not lists["zones"]:
        lines.append(f"{indent}DNS lists: none configured")
        return
    listed = [f"{x['zone']} ({x['meaning']})" for x in lists["listings"]]
    lines.append(f"{indent}DNS lists checked: {', '.join(lists['zones'])}")
    lines.append(f"{indent}Listed on: {', '.join(listed) if listed else 'none'}")
    if lists["allowed_by"]:
        lines.append(f"{indent}Allowlisted by: {lists['allowed_by']['zone']}")
    for zone, answers in lists["list_errors"].items():
        lines.append(f"{indent}Warning: {zone} answered {', '.join(answers)} (a list error, not a listing)")


def command(config: Config, target: str, fmt: str) -> int:
    """Print the report; exit status 0 when nothing is wrong, 1 when the report lists problems."""
    import json
    import sys

    report = asyncio.run(check_sender(config, target))
    if fmt == "json":
        json.dump(report, sys.stdout, ensure_ascii=False, indent=1)
        sys.stdout.write("\n")
    else:
        sys.stdout.write(render_text(report))
    return 0 if report["ok"] else 1
