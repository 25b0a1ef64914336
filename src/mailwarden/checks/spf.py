"""sender.spf_fail: SPF (RFC 7208) of the envelope sender, or of the HELO name for the null sender.

The result always goes into `Transaction.results["spf"]` and so into the Authentication-Results
header of accepted mail. Fail refuses (550 5.7.23) or scores as configured; softfail and neutral
only tag; temperror defers (451 4.7.24); permerror (a broken record) tags or refuses as configured.
"""

from __future__ import annotations

from mailwarden.addresses import AddressError, split
from mailwarden.checks.base import Action, Check, CheckContext, Services, Verdict
from mailwarden.checks.dnsfail import dns_failure
from mailwarden.config import SpfConfig
from mailwarden.dns import DnsTempError, Resolver
from mailwarden.spf import check_host


class SpfCheck(Check):
    name = "spf"

    def __init__(self, config: SpfConfig, resolver: Resolver, hostname: str) -> None:
        self.config = config
        self.resolver = resolver
        self.hostname = hostname

    @classmethod
    def create(cls, services: Services) -> Check:
        return cls(services.config.spf, services.resolver, services.config.smtp.hostname)

    async def mail(self, ctx: CheckContext) -> Verdict | None:
        assert ctx.txn is not None
        sender = ctx.txn.sender or ""
        helo = ctx.session.helo or ""
        if sender:
            try:
                split(sender)
            except AddressError:
                return None
        elif not helo or helo.startswith("["):
            return None  # <> from a client without a HELO name: no identity to check
        result = await check_host(self.resolver, ctx.session.client_ip, sender, helo, self.hostname)
        ctx.txn.results["spf"] = result.to_dict()
        values = {"domain": result.domain, "client_ip": result.client_ip, "spf_detail": result.detail}
        detail = result.to_dict()
        if result.result == "fail":
            if self.config.fail == "reject":
                return Verdict(Action.REJECT, "sender.spf_fail", values, detail)
            if self.config.fail == "score":
                return Verdict(Action.SCORE, "sender.spf_fail", values, detail, score=self.config.fail_score)
        elif result.result == "temperror":
            if ctx.config.dns.fail_open:
                return dns_failure(
                    ctx, f"the SPF record of {result.domain}", DnsTempError(result.domain, "TXT", result.detail)
                )
            return Verdict(Action.TEMPFAIL, "sender.spf_temperror", values, detail)
        elif result.result == "permerror" and self.config.permerror == "reject":
            return Verdict(Action.REJECT, "sender.spf_permerror", values, detail)
        return None
