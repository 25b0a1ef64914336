"""Message size: refuse at MAIL FROM when the SIZE a client declares is over the limit.

This spares both sides the transfer (RFC 1870). The real size is enforced by the gateway
itself after DATA (552 5.3.4): the DATA reader stops keeping bytes past `smtp.max_message_size`
(so a huge message costs no disk) but reads on to the final dot, so the reply comes at the
right moment (RFC 5321 4.2.5) - and no configuration of checks can accept a truncated message.
"""

from __future__ import annotations

from mailwarden.checks.base import Check, CheckContext, Verdict


class SizeCheck(Check):
    name = "size"

    async def mail(self, ctx: CheckContext) -> Verdict | None:
        assert ctx.txn is not None
        declared = ctx.txn.declared_size
        limit = ctx.config.smtp.max_message_size
        if declared is not None and declared > limit:
            return Verdict.reject("msg.too_big", size=declared, limit=limit)
        return None
