"""SPF (RFC 7208) evaluation over our resolver: spftrace's check_host() with our DNS injected.

spftrace is asynchronous and keeps an evaluation trace, from which the reply names the record
and the term that decided. It must never use its own default nameserver (a public resolver):
every lookup goes through `mailwarden.dns.Resolver`, so it shares the cache and the
nameservers of the session path, and a DNS failure is a temperror, as RFC 7208 2.6.6 says.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Final

import spftrace
from spftrace.evaluator import valid_domain
from spftrace.macros import MacroContext, expand, truncate_domain
from spftrace.resolver import NOERROR, NXDOMAIN, SERVFAIL, DnsError

from mailwarden.dns import DnsTempError, NameType, Resolver

RESULTS: Final = ("pass", "fail", "softfail", "neutral", "none", "permerror", "temperror")
TIME_LIMIT: Final = 20.0
_NAME_TYPES: Final[dict[str, NameType]] = {
    "A": "A",
    "AAAA": "AAAA",
    "PTR": "PTR",
}  # RFC 7208 4.6.4 suggests at least 20 seconds for the whole evaluation


class _Transport(spftrace.BaseResolver):
    """spftrace's DNS transport, answered by our resolver."""

    def __init__(self, resolver: Resolver) -> None:
        self.resolver = resolver

    async def _lookup(self, name: str, rtype: str) -> tuple[str, list[str]]:
        try:
            if rtype == "TXT":
                texts = await self.resolver.query(name, "TXT")
                return _rcode(texts.nxdomain), [t.decode("utf-8", "replace") for t in texts.records]
            if rtype == "MX":
                mx = await self.resolver.query(name, "MX")
                return _rcode(mx.nxdomain), [record.exchange for record in mx.records]
            if rtype in _NAME_TYPES:
                names = await self.resolver.query(name, _NAME_TYPES[rtype])
                return _rcode(names.nxdomain), list(names.records)
        except DnsTempError:
            return SERVFAIL, []
        raise ValueError(f"SPF does not look up {rtype} records")


class _Evaluator(spftrace.Evaluator):
    """spftrace 0.3.0 refuses explanations containing spaces (its macro expansion omits the SP that
    RFC 7208 6.2 allows in an explain-string), so `exp=` texts were lost. An explain-string is
    macro-strings separated by spaces, so each piece is expanded on its own."""

    async def _explanation(self, ip: Any, domain: str, sender: str, helo: str, exp_term: Any) -> str | None:
        context = MacroContext(
            ip=ip, sender=sender, helo=helo, domain=domain, receiver=self.receiver, session=self.session
        )
        try:
            with self.session.void_exempt():
                target = truncate_domain(await expand(exp_term.arg or "", context))
                if not valid_domain(target):
                    return None
                _, answers = await self.session.query(target, "TXT")
                if len(answers) != 1:
                    return None
                text = " ".join([await expand(piece, context, exp=True) for piece in answers[0].split(" ")])
        except (spftrace.SpfError, DnsError, ValueError):
            return None
        self.trace.add("exp", domain=target, text=text)
        return text


def _rcode(nxdomain: bool) -> str:
    return NXDOMAIN if nxdomain else NOERROR


@dataclass(frozen=True)
class SpfResult:
    """What `Transaction.results["spf"]` holds (as a dict) and Authentication-Results shows."""

    result: str  # one of RESULTS
    domain: str  # the domain whose policy was evaluated
    scope: str  # "mailfrom", or "helo" for the null sender
    identity: str  # the checked identity: the sender address, or postmaster@helo
    client_ip: str
    record: str | None = None  # the domain's SPF record, when there was one
    decided_by: str | None = None  # the term that matched, e.g. "-all" or "ip4:192.0.2.0/24"
    problem: str | None = None  # why it is none/permerror/temperror
    explanation: str | None = None  # the domain's exp= text for a fail

    def to_dict(self) -> dict[str, Any]:
        return {key: value for key, value in vars(self).items() if value is not None}

    @property
    def detail(self) -> str:
        """A short phrase for replies: what decided."""
        if self.decided_by:
            return f"the record {self.record!r} matched {self.decided_by}"
        if self.problem:
            return self.problem
        return f"the record {self.record!r} did not match" if self.record else "no SPF record"


async def check_host(
    resolver: Resolver, client_ip: str, sender: str, helo: str, receiver: str = "unknown"
) -> SpfResult:
    """Evaluate SPF for the MAIL FROM identity, or for the HELO identity when the sender is <>.

    `receiver` is our hostname, the %{r} macro of explanations (RFC 7208 7.3)."""
    scope = "mailfrom" if sender else "helo"
    identity = sender if sender else f"postmaster@{helo}"
    domain = identity.rpartition("@")[2].lower()
    evaluator = _Evaluator(_Transport(resolver), spftrace.Limits(time_limit=TIME_LIMIT), receiver=receiver)
    outcome = await evaluator.evaluate(client_ip, identity, helo)
    record = decided_by = problem = None
    for event in outcome.trace.events:
        if event.depth != 0:
            continue
        if event.kind in ("policy_parsed", "parse_error") and record is None:
            record = str(event.data.get("policy"))
        elif event.kind == "mech_match":
            decided_by = str(event.data.get("raw"))
        elif event.kind == "exit":
            problem = str(event.data.get("reason"))
    return SpfResult(
        result=outcome.result,
        domain=domain,
        scope=scope,
        identity=identity,
        client_ip=client_ip,
        record=record,
        decided_by=decided_by,
        problem=problem,
        explanation=outcome.explanation,
    )
