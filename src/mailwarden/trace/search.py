"""Search: find messages by sender, recipient, time, ref, message-id, queue id, client, status, reason.

Filters select events in the store (each through an index); the events are grouped into
messages (the root of their message keys), newest first, and a page of them is correlated in full.
Gateway, POP3 and ingested events are searched alike.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass, field
from typing import Final, Literal

from mailwarden.events import now_us
from mailwarden.store import EventQuery, Store
from mailwarden.trace.correlate import Messages, link_attempts, load
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
        if self.client is not None:
            try:
                ipaddress.ip_network(self.client, strict=False)
            except ValueError:
                raise ValueError(
                    f"--client-ip {self.client!r} is not an address or network (192.0.2.7, 192.0.2.0/24)"
                ) from None
        if self.limit < 1 or self.offset < 0:
            raise ValueError("--limit and --page must be at least 1")

    def event_query(self) -> EventQuery:
        """The store query for candidate messages: the most selective filter and the time window.

        Filters may match different events of one message (the recipient is named at RCPT, the
        refusal for its content comes after DATA), so the others are checked on the whole message.
        """
        seed: dict[str, object] = {}
        for name in ("ref", "message_id", "queue_id"):
            if getattr(self, name) is not None:
                seed = {name: getattr(self, name)}
                break
        else:
            exact = [
                (n, f) for n, f in (("recipient", self.recipient), ("sender", self.sender)) if f and f.mode == "exact"
            ]
            if exact:
                seed = {exact[0][0]: exact[0][1].value}
            elif self.client is not None:
                seed = {"client_network": self.client}
            elif self.recipient is not None or self.sender is not None:
                name, flt = ("recipient", self.recipient) if self.recipient is not None else ("sender", self.sender)
                assert flt is not None
                seed = {f"{name}_domain" if flt.mode == "domain" else f"{name}_contains": flt.value}
            elif self.reason is not None:
                seed = {"reason": self.reason}
        return EventQuery(since_us=self.since_us, until_us=self.until_us, newest_first=True, **seed)  # type: ignore[arg-type]

    def matches(self, trace: MessageTrace) -> bool:
        """Whether the whole message satisfies every filter (any of its events may carry the value)."""
        events = trace.events

        def any_event(name: str, value: str | None) -> bool:
            return value is None or any(getattr(e, name) == value for e in events)

        if not (
            any_event("ref", self.ref)
            and any_event("message_id", self.message_id)
            and any_event("queue_id", self.queue_id)
        ):
            return False
        if self.sender is not None and not self.sender.matches(trace.sender):
            return False
        if self.recipient is not None and not any(
            self.recipient.matches(f.address) or self.recipient.matches(f.mailbox) for f in trace.fates
        ):
            return False
        if self.reason is not None and not any(e.reason == self.reason for e in events):
            return False
        if self.client is not None:
            network = ipaddress.ip_network(self.client, strict=False)
            if not any(_in_network(e.client_ip, network) for e in events):
                return False
        return any(self.wants(fate) for fate in trace.fates)

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
    seen: set[str] = set()
    pending: list[str] = []
    messages = Messages(store)

    def flush() -> None:
        for trace in load(store, pending, messages):
            if spec.matches(trace):
                matched.append(trace)
        pending.clear()

    for event in store.iter_events(spec.event_query(), batch=_SCAN_BATCH):
        key = messages.root(event)
        if key is None or key in seen:
            continue
        seen.add(key)
        pending.append(key)
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


def _in_network(address: str | None, network: ipaddress.IPv4Network | ipaddress.IPv6Network) -> bool:
    try:
        return address is not None and ipaddress.ip_address(address) in network
    except ValueError:
        return False
