"""Correlation: from single events to messages, and from a message to its whole life.

Events are tied together by design.md's correlation keys: (`node`, `session`) → `ref` →
`queue_id` (bounded in time, Postfix reuses them) → `message_id` → mailbox uid → access events.
A message is identified by its `ref` (our gateway and the POP3 server share it); a message seen
only in a foreign MTA's log by its queue id or, before it got one, by its session.
Every read goes through the `Store` interface.
"""

from __future__ import annotations

import dataclasses
from bisect import bisect_right, insort
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, Final

from mailwarden.events import Event
from mailwarden.handoff import cut_message_id_prefix, lmtp_session, logged_message_ids, same_lmtp_connection
from mailwarden.store import EventQuery, Store
from mailwarden.trace.model import (
    ACCESS_KINDS,
    CONNECTION_KINDS,
    Access,
    Attempt,
    MessageTrace,
    RecipientFate,
)

# A message key: ("ref", REF) | ("queue", NODE, QUEUE_ID) | ("session", NODE, SESSION) | ("event", ID)
Key = tuple[str, ...]

QUEUE_BEFORE_US: Final = 3 * 86400 * 1_000_000  # a queue id is this message's for a while around its seed
QUEUE_AFTER_US: Final = 7 * 86400 * 1_000_000  # (a queued message may wait up to 5 days)
ATTEMPT_BEFORE_US: Final = 2 * 86400 * 1_000_000  # earlier tries of the same sender and recipient
ATTEMPT_AFTER_US: Final = 5 * 86400 * 1_000_000  # the sender's retries (RFC 5321 4.5.4.1: give up after 4-5 days)
DOWNSTREAM_KINDS: Final = ("deliver", "retrieve", "delete", "defer", "bounce")
# Dovecot's mail_log: copies/saves into folders and the IMAP \\Deleted flag do not change a fate.
MAILBOX_ACTION_KINDS: Final = frozenset({"deliver", "delete"})
MAILBOX_ACTIONS: Final = frozenset({"copy", "save", "flag", "unflag"})
# Mailbox servers whose ingested logs continue a message an MTA handed to them (on any node).
MAILBOX_SERVERS: Final = frozenset({"dovecot"})
_BATCH: Final = 200
SECOND_US: Final = 1_000_000
CLOCK_SLACK_US: Final = 60 * SECOND_US  # foreign logs have whole seconds and other nodes' clocks
_UPSTREAM_CANDIDATES: Final = 50


def message_key(event: Event) -> Key | None:
    """The message an event belongs to; None for a login or connection that carries no message."""
    if event.ref:
        return ("ref", event.ref)
    if event.kind in CONNECTION_KINDS:
        return None
    if event.queue_id:
        return ("queue", event.node, event.queue_id)
    if event.session:
        return ("session", event.node, event.session)
    return ("event", str(event.id))


def handoff_session(event: Event) -> str | None:
    """The mailbox server's LMTP session an MTA's delivery names (Postfix's or our proxy's record of its reply)."""
    if event.kind != "deliver":
        return None
    recorded = event.detail.get("downstream_session")
    if isinstance(recorded, str):
        return recorded
    reply = event.detail.get("downstream_reply")
    return lmtp_session(reply) if isinstance(reply, str) else None


def _downstream(event: Event) -> bool:
    return event.source in MAILBOX_SERVERS and event.kind in DOWNSTREAM_KINDS


def _mailbox_delivery(event: Event) -> bool:
    """A mailbox server storing a message handed to it (LMTP/LDA), not a client's copy or an access."""
    return (
        event.source in MAILBOX_SERVERS
        and event.kind in ("deliver", "defer")
        and event.detail.get("action") not in MAILBOX_ACTIONS
    )


def _copy(event: Event) -> tuple[str, str, int] | None:
    """(user, mailbox folder, uid) of the copy a mailbox server stored or accessed, when it says."""
    uid = event.detail.get("uid")
    folder = event.detail.get("box") if event.kind in ACCESS_KINDS else event.detail.get("folder")
    if event.source not in MAILBOX_SERVERS or not event.recipient or not isinstance(uid, int):
        return None
    return event.recipient.lower(), str(folder or "INBOX"), uid


@dataclass
class _Handover:
    """What a message's own events tell about its hand-over to a mailbox server, to judge that server's events."""

    first: int
    addresses: set[str]
    sessions: list[str]  # the LMTP sessions its deliveries name
    copies: dict[tuple[str, str], set[int]] = field(default_factory=dict)  # (user, folder) -> uids it was stored as

    @classmethod
    def of(cls, events: Iterable[Event]) -> _Handover:
        every = list(events)
        own = [e for e in every if not _downstream(e)] or every
        sessions = [s for s in map(handoff_session, own) if s is not None]
        handover = cls(min(e.ts for e in own), _addresses(own), sessions)
        for event in every:
            handover.note(event)
        return handover

    def note(self, event: Event) -> None:
        """Remember a mailbox server's delivery joined to the message: the name and uid its accesses use."""
        if event.source not in MAILBOX_SERVERS or event.kind != "deliver":
            return
        if event.recipient and event.detail.get("action") not in MAILBOX_ACTIONS:
            self.addresses.add(event.recipient.lower())
        copy = _copy(event)
        if copy is not None:
            self.copies.setdefault(copy[:2], set()).add(copy[2])

    def continues(self, event: Event) -> bool:
        """Whether a mailbox server's event (found by its Message-ID) belongs to this message.

        The LMTP session the MTA recorded is proof, whatever the recipient is called there; a
        delivery in another LMTP session, or an access to another uid of a folder the message was
        stored in, is another copy of the same Message-ID. Otherwise the recipient must match, and
        nothing happens to the message before it arrived (allowing for other nodes' clocks).
        """
        session = event.session
        if session and self.sessions and _mailbox_delivery(event):
            if session in self.sessions:
                return True
            if not any(same_lmtp_connection(session, mine) for mine in self.sessions):
                return False
        copy = _copy(event) if event.kind in ACCESS_KINDS else None
        if copy is not None and copy[2] not in self.copies.get(copy[:2], {copy[2]}):
            return False
        if event.ts < self.first - CLOCK_SLACK_US:
            return False
        return event.recipient is None or event.recipient.lower() in self.addresses


def upstream_key(store: Store, event: Event) -> Key | None:
    """For a mailbox server's delivery or access: the message whose delivery handed it over, on any node.

    Found by the Message-ID (also as Dovecot cuts it), or by the queue id an ingest run joined to
    it, and chosen by the rules `load` applies (`_Handover`): an access belongs to the delivery of
    its copy (user, folder, uid), a delivery to the MTA's delivery naming its LMTP session, else
    to one of the same recipient.
    """
    if not _downstream(event):
        return None
    if event.message_id:
        prefix = cut_message_id_prefix(event.message_id)
        by_id = EventQuery(message_id_prefix=prefix) if prefix else EventQuery(message_id=event.message_id)
    elif event.queue_id:
        by_id = EventQuery(queue_id=event.queue_id, since_us=event.ts - CLOCK_SLACK_US)
    else:
        return None
    query = dataclasses.replace(
        by_id, kinds=("deliver",), until_us=event.ts + CLOCK_SLACK_US, newest_first=True, limit=_UPSTREAM_CANDIDATES
    )
    found = store.query_events(query)
    if not _mailbox_delivery(event):  # an access: first the mailbox server's delivery of that copy
        copy = _copy(event)
        stored = next((e for e in found if copy is not None and _mailbox_delivery(e) and _copy(e) == copy), None)
        if stored is not None:
            return upstream_key(store, stored) or message_key(stored)
    handing = [e for e in found if not _downstream(e)]
    session = event.session if _mailbox_delivery(event) else None
    chosen = next((e for e in handing if session and handoff_session(e) == session), None)
    if chosen is None:
        chosen = next((e for e in handing if _Handover.of([e]).continues(event) and _in_time(e, event)), None)
    if chosen is not None:
        return message_key(chosen)
    if _mailbox_delivery(event):
        return None
    # An access whose copy's MTA delivery names the recipient otherwise (an alias) or was not
    # ingested: the mailbox server's own delivery to that user, and what handed that over.
    wanted = (event.recipient or "").lower()
    stored = next((e for e in found if _mailbox_delivery(e) and (e.recipient or "").lower() == wanted), None)
    return None if stored is None else upstream_key(store, stored) or message_key(stored)


def _in_time(delivery: Event, event: Event) -> bool:
    """A mailbox server stores what it is handed at once; a client may read it any time later."""
    return not _mailbox_delivery(event) or abs(event.ts - delivery.ts) <= CLOCK_SLACK_US


def key_of_id(store: Store, trace_id: str) -> tuple[Key, int] | None:
    """Resolve what `explain` was given: a ref, or E<event id> for a message without one."""
    text = trace_id.strip()
    if text[:1] in "Ee" and text[1:].isdigit():
        found = store.query_events(EventQuery(ids=[int(text[1:])]))
        if not found:
            return None
        key = upstream_key(store, found[0]) or message_key(found[0])
        return (key, found[0].ts) if key is not None else None
    from mailwarden.smtp.refs import normalize

    ref = normalize(text)
    found = store.query_events(EventQuery(ref=ref, limit=1))
    return (("ref", ref), found[0].ts) if found else None


def _chunks(items: Sequence[Any], size: int = _BATCH) -> Iterable[Sequence[Any]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


def load(store: Store, seeds: dict[Key, int]) -> list[MessageTrace]:
    """The messages for `seeds` (key → time of an event of it), each with all its events."""
    groups: dict[Key, dict[int, Event]] = {key: {} for key in seeds}

    def add(key: Key, events: Iterable[Event]) -> None:
        bucket = groups[key]
        for event in events:
            assert event.id is not None
            bucket[event.id] = event

    refs = [key[1] for key in seeds if key[0] == "ref"]
    for chunk in _chunks(refs):
        for event in store.query_events(EventQuery(refs=chunk)):
            add(("ref", str(event.ref)), [event])
    for key, seed_ts in seeds.items():
        if key[0] == "queue":
            window = EventQuery(
                node=key[1], queue_id=key[2], since_us=seed_ts - QUEUE_BEFORE_US, until_us=seed_ts + QUEUE_AFTER_US
            )
            add(key, store.query_events(window))
        elif key[0] == "session":
            add(key, [e for e in store.query_events(EventQuery(node=key[1], session=key[2])) if e.queue_id is None])
        elif key[0] == "event":
            add(key, store.query_events(EventQuery(ids=[int(key[1])])))
    _add_connections(store, groups)
    _add_downstream(store, groups)
    traces = [_build(key, list(events.values())) for key, events in groups.items() if events]
    traces.sort(key=lambda t: t.first_seen, reverse=True)
    return traces


def _add_connections(store: Store, groups: dict[Key, dict[int, Event]]) -> None:
    """Connect, HELO/TLS and disconnect of each message's connection (recorded under its first ref)."""
    owners: dict[tuple[str, str], list[Key]] = {}
    loaded: set[tuple[str, str]] = set()  # the first transaction's ref is the session's: already here
    for key, events in groups.items():
        for event in events.values():
            if event.session and event.kind not in ACCESS_KINDS and event.source != "pop3":
                owners.setdefault((event.node, event.session), []).append(key)
                if event.kind == "connect":
                    loaded.add((event.node, event.session))
    pairs = [pair for pair in owners if pair not in loaded]
    for chunk in _chunks(pairs):
        query = EventQuery(sessions=chunk, kinds=("connect", "helo", "disconnect"))
        for event in store.query_events(query):
            assert event.session is not None and event.id is not None
            for key in set(owners.get((event.node, event.session), [])):
                groups[key][event.id] = event


def _add_downstream(store: Store, groups: dict[Key, dict[int, Event]]) -> None:
    """Deliveries and mailbox accesses logged elsewhere (Dovecot, on any node) that name the message-id."""
    by_message_id: dict[str, list[Key]] = {}
    for key, events in groups.items():
        for event in events.values():
            if event.message_id and event.kind in ("data", "accept", "deliver"):
                for logged in logged_message_ids(event.message_id):
                    by_message_id.setdefault(logged, []).append(key)
    handovers: dict[Key, _Handover] = {}
    ids = list(by_message_id)
    for chunk in _chunks(ids):
        for event in store.query_events(EventQuery(message_ids=chunk, kinds=DOWNSTREAM_KINDS)):
            assert event.message_id is not None and event.id is not None
            for key in set(by_message_id[event.message_id]):
                events = groups[key]
                if event.id in events or not events:
                    continue
                handover = handovers.get(key)
                if handover is None:
                    handover = handovers[key] = _Handover.of(events.values())
                if handover.continues(event):
                    events[event.id] = event
                    handover.note(event)
    _add_handed_by_queue(store, groups)


def _add_handed_by_queue(store: Store, groups: dict[Key, dict[int, Event]]) -> None:
    """A mailbox server's deliveries that an ingest run joined to the MTA's queue id (no Message-ID needed)."""
    by_queue: dict[str, list[tuple[Key, str]]] = {}
    for key, events in groups.items():
        for event in events.values():
            session = handoff_session(event)
            if session and event.queue_id and not _downstream(event):
                by_queue.setdefault(event.queue_id, []).append((key, session))
    for chunk in _chunks(list(by_queue)):
        for event in store.query_events(EventQuery(queue_ids=chunk, kinds=DOWNSTREAM_KINDS)):
            assert event.queue_id is not None and event.id is not None
            if not _downstream(event):
                continue
            for key, session in by_queue[event.queue_id]:
                if event.session == session:
                    groups[key][event.id] = event


def _addresses(events: Iterable[Event]) -> set[str]:
    found: set[str] = set()
    for event in events:
        if event.recipient:
            found.add(event.recipient.lower())
        mailbox = event.detail.get("mailbox")
        if isinstance(mailbox, str):
            found.add(mailbox.lower())
    return found


@dataclass
class _Fates:
    """Recipient states while walking a message's events in order."""

    by_address: dict[str, RecipientFate] = field(default_factory=dict)
    acknowledged: set[str] = field(default_factory=set)  # got our 250 after DATA

    def get(self, address: str) -> RecipientFate:
        lowered = address.lower()
        fate = self.by_address.get(lowered)
        if fate is None:
            for candidate in self.by_address.values():
                if (candidate.mailbox or "").lower() == lowered:
                    return candidate
            fate = RecipientFate(address=address, status="accepted")
            self.by_address[lowered] = fate
        return fate

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
            handed = [
                h for h in handing if abs(h.ts - event.ts) <= CLOCK_SLACK_US and _Handover.of([h]).continues(event)
            ]
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


def _build(key: Key, events: list[Event]) -> MessageTrace:
    events[:] = [event for _, event in causal_order(events)]
    fates = _Fates()
    outcome: RecipientFate | None = None
    for event in events:
        kind = event.kind
        stage = event.detail.get("stage")
        if kind == "rcpt" and event.recipient:
            fate = fates.get(event.recipient)
            fate.status, fate.at = "accepted", event.ts
            fate.mailbox = event.detail.get("mailbox") or fate.mailbox
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
            fate.mailbox = event.detail.get("mailbox") or fate.mailbox or event.recipient
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
    key: Key, events: list[Event], fates: list[RecipientFate], outcome: RecipientFate | None
) -> MessageTrace:
    ref = key[1] if key[0] == "ref" else None
    own = [e for e in events if e.kind not in ACCESS_KINDS]
    received = [e for e in events if not _downstream(e)] or events  # what the MTA logged, not the mailbox server
    first = received[0]
    trace = MessageTrace(
        id=ref if ref is not None else f"E{first.id}",
        ref=ref,
        events=events,
        recipients=fates,
        first_seen=min(e.ts for e in received),
        last_seen=max(e.ts for e in events),
        node=first.node,
        outcome=outcome,
    )
    for event in own:
        trace.client_ip = trace.client_ip or event.client_ip
        trace.client_name = trace.client_name or event.client_name
        trace.helo = trace.helo or event.helo
        trace.sender = trace.sender if trace.sender is not None else event.sender
        trace.message_id = trace.message_id or event.message_id
        trace.queue_id = trace.queue_id or event.queue_id
        trace.tls = trace.tls or event.detail.get("tls")
        if event.kind in ("data", "accept") and event.size is not None:
            trace.size = event.size
    return trace


# ---------------------------------------------------------------------------- other attempts
def link_attempts(store: Store, trace: MessageTrace) -> None:
    """Find earlier tries (greylisting) and later retries (after a 4xx) of the same sender and recipient."""
    if trace.sender is None:
        return
    for fate in trace.recipients:
        query = EventQuery(
            recipient=fate.address,
            sender=trace.sender,
            since_us=trace.first_seen - ATTEMPT_BEFORE_US,
            until_us=trace.first_seen + ATTEMPT_AFTER_US,
            kinds=("rcpt", "reject", "tempfail", "greylist", "deliver"),
            limit=500,
        )
        seeds: dict[Key, int] = {}
        for event in store.query_events(query):
            key = message_key(event)
            if key is not None and key != ("ref", trace.ref) and key not in seeds:
                seeds[key] = event.ts
        for other in load(store, seeds) if seeds else []:
            other_fate = other.fate(fate.address)
            if other_fate is None:
                continue
            attempt = Attempt(other.id, other.first_seen, other_fate.status, other_fate.reason, other.client_ip)
            (fate.earlier if other.first_seen < trace.first_seen else fate.later).append(attempt)
        fate.earlier.sort(key=lambda a: a.at)
        fate.later.sort(key=lambda a: a.at)


# ---------------------------------------------------------------------------- the timeline
@dataclass(frozen=True)
class Step:
    """One entry of a message's life; `what` names it, `facts` carry its values (for any language)."""

    at: int
    what: str
    facts: dict[str, Any]
    event: Event | None = None


def _passed(record: dict[str, Any]) -> bool:
    """A check with nothing to report: passed, resolved a recipient, or only added its headers."""
    result = record.get("result")
    return result in ("pass", "resolved") or (result == "tag" and record.get("reason") == "delivered")


def _check_steps(event: Event) -> list[Step]:
    steps = []
    for record in event.detail.get("checks") or []:
        if not isinstance(record, dict) or record.get("result") is None or _passed(record):
            continue
        facts = {"check": record.get("check"), "result": record.get("result"), "reason": record.get("reason")}
        detail = record.get("detail")
        if isinstance(detail, dict):
            facts.update({k: v for k, v in detail.items() if isinstance(v, str | int | float)})
        steps.append(Step(event.ts, "check", facts, event))
    return steps


def _passed_checks(event: Event) -> list[str]:
    return [str(r.get("check")) for r in event.detail.get("checks") or [] if isinstance(r, dict) and _passed(r)]


def timeline(trace: MessageTrace, recipient: str | None = None) -> list[Step]:
    """The message's life in order; with `recipient`, other recipients' steps are left out."""
    fate = trace.fate(recipient) if recipient else None
    own = {fate.address.lower(), (fate.mailbox or "").lower()} if fate else None
    steps: list[tuple[int, Step]] = []  # (placed time, step): stamps alone may not tell the order
    for placed, event in causal_order(trace.events):
        if own is not None and event.recipient and event.recipient.lower() not in own:
            continue
        facts: dict[str, Any] = {
            "client_ip": event.client_ip,
            "source": event.source,
            "recipient": event.recipient,
            "reason": event.reason,
            "code": event.smtp_code,
            "enhanced": event.enhanced_code,
            "reply": event.reply,
            "passed": ", ".join(_passed_checks(event)),
        }
        kind = event.kind
        if kind == "connect":
            facts.update(client_name=event.client_name)
        elif kind == "helo":
            facts.update(helo=event.helo, tls=event.detail.get("tls"))
        elif kind == "mail":
            facts.update(sender=event.sender or "<>")
        elif kind == "rcpt":
            facts.update(mailbox=event.detail.get("mailbox"))
        elif kind in ("reject", "tempfail"):
            facts.update(stage=event.detail.get("stage"))
        elif kind == "data":
            facts.update(size=event.size, message_id=event.message_id, incomplete=event.detail.get("incomplete"))
        elif kind == "deliver":
            facts.update(mailbox=event.detail.get("mailbox"), folder=event.detail.get("folder") or "INBOX")
        elif kind in ACCESS_KINDS:
            facts.update(protocol=event.detail.get("protocol") or event.source)
        elif kind in ("defer", "bounce"):
            facts.update(relay=event.detail.get("relay"))
        elif kind == "disconnect":
            facts.update(seconds=event.detail.get("seconds"))
        steps.extend((placed, step) for step in _check_steps(event))
        steps.append((placed, Step(event.ts, kind, facts, event)))
    for one in [fate] if fate else trace.recipients:
        for attempt in one.earlier + one.later:
            facts = {
                "id": attempt.id,
                "status": attempt.status,
                "reason": attempt.reason,
                "client_ip": attempt.client_ip,
            }
            steps.append((attempt.at, Step(attempt.at, "attempt", facts)))
    steps.sort(key=lambda item: item[0])
    return [step for _, step in steps]
