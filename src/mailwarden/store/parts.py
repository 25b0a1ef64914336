"""The store in narrow parts: what a backend implements, one part at a time, and what a user needs.

A check or a role asks for the one part it uses (the greylist check for `GreylistState`, the
recipients check for `MailboxLookup`, ...), so a second backend can be built and tested part by
part, and a reader sees at a glance what a piece of code may touch. `Store` is all of them
together: what `open_store` returns and every backend implements. The parts are protocols: a
test may hand a check any object with the right methods.
"""

from __future__ import annotations

from abc import abstractmethod
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import replace
from typing import Any, Protocol

from mailwarden.events import Event
from mailwarden.messages.keys import Link
from mailwarden.store.accounts import AccountStore
from mailwarden.store.base import (
    Committed,
    EventQuery,
    GreylistEntry,
    IndexPage,
    IndexQuery,
    Mailbox,
    Position,
    StoreError,
    WriterState,
    committed,
)
from mailwarden.store.web_state import WebState


class EventLog(Protocol):
    """Events: written in queued batches (group commit), read directly."""

    @abstractmethod
    def append(self, event: Event) -> None:
        """Queue one event for writing; never blocks on the disk."""

    def append_many(self, events: Iterable[Event]) -> None:
        for event in events:
            self.append(event)

    @abstractmethod
    def commit_soon(self, events: Sequence[Event], done: Committed) -> None:
        """Commit every event queued so far, and `events`, durably and at once; then call `done`.

        `done` is called from another thread: with None once committed, or with the StoreError;
        then `events` are not stored (queued events are kept and retried), so the caller can
        undo what they describe and record that instead. It must not block.
        """

    async def durable(self, events: Sequence[Event] = ()) -> None:
        """`commit_soon` for a coroutine: returns once committed, raises StoreError when not."""
        await committed(self.commit_soon, events)

    @abstractmethod
    def flush(self) -> None:
        """Synchronous `durable`, for the command line and importers."""

    def writer_state(self) -> WriterState:
        """What this store's own event writer has not committed yet (idle where writes go elsewhere)."""
        return WriterState.idle()

    @abstractmethod
    def query_events(self, query: EventQuery) -> list[Event]:
        """Read events matching `query`, oldest first unless `newest_first`."""

    def iter_events(self, query: EventQuery, batch: int = 500) -> Iterator[Event]:
        """`query_events` in pages, so a caller can stop early (e.g. once a page of messages is full)."""
        offset, remaining = query.offset, query.limit
        while remaining is None or remaining > 0:
            size = batch if remaining is None else min(batch, remaining)
            page = self.query_events(replace(query, limit=size, offset=offset))
            yield from page
            if len(page) < size:
                return
            offset += size
            remaining = None if remaining is None else remaining - size

    @abstractmethod
    def events_after(self, after_id: int, limit: int) -> list[Event]:
        """Up to `limit` events with ids above `after_id`, in id order (the order they were written): an export."""

    @abstractmethod
    def links(self, keys: Sequence[str]) -> list[Link]:
        """The links of these message keys, and every link of the handles they name (both sides of each hop)."""

    @abstractmethod
    def queue_life(self, node: str, queue_id: str, at_us: int) -> str | None:
        """The key of the life of `queue_id` on `node` written last before `at_us` (within the ten
        days a queue file may live), for an ingest run that meets the file in the middle of its life."""

    @abstractmethod
    def purge_events(self, before_us: int) -> int:
        """Delete events older than `before_us` (and what only they were evidence of); return how many went."""

    @abstractmethod
    def count_events(self) -> int:
        """How many events belong to a message (what `reindex` folds)."""

    @abstractmethod
    def count_events_after(self, after_id: int) -> int:
        """How many events were written after event `after_id`, a connection's own too (what
        `store migrate` has still to copy)."""

    @abstractmethod
    def oldest_event_us(self) -> int | None:
        """The time of the oldest event kept (None when there are none): where the data begins."""


class Positions(Protocol):
    """Reading positions of log followers and imports, committed with the events read before them."""

    @abstractmethod
    def save_position(self, position: Position) -> None:
        """Queue a reading position; it is committed together with the events queued before it."""

    @abstractmethod
    def load_position(self, name: str) -> str | None:
        """The committed value of the position `name`, or None."""


class MessageIndex(Protocol):
    """The message index (messages/index.py): one row per message and recipient, for searches and counts."""

    @abstractmethod
    def index_page(
        self,
        query: IndexQuery,
        *,
        limit: int,
        after: tuple[int, str] | None = None,
        offset: int = 0,
        before: tuple[int, str] | None = None,
    ) -> IndexPage:
        """`limit` messages matching `query`, newest first, after the message `after` (a keyset
        position, which costs the same on every page) or after skipping `offset` messages; with
        `before`, the `limit` messages just newer than that one (the previous page)."""

    @abstractmethod
    def index_counts(self, query: IndexQuery) -> list[tuple[str, str | None, int]]:
        """How many rows (recipients of messages) match `query`, by status and reason."""

    @abstractmethod
    def reindex(self, progress: Callable[[int], None] | None = None) -> int:
        """Rebuild the message index from the events (`progress` is told how many were folded); the rows written."""


class MailboxLookup(Protocol):
    """What the session path needs of the mailboxes: find one by address."""

    @abstractmethod
    async def find_mailbox(self, address: str) -> Mailbox | None:
        """The mailbox of `address` or None (a point lookup; a backend may remember found ones for a moment)."""


class Mailboxes(MailboxLookup, Protocol):
    """The local mailboxes (`mailwarden users`, POP3 logins, the recipients check)."""

    @abstractmethod
    def add_mailbox(self, address: str, password_hash: str) -> Mailbox:
        """Create the mailbox; StoreError when it exists."""

    @abstractmethod
    def remove_mailbox(self, address: str) -> bool: ...

    @abstractmethod
    def set_password(self, address: str, password_hash: str) -> bool: ...

    @abstractmethod
    def get_mailbox(self, address: str) -> Mailbox | None: ...

    @abstractmethod
    def list_mailboxes(self) -> list[Mailbox]: ...

    @abstractmethod
    def update_mailbox_settings(self, address: str, settings: dict[str, Any]) -> bool: ...

    async def find_mailbox(self, address: str) -> Mailbox | None:
        return self.get_mailbox(address)


class GreylistState(Protocol):
    """Greylisting triplets (checks/greylist.py); blocking calls, made off the event loop."""

    @abstractmethod
    def greylist_get(self, network: str, sender: str, recipient: str) -> GreylistEntry | None: ...

    @abstractmethod
    def greylist_put(self, entry: GreylistEntry) -> None:
        """Insert or replace the entry of its triplet."""

    @abstractmethod
    def greylist_sender_passed(self, network: str, sender: str, since_us: int) -> bool:
        """Whether mail from `sender` via `network` passed greylisting (for any recipient) since then."""

    @abstractmethod
    def greylist_purge(self, before_us: int) -> int:
        """Forget triplets last seen before then; returns how many."""


class PregreetPasses(Protocol):
    """The pregreet pass cache (checks/pregreet.py); blocking calls, made off the event loop."""

    @abstractmethod
    def pregreet_passed(self, client_ip: str) -> int | None:
        """When `client_ip` last waited for our greeting (microseconds), or None."""

    @abstractmethod
    def pregreet_pass(self, client_ip: str, at_us: int, forget_before_us: int) -> None:
        """Remember that `client_ip` waited for our greeting at `at_us`; forget passes older than the other."""


class RateLimitState(Protocol):
    """Rate-limit counters (checks/ratelimit.py): where the events of the last minute are counted."""

    @abstractmethod
    async def rate_hit(self, counter: str, key: str, now: float) -> int:
        """Count one event of `counter` (e.g. "connections") for `key` at `now` (seconds since the
        epoch) and return the events of the last minute, this one included, rounded up."""


class NodeRegistry(Protocol):
    """The node ids refs carry (refs.py: 10 bits hashed from the node name), one name per id."""

    @abstractmethod
    def register_node(self, name: str, node_id: int) -> None:
        """Record that node `name` issues refs with `node_id`; StoreError when another node holds the id."""

    @abstractmethod
    def forget_node(self, name: str) -> bool:
        """Free the id of a node that no longer runs; False when no such node is registered."""


def node_clash(name: str, node_id: int, other: str) -> StoreError:
    """Why a node may not start: its refs would be another node's (every backend says it alike)."""
    return StoreError(
        f"node {name!r} hashes to node id {node_id}, which node {other!r} already uses in this store, "
        "so their refs would collide: give this node another [node] name (if the other node no longer "
        f"runs, `mailwarden store forget-node {other}` frees the id)"
    )


class Store(
    EventLog,
    Positions,
    MessageIndex,
    Mailboxes,
    GreylistState,
    PregreetPasses,
    RateLimitState,
    NodeRegistry,
    AccountStore,
    WebState,
):
    """Every part together: what `open_store` returns and a backend implements (the tracking
    center's accounts and audit log are the part `AccountStore`, store/accounts.py; what its
    processes share, `WebState`, store/web_state.py)."""

    def append_bulk(self, events: Sequence[Event], positions: Sequence[Position] = ()) -> None:
        """Queue a bulk import's batch (thousands of events): committed together with `positions`,
        in a transaction that ends with them, so a restart at a position neither repeats nor skips
        a line. Few, large transactions instead of many small ones; may wait while earlier batches
        are still being written. The gateway's `durable` path is not involved."""
        self.append_many(events)
        for position in positions:
            self.save_position(position)

    def append_bulk_part(self, events: Sequence[Event]) -> bool:
        """Begin writing part of the next bulk batch now, in the transaction that the next
        `append_bulk` commits with the rest and its positions (or not at all): a store whose writer
        runs beside the importer (SQLite's writer process) then writes while the rest is read.
        False: not taken, and the events stay the caller's, for `append_bulk`."""
        return False

    @abstractmethod
    def close(self) -> None: ...
