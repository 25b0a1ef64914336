"""The message index: one row per message and recipient, what searches, counts and scoping run on.

A row is the fold of the message's events (`messages.fates.build`, the trace's own fold), so the
index, a trace and `mailwarden store reindex` agree by construction: `message_rows` is the one
function the store calls as events are written and when it rebuilds the index.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Final, NamedTuple

from mailwarden.events import Event
from mailwarden.messages.fates import DECIDING_KINDS, build
from mailwarden.trace.model import MessageTrace


class IndexRow(NamedTuple):
    """One recipient of one message (`recipient` is "" for a transaction refused before any)."""

    message_key: str  # the message: the root of its linked keys
    recipient: str
    first_seen: int  # the message's first and last event (its own: the connection's are not counted)
    last_seen: int
    node: str
    sender: str | None
    sender_domain: str | None
    recipient_domain: str | None
    client_ip: str | None
    message_id: str | None
    ref: str | None
    queue_id: str | None
    status: str  # the trace's statuses (trace.model.STATUSES)
    reason: str | None
    smtp_code: int | None
    size: int | None


INDEX_FIELDS: Final = IndexRow._fields


def domain_of(address: str | None) -> str | None:
    """The domain of an address, in lower case; None without one (the null sender, a refusal before RCPT)."""
    if not address or "@" not in address:
        return None
    return address.rpartition("@")[2].lower() or None


def rows_of(trace: MessageTrace) -> list[IndexRow]:
    """The index rows of a traced message: one per recipient's fate."""
    assert trace.key is not None
    return [
        IndexRow(
            trace.key,
            fate.address,
            trace.first_seen,
            trace.last_seen,
            trace.node,
            trace.sender,
            domain_of(trace.sender),
            domain_of(fate.address),
            trace.client_ip,
            trace.message_id,
            trace.ref,
            trace.queue_id,
            fate.status,
            fate.reason,
            fate.smtp_code,
            trace.size,
        )
        for fate in trace.fates
    ]


def message_rows(root: str, events: Iterable[Event]) -> list[IndexRow]:
    """The rows of the message `root` from the events of its linked keys.

    Only events with a key count: the connection's own events (connect, HELO, disconnect, a
    client's checks) never decide a recipient's fate, and leaving them out lets the writer fold a
    message from its own events alone.
    """
    keyed = [event for event in events if event.message_key is not None]
    if not any(event.kind in DECIDING_KINDS for event in keyed):  # nothing names a recipient or refuses
        return []
    return rows_of(build(root, keyed))
