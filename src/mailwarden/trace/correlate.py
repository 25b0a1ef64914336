"""Correlation: from single events to messages, and from a message to its whole life.

Events are tied together by design.md's correlation keys: (`node`, `session`) → `ref` →
`queue_id` (bounded in time, Postfix reuses them) → `message_id` → mailbox uid → access events.
A message is identified by its `ref` (our gateway and the POP3 server share it); a message seen
only in a foreign MTA's log by its queue id or, before it got one, by its session.
Every read goes through the `Store` interface.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, Final

from mailwarden.events import Event
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
_BATCH: Final = 200
CLOCK_SLACK_US: Final = 60 * 1_000_000  # foreign logs have whole seconds and other nodes' clocks


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


def key_of_id(store: Store, trace_id: str) -> tuple[Key, int] | None:
    """Resolve what `explain` was given: a ref, or E<event id> for a message without one."""
    text = trace_id.strip()
    if text[:1] in "Ee" and text[1:].isdigit():
        found = store.query_events(EventQuery(ids=[int(text[1:])]))
        if not found:
            return None
        key = message_key(found[0])
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
    """Deliveries and mailbox accesses logged elsewhere (Dovecot, ...) that name the message-id."""
    by_message_id: dict[str, list[Key]] = {}
    for key, events in groups.items():
        for event in events.values():
            if event.message_id and event.kind in ("data", "accept", "deliver"):
                by_message_id.setdefault(event.message_id, []).append(key)
    ids = list(by_message_id)
    for chunk in _chunks(ids):
        for event in store.query_events(EventQuery(message_ids=chunk, kinds=DOWNSTREAM_KINDS)):
            assert event.message_id is not None and event.id is not None
            for key in set(by_message_id[event.message_id]):
                events = groups[key]
                if event.id in events or not events:
                    continue
                first = min(e.ts for e in events.values())
                addresses = _addresses(events.values())
                if event.ts >= first - CLOCK_SLACK_US and (
                    event.recipient is None or event.recipient.lower() in addresses
                ):
                    events[event.id] = event


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


def _build(key: Key, events: list[Event]) -> MessageTrace:
    events.sort(key=lambda e: (e.ts, e.id or 0))
    fates = _Fates()
    outcome: RecipientFate | None = None
    # Accesses come after the delivery even when a foreign log's whole-second stamp says otherwise.
    for event in sorted(events, key=lambda e: e.kind in ACCESS_KINDS):
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
    first = events[0]
    ref = key[1] if key[0] == "ref" else None
    own = [e for e in events if e.kind not in ACCESS_KINDS]
    trace = MessageTrace(
        id=ref if ref is not None else f"E{first.id}",
        ref=ref,
        events=events,
        recipients=fates,
        first_seen=first.ts,
        last_seen=events[-1].ts,
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
    steps: list[Step] = []
    for event in trace.events:
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
        steps.extend(_check_steps(event))
        steps.append(Step(event.ts, kind, facts, event))
    for one in [fate] if fate else trace.recipients:
        for attempt in one.earlier + one.later:
            facts = {
                "id": attempt.id,
                "status": attempt.status,
                "reason": attempt.reason,
                "client_ip": attempt.client_ip,
            }
            steps.append(Step(attempt.at, "attempt", facts))
    steps.sort(key=lambda s: s.at)
    return steps
