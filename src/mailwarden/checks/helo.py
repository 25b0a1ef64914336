"""helo.invalid: the name a client gives in HELO/EHLO must be a valid, fully qualified name of its own.

RFC 5321 4.1.1.1 and 2.3.5: a domain name (which must be fully qualified) or an address literal
in brackets. Refused here: bad syntax, a bare IP address without brackets, a name without a dot,
and a client that claims to be us (our hostname, one of our domains, or our address).
Like every connect/HELO verdict, it is given at RCPT so the sender's bounce names a recipient.
"""

from __future__ import annotations

import ipaddress
import re
from typing import Final

from mailwarden.checks.base import Check, CheckContext, Services, Verdict
from mailwarden.config import Config, FindingPolicy, parse_hostport

_LABEL: Final = re.compile(r"(?!-)[A-Za-z0-9-]{1,63}(?<!-)")
_LITERAL: Final = re.compile(r"\[(?:IPv6:)?([^\[\]]+)\]", re.IGNORECASE)


def helo_problem(helo: str, client_ip: str, own_names: frozenset[str], own_addresses: frozenset[str]) -> str | None:
    """What is wrong with `helo`, as a phrase for the reply; None if it is acceptable."""
    literal = _LITERAL.fullmatch(helo)
    if literal:
        try:
            address = ipaddress.ip_address(literal.group(1))
        except ValueError:
            return "the address literal does not hold a valid IP address"
        if str(address) in own_addresses and str(address) != client_ip:
            return "it is our own address"
        return None
    try:
        ipaddress.ip_address(helo)
    except ValueError:
        pass
    else:
        return f"a bare IP address must be written as an address literal in brackets, [{helo}]"
    name = helo.rstrip(".")
    if not name or len(name) > 253 or not all(_LABEL.fullmatch(label) for label in name.split(".")):
        return "it is not a syntactically valid hostname"
    if "." not in name:
        return "it is not a fully qualified domain name"
    if name.lower() in own_names:
        return "it is our own name"
    return None


def own_identity(config: Config) -> tuple[frozenset[str], frozenset[str]]:
    """Our names (hostname, local domains) and the addresses we listen on."""
    names = {config.smtp.hostname.lower().rstrip("."), *config.mail.domains}
    addresses = set()
    for listen in config.smtp.listen:
        host, _ = parse_hostport(listen)
        try:
            address = ipaddress.ip_address(host)
        except ValueError:
            continue
        if not address.is_unspecified:
            addresses.add(str(address))
    return frozenset(names), frozenset(addresses)


class HeloCheck(Check):
    name = "helo"

    def __init__(self, config: Config) -> None:
        self.policy = FindingPolicy(config.helo.action, config.helo.score)
        self.exempt = [ipaddress.ip_network(n, strict=False) for n in config.helo.exempt_networks]
        self.own_names, self.own_addresses = own_identity(config)

    @classmethod
    def create(cls, services: Services) -> Check:
        return cls(services.config)

    async def helo(self, ctx: CheckContext) -> Verdict | None:
        helo = ctx.session.helo or ""
        client_ip = ctx.session.client_ip
        if any(ipaddress.ip_address(client_ip) in network for network in self.exempt):
            return None
        problem = helo_problem(helo, client_ip, self.own_names, self.own_addresses)
        if problem is None:
            return None
        return Verdict.as_configured(self.policy, "helo.invalid", {"problem": problem}, helo=helo, problem=problem)
