"""Message size: refuse early on the SIZE a client declares at MAIL, and after DATA on the real size.

The DATA reader stops keeping bytes once the limit is passed (so a huge message costs no disk)
but reads on to the final dot, so the reply comes at the right moment (RFC 5321 4.2.5).
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

    async def data(self, ctx: CheckContext) -> Verdict | None:
        assert ctx.txn is not None and ctx.txn.spool is not None
        spool = ctx.txn.spool
        limit = ctx.config.smtp.max_message_size
        if spool.overflowed or spool.size > limit:
            return Verdict.reject("msg.too_big", size=spool.received, limit=limit)
        return None
