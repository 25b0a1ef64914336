"""Correlation: from a message key to the message's whole life.

Every event carries the key its writer stamped (messages/keys.py), and the hops between keys -
our LMTP delivery to Dovecot, Postfix's, a queue file re-injected after a content filter, a
stored copy and its accesses - are links the writers recorded. A message is the root of its
linked keys: its trace is the events of those keys plus the connection's own events (connect,
HELO, disconnect: by node and session), never anything found by time window or Message-ID; its
fate is `messages.fates.build`, the same fold the message index is made of. Every read goes
through the `Store`.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any, Final

from mailwarden.events import Event
from mailwarden.messages.fates import build, causal_order
from mailwarden.messages.keys import ACCESS_KINDS, MAILBOX_SERVERS, Component, components
from mailwarden.refs import is_ref, normalize
from mailwarden.store import EventQuery, Store
from mailwarden.store.base import LARGEST_INTEGER, IndexQuery
from mailwarden.trace.model import Attempt, MessageTrace

ATTEMPT_BEFORE_US: Final = 2 * 86400 * 1_000_000  # earlier tries of the same sender and recipient
ATTEMPT_AFTER_US: Final = 5 * 86400 * 1_000_000  # the sender's retries (RFC 5321 4.5.4.1: give up after 4-5 days)
_BATCH: Final = 200
# How far a message's connection events (connect, HELO, disconnect) may lie before its first and after
# its last own event - a connection lasts minutes (every server's timeouts end it sooner) - and an
# event a concurrent writer's fold did not see yet may lie beyond them (seconds).
SPAN_MARGIN_US: Final = 86400 * 1_000_000
_ATTEMPTS: Final = 100  # other transactions of one sender and recipient looked at


class Messages:
    """The messages keys belong to, for one question (each key's links are read once)."""

    def __init__(self, store: Store) -> None:
        self.store = store
        self._by_key: dict[str, Component] = {}

    def of(self, key: str) -> Component:
        return self.of_all([key])[key]

    def of_all(self, keys: Iterable[str]) -> dict[str, Component]:
        """The message of each key, the links of those not known yet read together."""
        wanted = list(dict.fromkeys(keys))
        unknown = [key for key in wanted if key not in self._by_key]
        if unknown:
            for key, found in components(unknown, self.store.links).items():
                for member in found.keys:
                    self._by_key[member] = found
                self._by_key[key] = found
        return {key: self._by_key[key] for key in wanted}

    def root(self, event: Event) -> str | None:
        """The message an event belongs to (None for a connection's own events)."""
        return None if event.message_key is None else self.of(event.message_key).root


def key_of_id(store: Store, trace_id: str) -> str | None:
    """Resolve what `explain` was given: a ref, `E<event id>` of any event of a message, or a message key."""
    text = trace_id.strip()
    if text[:1] in "Ee" and text[1:].isascii() and text[1:].isdigit():
        event_id = int(text[1:])
        if event_id > LARGEST_INTEGER:  # no event has it
            return None
        found = store.query_events(EventQuery(ids=[event_id]))
        return Messages(store).root(found[0]) if found else None
    key = normalize(text) if is_ref(text) else text
    if store.query_events(EventQuery(message_keys=[key], limit=1)):
        return Messages(store).of(key).root
    # a connection or mailbox session without a message: `load` shows its own events
    return key if store.query_events(EventQuery(ref=key, limit=1)) else None


def _chunks(items: Sequence[Any], size: int = _BATCH) -> Iterable[Sequence[Any]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


def load(
    store: Store, keys: Iterable[str], messages: Messages | None = None, *, span: tuple[int, int] | None = None
) -> list[MessageTrace]:
    """The messages the `keys` belong to, each with all its events, newest first.

    `span` is the first and last event of all of them when the caller knows it (a search's index
    rows: first_seen and last_seen are the whole message's): the reads are then bounded to it, with
    SPAN_MARGIN_US around, so that a store partitioned by day reads only those days.
    """
    messages = messages or Messages(store)
    since, until = (span[0] - SPAN_MARGIN_US, span[1] + SPAN_MARGIN_US + 1) if span else (None, None)
    roots: dict[str, Component] = {}
    for found in messages.of_all(keys).values():
        roots.setdefault(found.root, found)
    owner = {member: root for root, found in roots.items() for member in found.keys}
    groups: dict[str, dict[int, Event]] = {root: {} for root in roots}
    for chunk in _chunks(sorted(owner)):
        for event in store.query_events(EventQuery(message_keys=chunk, since_us=since, until_us=until)):
            assert event.id is not None and event.message_key is not None
            groups[owner[event.message_key]][event.id] = event
    for chunk in _chunks([root for root, events in groups.items() if not events]):
        for event in store.query_events(EventQuery(refs=chunk, keyless=True, since_us=since, until_us=until)):
            # a session's ref, no message
            assert event.id is not None and event.ref is not None
            groups[event.ref][event.id] = event
    _add_connections(store, groups, since, until)
    traces = [build(root, list(events.values())) for root, events in groups.items() if events]
    traces.sort(key=lambda t: t.first_seen, reverse=True)
    return traces


def _add_connections(
    store: Store, groups: dict[str, dict[int, Event]], since: int | None = None, until: int | None = None
) -> None:
    """Connect, HELO/TLS, disconnect and the client's checks: the events of each message's
    connection (node, session) that belong to no message."""
    owners: dict[tuple[str, str], list[str]] = {}
    for root, events in groups.items():
        for event in events.values():
            if event.session and event.kind not in ACCESS_KINDS and event.source not in MAILBOX_SERVERS | {"pop3"}:
                owners.setdefault((event.node, event.session), []).append(root)
    by_node: dict[str, list[tuple[str, str]]] = {}
    for pair in owners:
        by_node.setdefault(pair[0], []).append(pair)
    for chunk in (chunk for pairs in by_node.values() for chunk in _chunks(pairs)):  # one node per query
        for event in store.query_events(EventQuery(sessions=chunk, keyless=True, since_us=since, until_us=until)):
            assert event.session is not None and event.id is not None
            for root in set(owners.get((event.node, event.session), [])):
                groups[root][event.id] = event


# ---------------------------------------------------------------------------- other attempts
def link_attempts(store: Store, trace: MessageTrace) -> None:
    """Find earlier tries (greylisting) and later retries (after a 4xx) of the same sender and recipient."""
    if trace.sender is None:
        return
    for fate in trace.recipients:
        query = IndexQuery(
            recipient=fate.address,
            sender=trace.sender,
            since_us=trace.first_seen - ATTEMPT_BEFORE_US,
            until_us=trace.first_seen + ATTEMPT_AFTER_US,
        )
        rows = store.index_page(query, limit=_ATTEMPTS).rows
        others = sorted({row.message_key for row in rows if row.message_key != trace.key})
        for other in load(store, others) if others else []:
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
