"""Who may see which message: the one place the tracking center decides it.

Admins and support see every message. A customer sees the recipients of a message that are in
the customer's domains, and nothing else. The rule is the message index's: every question a
customer asks - a search, the counts, the dashboard, opening a message, a report or a download -
goes to the store with `Principal.scope` as the index's `allowed_domains`, so the domain test is
part of the query and no other filter (ref, Message-ID, client address, a recipient asked for)
reaches past it. A message none of whose rows is in scope is `NotVisible` before its events are
read; pages and the API answer it with 404, exactly as for a message that does not exist, so a
customer cannot tell the two apart. The report is made for one visible recipient, and every other
address in it is masked (`trace/evidence.redactor`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from mailwarden.catalog import Lang
from mailwarden.store import Store
from mailwarden.store.accounts import Role
from mailwarden.store.base import IndexQuery
from mailwarden.trace import report
from mailwarden.trace.bounce import Bounce, bounced_recipient, mismatch
from mailwarden.trace.correlate import key_of_id, load
from mailwarden.trace.model import MessageTrace, RecipientFate

MAX_ID = 40  # longer than any ref, message key or E<event id>


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

    @property
    def scope(self) -> frozenset[str] | None:
        """The recipient domains every store query of this account is limited to (None: all)."""
        return None if self.sees_everything else frozenset(self.domains)


@dataclass(frozen=True)
class Opened:
    """A message as an account may see it: the report on one recipient, and the recipients it may see."""

    report: report.Report
    trace: MessageTrace
    visible: list[RecipientFate]


def _visible(store: Store, principal: Principal, key: str, recipient: str | None = None) -> set[str] | None:
    """The recipients (lower case) of the message `key` in the account's scope, by the index; None: all."""
    if principal.scope is None:
        return None
    query = IndexQuery(message_key=key, recipient=recipient, allowed_domains=principal.scope)
    return {row.recipient.lower() for row in store.index_page(query, limit=1).rows if row.recipient}


def _fates(trace: MessageTrace, visible: set[str] | None) -> list[RecipientFate]:
    if visible is None:
        return trace.fates
    return [fate for fate in trace.recipients if fate.address.lower() in visible]


def _message(store: Store, principal: Principal, trace_id: str) -> tuple[MessageTrace, list[RecipientFate]]:
    """The message an id names and its visible recipients; NotVisible when there are none."""
    key = key_of_id(store, trace_id.strip()[:MAX_ID])
    if key is None:
        raise NotVisible(trace_id)
    visible = _visible(store, principal, key)
    if visible is not None and not visible:  # out of scope: its events are never read
        raise NotVisible(trace_id)
    traces = load(store, [key])
    if not traces:
        raise NotVisible(trace_id)
    fates = _fates(traces[0], visible)
    if not fates:
        raise NotVisible(trace_id)
    return traces[0], fates


def _chosen(
    principal: Principal, trace: MessageTrace, visible: list[RecipientFate], recipient: str | None
) -> str | None:
    """The recipient to report on: the one asked for if visible, else (for a customer) the first visible one."""
    if recipient is None:
        return None if principal.sees_everything else visible[0].address
    fate = trace.fate(recipient)
    if fate is None or not any(fate is mine for mine in visible):
        raise NotVisible(trace.id)
    return recipient


def open_report(
    store: Store, principal: Principal, trace_id: str, *, recipient: str | None, lang: Lang, domains: Sequence[str]
) -> Opened:
    """The redacted report of a message this account may see; NotVisible otherwise (a session
    without a message too: there is nothing to report)."""
    trace, visible = _message(store, principal, trace_id)
    chosen = _chosen(principal, trace, visible, recipient)
    try:
        made = report.build_for(store, trace, recipient=chosen, lang=lang, domains=domains)
    except report.ReportError:
        raise NotVisible(trace_id) from None
    return Opened(made, trace, visible)


def linked_report(
    store: Store, principal: Principal, found: Bounce, ref: str, *, lang: Lang, domains: Sequence[str]
) -> report.Report | None:
    """For a ref a pasted bounce names: the report of the recipient it bounced for, if visible; None otherwise."""
    try:
        trace, visible = _message(store, principal, ref)
    except NotVisible:
        return None
    if mismatch(found, trace) is not None:  # only our own reply's ref, and only its message
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


def may_verify(store: Store, principal: Principal, manifest: dict[str, object]) -> bool:
    """A customer verifies only reports about a recipient it may see."""
    if principal.sees_everything:
        return True
    trace_id, recipient = manifest.get("id"), manifest.get("recipient")
    if not isinstance(trace_id, str) or not isinstance(recipient, str):
        return False
    key = key_of_id(store, trace_id[:MAX_ID])
    return key is not None and bool(_visible(store, principal, key, recipient))
