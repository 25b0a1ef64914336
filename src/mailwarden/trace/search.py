"""Search: find messages by sender, recipient, time, ref, message-id, queue id, client, status, reason.

Filters select events in the store (each through an index); the events are grouped into
messages (`correlate.message_key`), newest first, and a page of them is correlated in full.
Gateway, POP3 and ingested events are searched alike.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Final, Literal

from mailwarden.events import Event, now_us
from mailwarden.store import EventQuery, Store
from mailwarden.trace.correlate import Key, link_attempts, load, message_key
from mailwarden.trace.model import STATUSES, MessageTrace, RecipientFate

DAY_US: Final = 86400 * 1_000_000
_SCAN_BATCH: Final = 500


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

    def __post_init__(self) -> None:
        if self.status is not None and self.status not in STATUSES:
            raise ValueError(f"unknown status {self.status!r}; use one of {', '.join(STATUSES)}")
        if self.limit < 1 or self.offset < 0:
            raise ValueError("--limit and --page must be at least 1")

    def event_query(self) -> EventQuery:
        fields: dict[str, object] = {}
        for name, flt in (("sender", self.sender), ("recipient", self.recipient)):
            if flt is not None:
                target = {"exact": name, "domain": f"{name}_domain", "contains": f"{name}_contains"}[flt.mode]
                fields[target] = flt.value
        return EventQuery(
            since_us=self.since_us,
            until_us=self.until_us,
            ref=self.ref,
            message_id=self.message_id,
            queue_id=self.queue_id,
            client_network=self.client,
            reason=self.reason,
            newest_first=True,
            **fields,  # type: ignore[arg-type]
        )

    @property
    def is_empty(self) -> bool:
        return not any(
            (self.sender, self.recipient, self.ref, self.message_id, self.queue_id, self.client, self.reason)
        )

    def wants(self, fate: RecipientFate) -> bool:
        """Whether a recipient's row belongs in the result (status and recipient filters)."""
        if self.status is not None and fate.status != self.status:
            return False
        return self.recipient is None or self.recipient.matches(fate.address) or self.recipient.matches(fate.mailbox)


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
    """One page of messages matching `spec`, newest first."""
    wanted = spec.offset + spec.limit + 1
    matched: list[MessageTrace] = []
    seen: set[Key] = set()
    pending: dict[Key, int] = {}

    def flush() -> None:
        for trace in load(store, pending):
            if any(spec.wants(fate) for fate in trace.fates):
                matched.append(trace)
        pending.clear()

    for event in store.iter_events(spec.event_query(), batch=_SCAN_BATCH):
        key = _key(store, event)
        if key is None or key in seen:
            continue
        seen.add(key)
        pending[key] = event.ts
        if len(pending) >= wanted - len(matched):
            flush()
            if len(matched) >= wanted:
                break
    flush()
    page = matched[spec.offset : spec.offset + spec.limit]
    for trace in page:
        if any(f.status == "tempfailed" for f in trace.recipients):
            link_attempts(store, trace)
    result = SearchResult(spec, page, more=len(matched) > spec.offset + spec.limit)
    result.retention = retention_note(store, spec.since_us, retention_days, now)
    result.rows = [(trace, fate) for trace in page for fate in trace.fates if spec.wants(fate)]
    return result


def _key(store: Store, event: Event) -> Key | None:
    """The message of a matching event; an access logged without our ref is traced via its message-id."""
    key = message_key(event)
    if key is None or key[0] == "ref" or event.kind not in ("retrieve", "delete") or not event.message_id:
        return key
    for delivery in store.query_events(EventQuery(message_id=event.message_id, kinds=("deliver",), limit=5)):
        found = message_key(delivery)
        if found is not None:
            return found
    return key
