"""What a trace knows about one message: its recipients' fates and the events behind them.

Free of any presentation: the CLI, the reports and (later) the web tracking center all render
these objects. The JSON form (`to_json`) is a contract, documented in docs/trace-json.md.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Final

from mailwarden.events import Event, us_to_iso
from mailwarden.messages.keys import ACCESS_KINDS, CONNECTION_KINDS

__all__ = ["ACCESS_KINDS", "CONNECTION_KINDS", "STATUSES", "Access", "Attempt", "MessageTrace", "RecipientFate"]

# design.md "Contracts": the statuses of a recipient, in the order a message lives through them.
STATUSES: Final = (
    "rejected",
    "tempfailed",
    "accepted",
    "delivered",
    "junk",
    "deferred",
    "bounced",
    "retrieved",
    "deleted",
)


@dataclass
class Access:
    """A later retrieval or deletion of a delivered copy."""

    kind: str  # retrieve | delete
    at: int
    client_ip: str | None
    protocol: str  # pop3, imap, ... (the event's source, or detail.protocol for ingested logs)
    event: Event


@dataclass
class Attempt:
    """Another transaction for the same sender and recipient: an earlier try or the sender's retry."""

    id: str
    at: int
    status: str
    reason: str | None
    client_ip: str | None


@dataclass
class RecipientFate:
    address: str
    status: str
    reason: str | None = None
    smtp_code: int | None = None
    enhanced_code: str | None = None
    reply: str | None = None
    at: int = 0  # when the status was reached
    mailbox: str | None = None
    folder: str | None = None
    uid: str | None = None
    delivered_at: int | None = None
    decided_by: Event | None = None  # the event that set the refusal or delivery
    accesses: list[Access] = field(default_factory=list)
    earlier: list[Attempt] = field(default_factory=list)  # e.g. the greylisted first try
    later: list[Attempt] = field(default_factory=list)  # the sender's retries after a 4xx

    def to_json(self) -> dict[str, Any]:
        return {
            "address": self.address or None,  # None: refused before any recipient was named
            "status": self.status,
            "reason": self.reason,
            "smtp_code": self.smtp_code,
            "enhanced_code": self.enhanced_code,
            "reply": self.reply,
            "at": us_to_iso(self.at) if self.at else None,
            "mailbox": self.mailbox,
            "folder": self.folder,
            "accesses": [
                {"kind": a.kind, "at": us_to_iso(a.at), "client_ip": a.client_ip, "protocol": a.protocol}
                for a in self.accesses
            ],
            "earlier_attempts": [_attempt_json(a) for a in self.earlier],
            "later_attempts": [_attempt_json(a) for a in self.later],
        }


def _attempt_json(attempt: Attempt) -> dict[str, Any]:
    return {
        "id": attempt.id,
        "at": us_to_iso(attempt.at),
        "status": attempt.status,
        "reason": attempt.reason,
        "client_ip": attempt.client_ip,
    }


@dataclass
class MessageTrace:
    """One message (one SMTP transaction at our gateway, or one life of a foreign MTA's queue file) and
    everything after it: the events of its key and of the keys linked to it (messages/keys.py)."""

    id: str  # the ref, or E<event id> for foreign messages without one
    ref: str | None
    events: list[Event]
    recipients: list[RecipientFate]
    first_seen: int
    last_seen: int
    node: str
    client_ip: str | None = None
    client_name: str | None = None
    helo: str | None = None
    tls: str | None = None
    sender: str | None = None
    message_id: str | None = None
    queue_id: str | None = None
    size: int | None = None
    outcome: RecipientFate | None = None  # the fate when no recipient was named (e.g. refused at MAIL)
    key: str | None = None  # the message key (messages/keys.py): the root of the keys linked to it

    @property
    def fates(self) -> list[RecipientFate]:
        """The recipients' fates, or the message-level one when the transaction got no recipient."""
        if self.recipients:
            return self.recipients
        return [self.outcome] if self.outcome is not None else []

    def fate(self, address: str | None) -> RecipientFate | None:
        if address is None:
            return self.fates[0] if self.fates else None
        wanted = address.lower()
        for fate in self.recipients:
            if wanted in (fate.address.lower(), (fate.mailbox or "").lower()):
                return fate
        return None

    def to_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "key": self.key,
            "ref": self.ref,
            "first_seen": us_to_iso(self.first_seen),
            "last_seen": us_to_iso(self.last_seen),
            "node": self.node,
            "client_ip": self.client_ip,
            "client_name": self.client_name,
            "helo": self.helo,
            "tls": self.tls,
            "sender": self.sender,
            "message_id": self.message_id,
            "queue_id": self.queue_id,
            "size": self.size,
            "recipients": [fate.to_json() for fate in self.fates],
            "events": [event.to_json() for event in self.events],
        }
