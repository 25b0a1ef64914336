"""What a check answers when DNS cannot give a definitive answer: 4xx, or a logged pass with fail-open.

A DNS outage must never become a permanent refusal (the sender would give up) and never a
silent accept. With `[dns] fail_open = true` the operator chooses availability: the check
passes, a warning is logged and the event records the failure (a TAG verdict).
"""

from __future__ import annotations

import logging

from mailwarden.checks.base import Action, CheckContext, Verdict
from mailwarden.dns import DnsTempError

log = logging.getLogger(__name__)


def dns_failure(
    ctx: CheckContext, what: str, error: DnsTempError, *, smtp_code: int | None = None, enhanced: str | None = None
) -> Verdict:
    """infra.dns_tempfail for `what` ("the blocklist zen.spamhaus.org"), or the fail-open pass."""
    detail = {"what": what, "dns_error": str(error)}
    if ctx.config.dns.fail_open:
        log.warning(
            "DNS failure while checking %s (%s): passed because [dns] fail_open is on (session %s, client %s)",
            what,
            error,
            ctx.session.id,
            ctx.session.client_ip,
        )
        return Verdict(Action.TAG, "infra.dns_tempfail", {"what": what}, {**detail, "fail_open": True})
    return Verdict(
        Action.TEMPFAIL, "infra.dns_tempfail", {"what": what}, detail, smtp_code=smtp_code, enhanced=enhanced
    )
