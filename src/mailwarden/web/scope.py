"""Who may see which message: the one place the tracking center decides it.

Admins and support see every message. A customer sees a message only for its recipients in the
customer's domains, and only those recipients: the report is made for one of them, and every
other address in it is masked. Anything else is `NotVisible`, which pages and the API answer
with 404, exactly as for a message that does not exist, so a customer cannot tell the two apart.

Every page and API call that shows a message goes through `open_report` (the bounce page through
`linked_report`). When the message index lands, the domain test moves into the store query and
this module passes the account's domains to it.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from mailwarden.catalog import Lang
from mailwarden.store import Store
from mailwarden.store.accounts import Role
from mailwarden.trace import report
from mailwarden.trace.bounce import Bounce, bounced_recipient, mismatch
from mailwarden.trace.model import MessageTrace, RecipientFate


class NotVisible(Exception):
    """No such message, or not one this account may see (the same answer for both)."""


@dataclass(frozen=True)
class Principal:
    """The logged-in account as a request sees it."""

    name: str
    role: Role
    domains: tuple[str, ...]

    @property
    def sees_everything(self) -> bool:
        return self.role != "customer"

    def owns(self, address: str | None) -> bool:
        """Whether a recipient address is in one of this customer's domains."""
        if not address or "@" not in address:
            return False
        return address.rpartition("@")[2].lower().rstrip(".") in self.domains


def visible_fates(principal: Principal, trace: MessageTrace) -> list[RecipientFate]:
    if principal.sees_everything:
        return trace.fates
    return [fate for fate in trace.recipients if principal.owns(fate.address) or principal.owns(fate.mailbox)]


def _chosen(principal: Principal, trace: MessageTrace, recipient: str | None) -> str | None:
    """The recipient to report on: the one asked for if visible, else the first visible one."""
    visible = visible_fates(principal, trace)
    if not visible:
        raise NotVisible(trace.id)
    if recipient is None:
        return None if principal.sees_everything else visible[0].address
    fate = trace.fate(recipient)
    if fate is None or not any(fate is mine for mine in visible):
        raise NotVisible(trace.id)
    return recipient


def open_report(
    store: Store, principal: Principal, trace_id: str, *, recipient: str | None, lang: Lang, domains: Sequence[str]
) -> report.Report:
    """The redacted report of a message this account may see; NotVisible otherwise."""
    trace = report.find(store, trace_id.strip()[:40])
    if trace is None:
        raise NotVisible(trace_id)
    chosen = _chosen(principal, trace, recipient)
    return report.build_for(store, trace, recipient=chosen, lang=lang, domains=domains)


def linked_report(
    store: Store, principal: Principal, found: Bounce, ref: str, *, lang: Lang, domains: Sequence[str]
) -> report.Report | None:
    """For a ref a pasted bounce names: the report of the recipient it bounced for, if visible; None otherwise."""
    trace = report.find(store, ref)
    if trace is None or mismatch(found, trace) is not None:  # only our own reply's ref, and only its message
        return None
    visible = visible_fates(principal, trace)
    if not visible:
        return None
    wanted = bounced_recipient(found, trace)
    if wanted is not None and not any(fate is trace.fate(wanted) for fate in visible):
        wanted = None
    if wanted is None and not principal.sees_everything:
        wanted = visible[0].address
    try:
        return report.build_for(store, trace, recipient=wanted, lang=lang, domains=domains)
    except report.ReportError:
        return None


def may_verify(principal: Principal, manifest_recipient: object) -> bool:
    """A customer verifies only reports about its own recipients."""
    return principal.sees_everything or (isinstance(manifest_recipient, str) and principal.owns(manifest_recipient))
