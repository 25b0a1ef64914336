"""A message's fate: its events, in the order they happened, folded into each recipient's status.

One pure function (`build`) used by the trace (trace/correlate.py, which adds the connection's
own events for the timeline) and by the message index (`messages/index.py`), so that a search,
a count and a trace never disagree about a recipient's status.
"""

from __future__ import annotations

from bisect import bisect_right, insort
from collections.abc import Iterable, Sequence
from typing import Final

from mailwarden.events import Event
from mailwarden.messages.keys import (
    ACCESS_KINDS,
    CLOCK_SLACK_US,
    MAILBOX_ACTIONS,
    MAILBOX_SERVERS,
    handoff_session,
)
from mailwarden.trace.model import Access, MessageTrace, RecipientFate

DOWNSTREAM_KINDS: Final = ("deliver", "retrieve", "delete", "defer", "bounce")
# The kinds that give a message a recipient's fate or its own (`build`): without one, it has none.
DECIDING_KINDS: Final = frozenset({"rcpt", "reject", "tempfail", "greylist", "deliver", "defer", "bounce"})
MAILBOX_ACTION_KINDS: Final = frozenset({"deliver", "delete"})
SECOND_US: Final = 1_000_000


def _downstream(event: Event) -> bool:
    return event.source in MAILBOX_SERVERS and event.kind in DOWNSTREAM_KINDS


def _mailbox_delivery(event: Event) -> bool:
    """A mailbox server storing a message handed to it (LMTP/LDA), not a client's copy or an access."""
    return (
        event.source in MAILBOX_SERVERS
        and event.kind in ("deliver", "defer")
        and event.detail.get("action") not in MAILBOX_ACTIONS
    )


def _answered(handing: Event, stored: Event) -> bool:
    """Whether a mailbox server's delivery answered an MTA's delivery: the LMTP session both name,
    else the recipient (to place it right before that delivery)."""
    session = handoff_session(handing)
    if session is not None and stored.session:
        return session == stored.session
    return stored.recipient is None or stored.recipient.lower() in _addresses([handing])


def _addresses(events: Iterable[Event]) -> set[str]:
    found: set[str] = set()
    for event in events:
        if event.recipient:
            found.add(event.recipient.lower())
        mailbox = event.detail.get("mailbox")
        if isinstance(mailbox, str):
            found.add(mailbox.lower())
    return found


class _Fates:
    """Recipient states while walking a message's events in order."""

    __slots__ = ("acknowledged", "by_address", "by_mailbox")

    def __init__(self) -> None:
        self.by_address: dict[str, RecipientFate] = {}
        self.by_mailbox: dict[str, RecipientFate] = {}  # the first recipient stored in each
        self.acknowledged: set[str] = set()  # got our 250 after DATA

    def get(self, address: str) -> RecipientFate:
        """The recipient of that address, or of that mailbox (an alias delivered under its mailbox's name)."""
        lowered = address.lower()
        fate = self.by_address.get(lowered) or self.by_mailbox.get(lowered)
        if fate is None:
            fate = RecipientFate(address=address, status="accepted")
            self.by_address[lowered] = fate
        return fate

    def stored_in(self, fate: RecipientFate, mailbox: str | None) -> None:
        if mailbox:
            fate.mailbox = mailbox
            self.by_mailbox.setdefault(mailbox.lower(), fate)

    def open(self) -> list[RecipientFate]:
        """Recipients accepted at RCPT whose transaction has not ended yet."""
        return [f for key, f in self.by_address.items() if f.status == "accepted" and key not in self.acknowledged]


def _decide(fate: RecipientFate, status: str, event: Event) -> None:
    fate.status = status
    fate.reason = event.reason
    fate.smtp_code = event.smtp_code
    fate.enhanced_code = event.enhanced_code
    fate.reply = event.reply
    fate.at = event.ts
    fate.decided_by = event


def _refusal(event: Event) -> str:
    if event.kind == "reject" or (event.smtp_code is not None and event.smtp_code >= 500):
        return "rejected"
    return "tempfailed"


_RANK: Final = {"retrieve": 1, "delete": 2}  # what may come first when stamps cannot tell


def _latest(times: Sequence[int], bound: int) -> int:
    """The latest of the sorted `times` not after `bound` (0 when there is none)."""
    index = bisect_right(times, bound)
    return times[index - 1] if index else 0


def causal_order(events: Iterable[Event]) -> list[tuple[int, Event]]:
    """The events in the order they happened, each with the time it is placed at.

    By time, except where a foreign log's whole-second stamps or another node's clock (up to
    `CLOCK_SLACK_US` off) cannot tell: a mailbox server's delivery is placed right before the MTA's
    delivery that handed it over (it answered that delivery); an access never before the delivery
    of what it reads, and when stamped in whole seconds after whatever else of the message
    happened in that second, a deletion also after the retrievals. The placed time is the earliest
    the event can have happened; the event keeps its own stamp.
    """
    ordered = sorted(events, key=lambda e: (e.ts, e.id or 0))
    if not any(e.kind in _RANK or e.source in MAILBOX_SERVERS for e in ordered):  # by time is all there is
        return [(e.ts, e) for e in ordered]
    others = [e.ts for e in ordered if e.kind not in _RANK]
    handing = [e for e in ordered if e.kind == "deliver" and not _downstream(e)]
    deliveries: dict[str, list[int]] = {}
    for event in ordered:
        if event.kind == "deliver" and event.detail.get("action") not in MAILBOX_ACTIONS:
            for address in _addresses([event]):
                deliveries.setdefault(address, []).append(event.ts)
    placed: dict[int, tuple[int, int]] = {}  # index -> (time, rank)
    for index, event in enumerate(ordered):
        if _mailbox_delivery(event):
            handed = [h for h in handing if abs(h.ts - event.ts) <= CLOCK_SLACK_US and _answered(h, event)]
            if handed:
                placed[index] = (min(handed, key=lambda h: abs(h.ts - event.ts)).ts, -1)
    retrieved: dict[str, list[int]] = {}
    for kind, rank in _RANK.items():  # retrievals first: a deletion is placed after them
        for index, event in enumerate(ordered):
            if event.kind != kind:
                continue
            address = (event.recipient or "").lower()
            at = max(event.ts, _latest(deliveries.get(address, []), event.ts + CLOCK_SLACK_US))
            if event.ts % SECOND_US == 0:
                second_end = event.ts + SECOND_US - 1
                at = max(at, _latest(others, second_end))
                if kind == "delete":
                    at = max(at, _latest(retrieved.get(address, []), second_end))
            if kind == "retrieve":
                insort(retrieved.setdefault(address, []), at)
            placed[index] = (at, rank)
    ranked = sorted(((*placed.get(index, (event.ts, 0)), index), event) for index, event in enumerate(ordered))
    return [(at, event) for (at, _, _), event in ranked]


def build(key: str, events: list[Event]) -> MessageTrace:
    """The message `key` (the root of its linked keys) from its events: each recipient's fate."""
    events[:] = [event for _, event in causal_order(events)]
    fates = _Fates()
    outcome: RecipientFate | None = None
    for event in events:
        kind = event.kind
        stage = event.detail.get("stage")
        if kind == "rcpt" and event.recipient:
            fate = fates.get(event.recipient)
            fate.status, fate.at = "accepted", event.ts
            fates.stored_in(fate, event.detail.get("mailbox"))
        elif kind in ("reject", "tempfail", "greylist") and (kind != "greylist" or event.smtp_code):
            if event.recipient:
                _decide(fates.get(event.recipient), _refusal(event), event)
            elif stage in (None, "mail", "data") and fates.open():
                for fate in fates.open():
                    _decide(fate, _refusal(event), event)
            elif not fates.by_address and outcome is None:
                outcome = RecipientFate(address="", status=_refusal(event))
                _decide(outcome, outcome.status, event)
        elif kind == "data" and event.detail.get("incomplete"):
            for fate in fates.open():
                _decide(fate, "tempfailed", event.replace(reason="transaction.abandoned"))
        elif kind in MAILBOX_ACTION_KINDS and event.detail.get("action") in MAILBOX_ACTIONS:
            continue  # a client moving or flagging a stored copy: in the timeline, not a new fate
        elif kind == "deliver" and event.recipient:
            fate = fates.get(event.recipient)
            folder = event.detail.get("folder")
            junk = event.reason == "delivered.junk" or folder == "Junk"
            _decide(fate, "junk" if junk else "delivered", event)
            fates.stored_in(fate, event.detail.get("mailbox") or fate.mailbox or event.recipient)
            fate.folder, fate.uid, fate.delivered_at = folder or "INBOX", event.detail.get("uid"), event.ts
            fates.acknowledged.add(fate.address.lower())
        elif kind == "accept":
            for fate in fates.by_address.values():
                if fate.status in ("accepted", "delivered", "junk"):
                    fates.acknowledged.add(fate.address.lower())
                    if fate.status == "accepted":
                        _decide(fate, "accepted", event)
                    fate.smtp_code, fate.enhanced_code, fate.reply = event.smtp_code, event.enhanced_code, event.reply
        elif kind in ("defer", "bounce"):
            targets = [fates.get(event.recipient)] if event.recipient else list(fates.by_address.values())
            for fate in targets:
                _decide(fate, "deferred" if kind == "defer" else "bounced", event)
        elif kind in ACCESS_KINDS and event.recipient:
            _record_access(fates, event)
    for fate in fates.open():  # accepted at RCPT, but the transaction never got our 250
        fate.status = "tempfailed"
        fate.reason = fate.reason or "transaction.abandoned"
    return _summarize(key, events, list(fates.by_address.values()), outcome)


def _record_access(fates: _Fates, event: Event) -> None:
    wanted = (event.recipient or "").lower()
    uid = event.detail.get("uid")
    for fate in fates.by_address.values():
        if wanted not in (fate.address.lower(), (fate.mailbox or "").lower()):
            continue
        if isinstance(uid, str) and fate.uid and uid != fate.uid:  # our POP3: the Maildir name (IMAP uids are ints)
            continue
        protocol = str(event.detail.get("protocol") or event.source)
        fate.accesses.append(Access(event.kind, event.ts, event.client_ip, protocol, event))
        if fate.status in ("delivered", "junk", "accepted", "retrieved"):
            fate.status = "deleted" if event.kind == "delete" else "retrieved"
            fate.reason = "access.deleted" if event.kind == "delete" else "access.retrieved"
            fate.at = event.ts
        return


def _summarize(
    key: str, events: list[Event], fates: list[RecipientFate], outcome: RecipientFate | None
) -> MessageTrace:
    """The message's facts from its events, in one pass (it runs for every message a batch of
    events touches, to keep the index up to date)."""
    ref: str | None = None
    received: list[Event] = []  # what the MTA logged, not the mailbox server
    client_ip = client_name = helo = sender = message_id = queue_id = tls = None
    size: int | None = None
    for event in events:
        if event.message_key == key and event.ref == key:
            ref = key  # our gateway's message
        if event.source not in MAILBOX_SERVERS or event.kind not in DOWNSTREAM_KINDS:
            received.append(event)
        if event.kind in ACCESS_KINDS:
            continue
        client_ip = client_ip or event.client_ip
        client_name = client_name or event.client_name
        helo = helo or event.helo
        sender = sender if sender is not None else event.sender
        message_id = message_id or event.message_id
        queue_id = queue_id or event.queue_id
        tls = tls or event.detail.get("tls")
        if event.size is not None and event.kind in ("data", "accept"):
            size = event.size
    received = received or events
    first = received[0]
    named = next((e for e in received if e.message_key is not None), first)  # not a connection's own event
    return MessageTrace(
        id=ref if ref is not None else f"E{named.id}",
        ref=ref,
        events=events,
        recipients=fates,
        first_seen=min(e.ts for e in received),
        last_seen=max(e.ts for e in events),
        node=first.node,
        client_ip=client_ip,
        client_name=client_name,
        helo=helo,
        tls=tls,
        sender=sender,
        message_id=message_id,
        queue_id=queue_id,
        size=size,
        outcome=outcome,
        key=key,
    )
