"""Search: find messages by sender, recipient, time, ref, message-id, queue id, client, status, reason.

Every filter runs in the store, on the message index (one row per message and recipient, kept
by the writers: messages/index.py): a message matches when one of its recipients' rows meets
every filter. Pages are keyset pages (a cursor names the last message shown, so page 100 costs
what page 1 does; `--page` still skips by count). Counts by status and reason come from the same
filters. A scope of allowed recipient domains (a customer's view) is part of every query, so no
other filter reaches past it. The CLI then loads each message of a page in full (its events).
"""

from __future__ import annotations

import dataclasses
import ipaddress
from dataclasses import dataclass, field
from typing import Final, Literal

from mailwarden.events import now_us
from mailwarden.messages.index import IndexRow
from mailwarden.store import Store
from mailwarden.store.base import LARGEST_INTEGER, IndexQuery
from mailwarden.trace.correlate import link_attempts, load
from mailwarden.trace.model import STATUSES, MessageTrace, RecipientFate

DAY_US: Final = 86400 * 1_000_000


@dataclass(frozen=True)
class AddressFilter:
    """`a@b.test` exactly, `@b.test` (or `b.test`) a whole domain, `*text*` any address containing text."""

    mode: Literal["exact", "domain", "contains"]
    value: str

    @classmethod
    def parse(cls, text: str) -> AddressFilter:
        value = text.strip().strip("<>")
        if not value:
            raise ValueError("an empty address filter; give a@b.test, @b.test or *part*")
        if "*" in value:
            return cls("contains", value.replace("*", ""))
        if value.startswith("@") or "@" not in value:
            return cls("domain", value.lstrip("@").lower())
        return cls("exact", value)

    def matches(self, address: str | None) -> bool:
        if not address:
            return False
        lowered = address.lower()
        if self.mode == "exact":
            return lowered == self.value.lower()
        if self.mode == "domain":
            return lowered.rpartition("@")[2] == self.value
        return self.value.lower() in lowered

    def __str__(self) -> str:
        return {"exact": self.value, "domain": f"@{self.value}", "contains": f"*{self.value}*"}[self.mode]


@dataclass(frozen=True)
class SearchSpec:
    """A question to the message index. `allowed_domains` scopes it to those recipient domains
    (None: unscoped); `cursor` continues after the message a previous page ended with, `before`
    goes back to the page just newer than the message a page began with."""

    sender: AddressFilter | None = None
    recipient: AddressFilter | None = None
    since_us: int | None = None
    until_us: int | None = None
    ref: str | None = None
    message_id: str | None = None
    queue_id: str | None = None
    client: str | None = None  # an address or a network
    status: str | None = None
    reason: str | None = None
    limit: int = 50
    offset: int = 0
    cursor: str | None = None
    allowed_domains: frozenset[str] | None = None
    before: str | None = None

    def __post_init__(self) -> None:
        if self.status is not None and self.status not in STATUSES:
            raise ValueError(f"unknown status {self.status!r}; use one of {', '.join(STATUSES)}")
        if self.client is not None:
            try:
                ipaddress.ip_network(self.client, strict=False)
            except ValueError:
                raise ValueError(
                    f"--client-ip {self.client!r} is not an address or network (192.0.2.7, 192.0.2.0/24)"
                ) from None
        if self.limit < 1 or self.offset < 0:
            raise ValueError("--limit and --page must be at least 1")
        for position in (self.cursor, self.before):
            if position is not None:
                parse_cursor(position)

    def index_query(self) -> IndexQuery:
        fields: dict[str, object] = {}
        for name, flt in (("sender", self.sender), ("recipient", self.recipient)):
            if flt is not None:
                fields[name if flt.mode == "exact" else f"{name}_{flt.mode}"] = flt.value
        return IndexQuery(
            since_us=self.since_us,
            until_us=self.until_us,
            status=self.status,
            reason=self.reason,
            client_network=self.client,
            message_key=self.ref,
            message_id=self.message_id,
            queue_id=self.queue_id,
            allowed_domains=self.allowed_domains,
            **fields,  # type: ignore[arg-type]
        )

    def visible(self, address: str) -> bool:
        """Whether a recipient is within the scope (always, unscoped)."""
        if self.allowed_domains is None:
            return True
        return address.rpartition("@")[2].lower() in {d.lower().lstrip("@") for d in self.allowed_domains}


def cursor_of(first_seen: int, key: str) -> str:
    """The position after a message, for the next page (opaque to callers)."""
    return f"{first_seen}_{key}"


def parse_cursor(text: str) -> tuple[int, str]:
    """(first seen, key) of a `cursor_of` text; ValueError for anything else, also a time that no
    store column holds (`LARGEST_INTEGER`)."""
    seen, _, key = text.strip().partition("_")
    if not (seen.isascii() and seen.isdigit()) or not key or int(seen) > LARGEST_INTEGER:
        raise ValueError(f"--cursor {text!r} is not a cursor from an earlier page (the `cursor` of its last message)")
    return int(seen), key


@dataclass(frozen=True)
class Counts:
    """How many recipients of the matching messages have each status and reason."""

    rows: list[tuple[str, str | None, int]]  # (status, reason, recipients), most first

    @property
    def total(self) -> int:
        return sum(number for _, _, number in self.rows)

    def by_status(self) -> dict[str, int]:
        found: dict[str, int] = {}
        for status, _, number in self.rows:
            found[status] = found.get(status, 0) + number
        return found

    def by_reason(self) -> dict[str, int]:
        found: dict[str, int] = {}
        for _, reason, number in self.rows:
            found[reason or ""] = found.get(reason or "", 0) + number
        return found

    def to_json(self) -> dict[str, object]:
        return {
            "total": self.total,
            "by_status": self.by_status(),
            "by_reason": self.by_reason(),
            "counts": [{"status": s, "reason": r, "recipients": n} for s, r, n in self.rows],
        }


@dataclass(frozen=True)
class SearchPage:
    """One page of the index: the rows of its messages, where the next and the previous page begin, and the counts."""

    rows: list[IndexRow]
    next_cursor: str | None
    counts: Counts | None = None
    previous_cursor: str | None = None  # `before` of the previous (newer) page; None on the first


def search_index(store: Store, spec: SearchSpec, *, counts: bool = False) -> SearchPage:
    """The index rows of one page of messages matching `spec` (for the web center and the CLI)."""
    after = parse_cursor(spec.cursor) if spec.cursor is not None else None
    before = parse_cursor(spec.before) if spec.before is not None else None
    query = spec.index_query()
    page = store.index_page(query, limit=spec.limit, after=after, offset=0 if after else spec.offset, before=before)
    following = cursor_of(*page.after) if page.after is not None else None
    previous = cursor_of(*page.before) if page.before is not None else None
    return SearchPage(page.rows, following, Counts(store.index_counts(query)) if counts else None, previous)


def count(store: Store, spec: SearchSpec) -> Counts:
    """Counts by status and reason of every recipient row matching `spec` (dashboards)."""
    return Counts(store.index_counts(spec.index_query()))


@dataclass(frozen=True)
class RetentionNote:
    """The requested window reaches back before the data kept."""

    retention_days: int
    oldest_us: int | None  # the oldest event still kept
    window_start_us: int


@dataclass
class SearchResult:
    spec: SearchSpec
    messages: list[MessageTrace]
    more: bool = False  # a further page exists
    retention: RetentionNote | None = None
    rows: list[tuple[MessageTrace, RecipientFate]] = field(default_factory=list)
    next_cursor: str | None = None  # where the next page begins
    cursors: dict[str, str] = field(default_factory=dict)  # message key -> the position after it


def retention_note(
    store: Store, since_us: int | None, retention_days: int, now: int | None = None
) -> RetentionNote | None:
    if since_us is None:
        return None
    cutoff = (now if now is not None else now_us()) - retention_days * DAY_US
    if since_us >= cutoff:
        return None
    return RetentionNote(retention_days, store.oldest_event_us(), since_us)


def search(store: Store, spec: SearchSpec, *, retention_days: int, now: int | None = None) -> SearchResult:
    """One page of messages matching `spec`, newest first, each loaded in full."""
    page = search_index(store, spec)
    keys = list(dict.fromkeys(row.message_key for row in page.rows))
    span = (min(row.first_seen for row in page.rows), max(row.last_seen for row in page.rows)) if page.rows else None
    traces = {trace.key: trace for trace in load(store, keys, span=span)}
    messages = [_scoped(traces[key], spec) for key in keys if key in traces]
    for trace in messages:
        if any(f.status == "tempfailed" for f in trace.recipients):
            link_attempts(store, trace)
    result = SearchResult(spec, messages, more=page.next_cursor is not None, next_cursor=page.next_cursor)
    result.retention = retention_note(store, spec.since_us, retention_days, now)
    by_key = {trace.key: trace for trace in messages}
    for row in page.rows:
        result.cursors[row.message_key] = cursor_of(row.first_seen, row.message_key)
        shown = by_key.get(row.message_key)
        if shown is None:
            continue
        fate = shown.fate(row.recipient) if row.recipient else shown.outcome
        if fate is not None:
            result.rows.append((shown, fate))
    return result


def _scoped(trace: MessageTrace, spec: SearchSpec) -> MessageTrace:
    """The message as a scoped reader may see it: its recipients in scope and the events of no other."""
    if spec.allowed_domains is None:
        return trace
    mine = [fate for fate in trace.recipients if spec.visible(fate.address)]
    names = {name.lower() for fate in mine for name in (fate.address, fate.mailbox) if name}
    events = [e for e in trace.events if e.recipient is None or e.recipient.lower() in names]
    return dataclasses.replace(trace, recipients=mine, events=events, outcome=None)
