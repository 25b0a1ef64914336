"""The store's shared data types (queries, pages, entries) and the batching event writer every backend uses; the interface is store/parts.py."""

from __future__ import annotations

import asyncio
import logging
import re
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, Final, Protocol

from mailwarden.events import FIELDS, Event
from mailwarden.groupcommit import Inbox, settle_soon
from mailwarden.messages.index import IndexRow
from mailwarden.text import printable

log = logging.getLogger(__name__)

LARGEST_INTEGER: Final = (1 << 63) - 1
"""The largest number an integer column holds (SQLite's INTEGER, PostgreSQL's BIGINT): a time, an
event id or an audit id that a stranger sends beyond it is refused before it reaches the database
driver, which would fail on it."""


class StoreError(Exception):
    """The store cannot do what was asked; the message says why and what to do.

    `reason` is the catalog reason a transaction refused for it gets.
    """

    reason = "infra.storage"


@dataclass(frozen=True)
class Mailbox:
    address: str
    password_hash: str
    created_us: int
    settings: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class EventQuery:
    """Filters for reading raw events; every given field must match (all of them together).

    Addresses (`recipient`, `sender`) match without regard to case. The `*_domain` and
    `*_contains` forms, `client_network` (an address or CIDR network), `reason` and the lists
    (`ids`, `refs`, `sessions`, `message_ids`, `queue_ids`, `message_keys`: any of them) serve the
    trace; `keyless` keeps only events of no message (a connection's own events).
    """

    since_us: int | None = None
    until_us: int | None = None
    kinds: Sequence[str] = ()
    ref: str | None = None
    session: str | None = None
    node: str | None = None
    source: str | None = None
    message_id: str | None = None
    recipient: str | None = None
    sender: str | None = None
    client_ip: str | None = None
    queue_id: str | None = None
    limit: int | None = None
    newest_first: bool = False
    offset: int = 0
    ids: Sequence[int] = ()
    refs: Sequence[str] = ()
    sessions: Sequence[tuple[str, str]] = ()  # (node, session) pairs
    message_ids: Sequence[str] = ()
    queue_ids: Sequence[str] = ()
    recipients: Sequence[str] = ()
    recipient_domain: str | None = None
    recipient_contains: str | None = None
    sender_domain: str | None = None
    sender_contains: str | None = None
    client_network: str | None = None  # "192.0.2.7" or "192.0.2.0/24" or "2001:db8::/32"
    reason: str | None = None
    message_id_prefix: str | None = None  # Message-IDs starting with it (Dovecot logs long ones cut)
    message_keys: Sequence[str] = ()
    keyless: bool = False


@dataclass(frozen=True)
class IndexQuery:
    """Filters on the message index; a message matches when one of its rows (recipients) meets them all.

    Addresses and domains match without regard to case; `client_network` is an address or CIDR
    network; `message_key` a message's key (our ref is its message's key); `queue_id` names any
    hop of a message (a content filter's re-injection too). Times bound the message's first
    event. `allowed_domains` scopes everything to the recipients of those domains (a customer's
    view): no other filter reaches past it, and an empty set finds nothing; None is unscoped.
    """

    since_us: int | None = None
    until_us: int | None = None
    status: str | None = None
    reason: str | None = None
    sender: str | None = None
    sender_domain: str | None = None
    sender_contains: str | None = None
    recipient: str | None = None
    recipient_domain: str | None = None
    recipient_contains: str | None = None
    client_network: str | None = None
    message_key: str | None = None
    message_id: str | None = None
    queue_id: str | None = None
    allowed_domains: frozenset[str] | None = None


@dataclass(frozen=True)
class IndexPage:
    """A page of messages from the index: all their matching rows, newest message first."""

    rows: list[IndexRow]
    after: tuple[int, str] | None  # where the next page begins (first_seen, key of the last message); None: no more
    before: tuple[int, str] | None = None  # where the previous (newer) page ends (its first message); None: none


@dataclass(frozen=True)
class GreylistEntry:
    """One greylisting triplet: client network, envelope sender, recipient mailbox."""

    network: str
    sender: str  # "" for the null sender
    recipient: str
    first_seen_us: int
    last_seen_us: int
    passed_us: int | None = None  # when a retry after the delay was let through
    attempts: int = 1


@dataclass(frozen=True)
class Position:
    """A named reading position (a log follower's file and offset) kept in the store.

    It is committed in the same transaction as the events queued before it, so after a crash
    the position never runs ahead of the stored events (no gap) nor lags behind them (no duplicates).
    """

    name: str
    value: str


Committed = Callable[[StoreError | None], None]  # told None once committed, else why not


@dataclass(frozen=True)
class WriterState:
    """What the event writer has not committed yet (for /metrics and /health, exporter.py)."""

    queued: int  # events and commits waiting, plus the events of a batch being written or kept for a retry
    oldest_seconds: float  # how long the oldest of them has waited (0.0 with none)
    error: str | None  # why the last write failed; None once a write succeeded

    @classmethod
    def idle(cls) -> WriterState:
        return cls(0, 0.0, None)


async def committed(commit_soon: Callable[[Sequence[Event], Committed], None], events: Sequence[Event] = ()) -> None:
    """Wait on the event loop until `commit_soon(events, ...)` reports; raise its StoreError."""
    loop = asyncio.get_running_loop()
    future: asyncio.Future[None] = loop.create_future()
    commit_soon(events, lambda error: settle_soon(loop, [(future, error, None)]))
    await future


class _Barrier:
    """A marker in the write queue: `done` is told once everything queued before it (and its own events) is committed.

    Its own `events` are written in the same transaction but, unlike queued events, are not kept
    for a retry when the write fails: the caller learns of the failure and records what it did instead.
    """

    __slots__ = ("done", "events")

    def __init__(self, events: Sequence[Event], done: Committed) -> None:
        self.events = events
        self.done = done


class _Bulk:
    """A bulk import's batch: its events and the positions after them, committed in a transaction that ends with them."""

    __slots__ = ("events", "positions")

    def __init__(self, events: Sequence[Event], positions: Sequence[Position]) -> None:
        self.events = events
        self.positions = positions


def _ends_transaction(item: Event | Position | _Barrier | _Bulk) -> bool:
    """A transaction ends with a position (or a bulk batch and its positions): a restart resumes
    there, so no event read after it may be committed with it, or it would be stored twice."""
    return isinstance(item, Position | _Bulk)


_TEXT_FIELDS: Final = tuple(name for name in FIELDS if name not in ("ts", "smtp_code", "size", "detail"))
_SURROGATE: Final = re.compile("[\ud800-\udfff]")


def _storable_text(text: str) -> str:
    """`text` as every store holds it: UTF-8 (a lone surrogate is none) and no NUL (PostgreSQL's text has none)."""
    return _SURROGATE.sub("\ufffd", text.replace("\x00", "\ufffd"))


def _storable_detail(value: Any) -> Any:
    """`detail` with its texts (keys too) storable; it is stored as JSON text, which holds any number."""
    if isinstance(value, str):
        return _storable_text(value)
    if isinstance(value, dict):
        return {_storable_text(str(key)): _storable_detail(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [_storable_detail(item) for item in value]
    return value


def make_storable(event: Event) -> list[str]:
    """Change `event` in place so that any store can hold it; the fields changed (none: it could already).

    A lone surrogate (no UTF-8) or NUL in a text becomes U+FFFD, a code or size beyond 64 bits is
    left out, and `detail` notes what was changed (`ts` is always our own). Every input is checked
    where it comes in; this is the last line behind those checks: one event the database refuses
    would otherwise fail its batch again at every retry and hold back every later event.
    """
    changed: list[str] = []
    for name in _TEXT_FIELDS:
        value = getattr(event, name)
        if isinstance(value, str) and (fixed := _storable_text(value)) != value:
            setattr(event, name, fixed)
            changed.append(name)
    for name in ("smtp_code", "size"):
        value = getattr(event, name)
        if value is not None and not -LARGEST_INTEGER - 1 <= value <= LARGEST_INTEGER:
            setattr(event, name, None)
            changed.append(name)
    if event.detail and (fixed_detail := _storable_detail(event.detail)) != event.detail:
        event.detail = fixed_detail
        changed.append("detail")
    if changed:
        event.detail = {**event.detail, "changed_to_be_stored": changed}
    return changed


def made_storable(events: Iterable[Event], problem: Exception) -> bool:
    """After a failed write: `make_storable` each event, warn of each one changed; whether any was.
    None changed: the failure was not theirs (a full disk, a database away)."""
    changed = False
    for event in events:
        fields = make_storable(event)
        if fields:
            changed = True
            log.warning(
                "a %s event (session %s, ref %s) could not be stored as written (%s): stored with %s changed",
                event.kind,
                printable(str(event.session), 64),
                printable(str(event.ref), 64),
                printable(str(problem), 200),
                ", ".join(fields),
            )
    return changed


def write_storable(
    write: Callable[[list[Event], list[Position]], None], events: list[Event], positions: list[Position]
) -> None:
    """`write` a batch; if it fails because of events no store can hold as they are, once more
    with those changed. Any other failure is raised as it came: the batch is kept and retried whole."""
    try:
        write(events, positions)
    except Exception as exc:
        if not made_storable(events, exc):
            raise
        write(events, positions)


class EventWriter(Protocol):
    """What a store hands its event writes to: its own `BatchWriter`, or in an SMTP worker the
    link to the supervisor's (store/remote.py)."""

    def put(self, event: Event) -> None: ...

    def put_many(self, events: Iterable[Event]) -> None: ...

    def put_position(self, position: Position) -> None: ...

    def put_bulk(self, events: Sequence[Event], positions: Sequence[Position]) -> None: ...

    def commit_soon(self, events: Sequence[Event], done: Committed) -> None: ...

    def flush(self) -> None: ...

    def close(self) -> None: ...


def wait_until_committed(writer: EventWriter) -> None:
    """Block until everything `writer` was given so far is committed; raise its StoreError if not.

    The `flush` of every writer: an empty `commit_soon` is a barrier behind what is queued."""
    finished = threading.Event()
    errors: list[StoreError | None] = []

    def done(error: StoreError | None) -> None:
        errors.append(error)
        finished.set()

    writer.commit_soon((), done)
    finished.wait()
    if errors[0] is not None:
        raise errors[0]


class BatchWriter:
    """One thread that writes queued events in batches (group commit).

    Sessions never wait for the disk unless they ask to: `commit_soon()` reports once everything
    queued so far is committed, which the gateway waits for before it answers 250.
    """

    MAX_BATCH = 5000
    BULK_QUEUED = 2  # bulk batches waiting for the writer before `put_bulk` waits (memory)

    def __init__(
        self,
        write_batch: Callable[[list[Event], list[Position]], None],
        interval: float,
        name: str,
        *,
        pending: Callable[[], bool] = lambda: False,
    ) -> None:
        """`pending` says whether `write_batch` has work of its own even for an empty batch (a
        spool to replay): then a flush or commit calls it without events."""
        self._write_batch = write_batch
        self._pending = pending
        self._inbox: Inbox[Event | Position | _Barrier | _Bulk] = Inbox(
            self.MAX_BATCH, interval, ends_batch=_ends_transaction
        )
        self._bulk_room = threading.BoundedSemaphore(self.BULK_QUEUED)
        self._retry: list[Event] = []
        self._retry_positions: dict[str, Position] = {}
        self._in_hand = 0  # events of the batch being written, or kept for a retry
        self._in_hand_since: float | None = None  # when the oldest of them was taken (monotonic)
        self._error: str | None = None
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._thread.start()

    def put(self, event: Event) -> None:
        self._inbox.put(event)

    def put_many(self, events: Iterable[Event]) -> None:
        for event in events:
            self._inbox.put(event)

    def put_position(self, position: Position) -> None:
        self._inbox.put(position)

    def put_bulk(self, events: Sequence[Event], positions: Sequence[Position]) -> None:
        """Queue a bulk batch; waits while `BULK_QUEUED` batches are still to be written."""
        self._bulk_room.acquire()
        self._inbox.put(_Bulk(events, positions))

    def commit_soon(self, events: Sequence[Event], done: Committed) -> None:
        """Commit `events` with everything queued before them, at once; `done` is called from the writer's thread."""
        self._inbox.put(_Barrier(events, done), urgent=True)

    def flush(self) -> None:
        wait_until_committed(self)

    def close(self) -> None:
        self.flush()
        self._inbox.close()
        self._thread.join()

    def state(self) -> WriterState:
        """Read from any thread; the figures of different moments, which is close enough for monitoring."""
        waiting, first_at = self._inbox.backlog()
        since = [t for t in (first_at, self._in_hand_since) if t is not None]
        oldest = time.monotonic() - min(since) if since else 0.0
        return WriterState(waiting + self._in_hand, oldest, self._error)

    def _run(self) -> None:
        while items := self._inbox.take():
            if self._in_hand_since is None:
                self._in_hand_since = time.monotonic()
            self._in_hand = len(items) + len(self._retry)
            self._commit(items)

    def _commit(self, items: list[Event | Position | _Barrier | _Bulk]) -> None:
        events = list(self._retry)  # everything to write, in queue order
        queued = list(self._retry)  # what is kept for a retry if the write fails
        positions = dict(self._retry_positions)
        barriers: list[_Barrier] = []
        bulks = 0
        for item in items:
            if isinstance(item, Event):
                events.append(item)
                queued.append(item)
            elif isinstance(item, Position):
                positions[item.name] = item
            elif isinstance(item, _Bulk):
                events.extend(item.events)
                queued.extend(item.events)
                positions.update((position.name, position) for position in item.positions)
                bulks += 1
            else:
                events.extend(item.events)
                barriers.append(item)
        error: StoreError | None = None
        if events or positions or (barriers and self._pending()):
            try:
                write_storable(self._write_batch, events, list(positions.values()))
                self._retry = []
                self._retry_positions = {}
                self._error = None
            except Exception as exc:  # disk full, locked database, ...: keep the rows and retry
                log.error("event store write failed (%s); %d events kept for retry", exc, len(queued))
                error = StoreError(f"event store write failed: {exc}")
                self._error = str(exc)
                if isinstance(exc, StoreError):
                    error.reason = exc.reason  # e.g. a full spool's own catalog reason
                self._retry = queued  # all of them: none is dropped (the gateway refuses mail meanwhile)
                self._retry_positions = positions
        if not self._retry:  # before anyone hears of it: whoever was told "committed" finds nothing waiting
            self._in_hand, self._in_hand_since = 0, None
        for barrier in barriers:
            try:
                barrier.done(error)
            except Exception:  # a waiter's bug must not stop the writer
                log.exception("a commit's waiter failed")
        for _ in range(bulks):
            self._bulk_room.release()
