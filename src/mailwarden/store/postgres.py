"""PostgreSQL store for several nodes (psycopg 3 with a connection pool): every part of store/parts.py.

Events, their messages and the message index are in `postgres_messages.py`; here the connection
handling, the migrations and the smaller parts: the node-id registry, greylisting, the pregreet
pass cache, rate-limit counters shared by every node, mailboxes, and the tracking center's
accounts.

Every call takes a connection from the pool in autocommit mode; what must happen together runs
in an explicit transaction. Schema migrations are named steps in `MIGRATIONS`, applied once
under an advisory lock, so several nodes starting at once migrate the database once.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import Callable, Iterator, Sequence
from contextlib import AbstractContextManager, contextmanager
from datetime import UTC, datetime
from functools import partial
from typing import Any, Final

import psycopg
from psycopg_pool import ConnectionPool, PoolTimeout

from mailwarden.events import Event, now_us
from mailwarden.store import postgres_messages, web_state
from mailwarden.store.accounts import AuditEntry
from mailwarden.store.base import (
    BatchWriter,
    Committed,
    EventQuery,
    EventWriter,
    Mailbox,
    Position,
    StoreError,
    WriterState,
    write_storable,
)
from mailwarden.store.breaker import CircuitBreaker
from mailwarden.store.parts import Store
from mailwarden.store.postgres_messages import DAY_US
from mailwarden.store.rates import estimate, minute_of
from mailwarden.store.spool import EventSpool, new_batch_id
from mailwarden.store.sql import POSTGRES as SQL
from mailwarden.store.sql import QmarkConnection, SqlConnection
from mailwarden.store.sql_parts import SqlParts, audit_row, refuse_newer_schema
from mailwarden.store.sqlite import events_where

log = logging.getLogger(__name__)

_MIGRATION_LOCK: Final = 0x6D61_696C_7761  # pg_advisory_xact_lock key: one node migrates at a time

# Named schema migrations, applied in this order and remembered in `migrations` (as in the SQLite
# store: append new ones, never edit or reorder applied ones).
MIGRATIONS: Final[list[tuple[str, str]]] = [
    (
        "node_ids",
        "CREATE TABLE nodes (node_id integer PRIMARY KEY, name text NOT NULL UNIQUE, registered_us bigint NOT NULL)",
    ),
    (
        "greylist",
        """
        CREATE TABLE greylist (
            network text NOT NULL, sender text NOT NULL, recipient text NOT NULL,
            first_seen_us bigint NOT NULL, last_seen_us bigint NOT NULL, passed_us bigint,
            attempts integer NOT NULL DEFAULT 1,
            PRIMARY KEY (network, sender, recipient)
        );
        CREATE INDEX greylist_passed ON greylist (network, sender, passed_us) WHERE passed_us IS NOT NULL;
        CREATE INDEX greylist_last_seen ON greylist (last_seen_us)
        """,
    ),
    (
        "pregreet_passes",
        """
        CREATE TABLE pregreet_passes (client_ip text PRIMARY KEY, passed_us bigint NOT NULL);
        CREATE INDEX pregreet_passes_passed ON pregreet_passes (passed_us)
        """,
    ),
    (
        # Hits per counter, key and minute: every node adds to the same rows.
        "rate_counts",
        """
        CREATE TABLE rate_counts (
            counter text NOT NULL, key text NOT NULL, minute bigint NOT NULL, hits integer NOT NULL,
            PRIMARY KEY (counter, key, minute)
        );
        CREATE INDEX rate_counts_minute ON rate_counts (minute)
        """,
    ),
    (
        "mailboxes",
        """
        CREATE TABLE mailboxes (
            address text PRIMARY KEY, password_hash text NOT NULL, created_us bigint NOT NULL,
            settings text NOT NULL DEFAULT '{}'
        )
        """,
    ),
    # Events partitioned by day, their messages' links and queue files, and the message index.
    ("events_and_messages", postgres_messages.SCHEMA),
    (
        # The tracking center: accounts, their sessions and the audit log (store/accounts.py).
        "web_accounts",
        """
        CREATE TABLE web_accounts (
            name text PRIMARY KEY,
            role text NOT NULL CHECK (role IN ('admin', 'support', 'customer')),
            domains text NOT NULL DEFAULT '[]',
            password_hash text NOT NULL,
            created_us bigint NOT NULL
        );
        CREATE TABLE web_sessions (
            token_hash text PRIMARY KEY,
            account text NOT NULL REFERENCES web_accounts (name) ON DELETE CASCADE,
            csrf text NOT NULL,
            created_us bigint NOT NULL,
            seen_us bigint NOT NULL
        );
        CREATE INDEX web_sessions_account ON web_sessions (account);
        CREATE TABLE audit_log (
            id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
            ts bigint NOT NULL,
            account text NOT NULL,
            action text NOT NULL,
            target text,
            client_ip text,
            detail text NOT NULL DEFAULT '{}'
        );
        CREATE INDEX audit_log_account ON audit_log (account, id)
        """,
    ),
    (
        # The ids of the batches written: a batch replayed from a node's spool is written once.
        "written_batches",
        """
        CREATE TABLE written_batches (uid text PRIMARY KEY, ts bigint NOT NULL);
        CREATE INDEX written_batches_ts ON written_batches (ts)
        """,
    ),
    # What the tracking center's processes and nodes share (store/web_state.py; its counter is rate_counts).
    ("web_shared_state", web_state.SCHEMA),
]

_HIT: Final = """
    WITH hit AS (
        INSERT INTO rate_counts (counter, key, minute, hits) VALUES (%(counter)s, %(key)s, %(minute)s, 1)
        ON CONFLICT (counter, key, minute) DO UPDATE SET hits = rate_counts.hits + 1
        RETURNING hits
    )
    SELECT (SELECT hits FROM hit),
        coalesce((SELECT hits FROM rate_counts
                  WHERE counter = %(counter)s AND key = %(key)s AND minute = %(minute)s - 1), 0)
"""


def migrate(conn: psycopg.Connection[Any]) -> None:
    """Apply the migrations not applied yet, each in its own transaction, one node at a time."""
    with conn.transaction():  # the lock first: CREATE ... IF NOT EXISTS of two nodes at once clashes
        conn.execute("SELECT pg_advisory_xact_lock(%s)", (_MIGRATION_LOCK,))
        conn.execute(SQL.create_migrations)
        applied = {row[0] for row in conn.execute(SQL.applied_migrations)}
    refuse_newer_schema(applied, (name for name, _ in MIGRATIONS))
    for name, script in MIGRATIONS:
        if name in applied:
            continue
        with conn.transaction():
            conn.execute("SELECT pg_advisory_xact_lock(%s)", (_MIGRATION_LOCK,))
            if conn.execute(SQL.migration_applied, (name,)).fetchone() is None:
                conn.execute(script.encode())  # several statements: sent as one simple query
                conn.execute(SQL.record_migration, (name, now_us()))


class PostgresStore(SqlParts, Store):
    """Every part of the store in one PostgreSQL database, shared by the nodes that name it."""

    _sql = SQL

    def __init__(
        self,
        url: str,
        *,
        batch_interval: float = 0.05,
        pool_size: int = 8,
        spool: EventSpool | None = None,
        writer: EventWriter | None = None,
    ) -> None:
        """`writer`: where event writes go instead of this store's own writer thread (an SMTP worker's
        link to the supervisor's, which alone keeps the node's spool)."""
        self.url = url
        self._spool = spool
        self._known: dict[str, Mailbox] = {}  # find_mailbox's answers, for while the database is away
        # Open while the database is away: reads fail at once instead of each waiting for the pool.
        self._breaker = CircuitBreaker(self._answers, _PROBE_SECONDS, f"PostgreSQL store {_redacted(url)}")
        self._batch_interval = batch_interval
        self._writer: EventWriter | None = writer
        self._starting = threading.Lock()
        self._writer_conn: psycopg.Connection[Any] | None = None
        self._days: set[int] = set()  # day partitions known to exist
        try:  # a connection of its own first: an unreachable database is reported at once, with its cause
            with _connect(url) as conn:
                migrate(conn)
        except psycopg.Error as exc:
            raise StoreError(f"cannot open the PostgreSQL store {_redacted(url)}: {exc}; {_REMEDY}") from exc
        self._pool = ConnectionPool(
            url,
            min_size=1,
            max_size=pool_size,
            # Reads are planned for their own values every time: a prepared statement's generic plan for a
            # page's rows (`message_key IN (...)` and the domain) walked the whole domain, 400 ms at 70 M events.
            kwargs={"autocommit": True, "prepare_threshold": None, **_DEAD_PEER},
            open=True,
            name="mailwarden",
            check=ConnectionPool.check_connection,  # a restarted database leaves dead connections behind
            timeout=_POOL_WAIT_SECONDS,  # a session waits this long at most for a connection
            # The pool's own reconnection backs off (1, 2, 4, ... s): left to run for minutes, it would
            # still be waiting long after the breaker's probe found the database back. Given up soon, the
            # next request after the breaker closed connects at once.
            reconnect_timeout=_POOL_RECONNECT_SECONDS,
        )

    def _answers(self) -> bool:
        """The breaker's probe: does the database take a connection now?"""
        try:
            _connect(self.url).close()
        except psycopg.Error:
            return False
        return True

    @contextmanager
    def _conn(self) -> Iterator[psycopg.Connection[Any]]:
        """A connection of the pool; StoreError at once while the breaker knows the database away."""
        away = self._breaker.away
        if away is not None:
            raise StoreError(f"PostgreSQL store {_redacted(self.url)} is away ({away}); {_REMEDY}")
        try:
            with self._pool.connection() as conn:
                try:
                    yield conn
                except psycopg.OperationalError as exc:
                    if conn.broken:  # lost in the middle (shut down, network): not a failing statement
                        self._breaker.lost(str(exc).strip())
                    raise
        except PoolTimeout as exc:  # no connection in time: the pool cannot reach the database
            self._breaker.lost(str(exc).strip())
            raise StoreError(f"PostgreSQL store {_redacted(self.url)}: {exc}; {_REMEDY}") from exc
        except psycopg.Error as exc:
            raise StoreError(f"PostgreSQL store {_redacted(self.url)}: {exc}; {_REMEDY}") from exc

    def _statement(self) -> AbstractContextManager[psycopg.Connection[Any]]:
        return self._conn()

    @contextmanager
    def _transaction(self, lock: str | None = None) -> Iterator[psycopg.Connection[Any]]:
        with self._conn() as conn, conn.transaction():
            if lock is not None:
                conn.execute(f"LOCK TABLE {lock} IN SHARE ROW EXCLUSIVE MODE".encode())
            yield conn

    @contextmanager
    def _reads(self) -> Iterator[SqlConnection]:
        with self._conn() as conn:
            yield QmarkConnection(conn)

    # -- events
    def _writer_started(self) -> EventWriter:
        if self._writer is None:
            with self._starting:
                if self._writer is None:
                    self._writer = BatchWriter(
                        self._write_batch,
                        self._batch_interval,
                        "store-writer:postgresql",
                        pending=lambda: self._spool is not None and self._spool.depth() > 0,
                    )
        return self._writer

    def _write_batch(self, events: list[Event], positions: list[Position]) -> None:
        """Called by the writer thread: to the database, or to the local spool while it is away
        (and the spool first while it holds batches, so that they arrive in order)."""
        uid = new_batch_id()
        spool = self._spool
        try:
            if spool is not None and spool.depth():
                self._replay(spool)
            if events or positions:
                self._write(uid, events, positions)
        except _DatabaseAway as exc:
            if spool is None:
                raise StoreError(f"PostgreSQL store {_redacted(self.url)}: {exc}; {_REMEDY}") from exc
            if not events and not positions:
                return  # a flush: what is spooled stays safe there until the database is back
            spool.put(uid, events, positions)  # SpoolFull (a StoreError) when it cannot: the batch is refused
            log.warning("PostgreSQL is away (%s): %d events spooled in %s", exc, len(events), spool.directory)

    def _replay(self, spool: EventSpool) -> None:
        """Write the spooled batches, oldest first, each once; _DatabaseAway when the database still is
        (found before the first file is read: the spool is read for every batch while it is away)."""
        self._writer_connection()
        replayed = 0
        for batch in spool.batches():
            write_storable(partial(self._write, batch.uid), batch.events, batch.positions)
            spool.remove(batch)
            replayed += 1
        log.info("PostgreSQL is back: %d spooled batches replayed", replayed)

    def _writer_connection(self) -> psycopg.Connection[Any]:
        """The writer's own connection, made again when it broke; _DatabaseAway when it cannot be."""
        conn = self._writer_conn
        if conn is None or conn.closed:
            # While the breaker knows the database away, every waiting commit waits for this attempt:
            # against a host that went silent (no reset) the full timeout held them 10 s per batch.
            timeout = _CONNECT_SECONDS if self._breaker.away is None else _AWAY_CONNECT_SECONDS
            try:
                conn = self._writer_conn = _connect(self.url, timeout)
            except psycopg.OperationalError as exc:
                self._breaker.lost(str(exc).strip())
                raise _DatabaseAway(str(exc).strip()) from exc
        return conn

    def _write(self, uid: str, events: list[Event], positions: list[Position]) -> None:
        """One batch in one transaction that records its id: a batch already written is skipped.
        A broken connection is replaced at the next batch."""
        conn = self._writer_connection()
        try:
            postgres_messages.ensure_partitions(conn, {event.ts // DAY_US for event in events}, self._days)
            with conn.transaction():
                first = conn.execute(
                    "INSERT INTO written_batches (uid, ts) VALUES (%s, %s) ON CONFLICT (uid) DO NOTHING",
                    (uid, now_us()),
                ).rowcount
                if first:
                    postgres_messages.write_batch(conn, events, positions)
        except psycopg.OperationalError as exc:  # shut down, connection lost
            conn.close()
            self._breaker.lost(str(exc).strip())
            raise _DatabaseAway(str(exc).strip()) from exc
        except psycopg.Error as exc:
            raise StoreError(f"PostgreSQL store {_redacted(self.url)}: {exc}; {_REMEDY}") from exc
        self._breaker.reached()

    def append(self, event: Event) -> None:
        self._writer_started().put(event)

    def commit_soon(self, events: Sequence[Event], done: Committed) -> None:
        self._writer_started().commit_soon(events, done)

    def append_bulk(self, events: Sequence[Event], positions: Sequence[Position] = ()) -> None:
        self._writer_started().put_bulk(events, positions)

    def flush(self) -> None:
        if self._writer is not None:
            self._writer.flush()

    def writer_state(self) -> WriterState:
        return self._writer.state() if isinstance(self._writer, BatchWriter) else WriterState.idle()

    def save_position(self, position: Position) -> None:
        self._writer_started().put_position(position)

    def query_events(self, query: EventQuery) -> list[Event]:
        where, params = events_where(query)
        tail = " ORDER BY ts DESC, id DESC" if query.newest_first else " ORDER BY ts, id"
        if query.limit is not None or query.offset:
            tail += " LIMIT ? OFFSET ?"
            params.extend([query.limit, query.offset])
        with self._conn() as conn:
            return postgres_messages.query(conn, where, params, tail)

    def events_after(self, after_id: int, limit: int) -> list[Event]:
        with self._conn() as conn:
            return postgres_messages.query(conn, " WHERE id > ?", [after_id, limit], " ORDER BY id LIMIT ?")

    def purge_events(self, before_us: int) -> int:
        """Whole days older than `before_us` go by dropping their partitions; the day it falls in row by row."""
        total = 0
        with self._conn() as conn:
            parts = conn.execute(
                "SELECT child.relname FROM pg_inherits JOIN pg_class AS child ON child.oid = inhrelid"
                " JOIN pg_class AS parent ON parent.oid = inhparent WHERE parent.relname = 'events'"
            ).fetchall()
            for (name,) in parts:
                day = _day_of(str(name))
                if day is None:
                    continue
                if (day + 1) * DAY_US <= before_us:
                    with conn.transaction():
                        total += int(conn.execute(f"SELECT count(*) FROM {name}".encode()).fetchone()[0])  # type: ignore[index]
                        conn.execute(f"DROP TABLE {name}".encode())
                    self._days.discard(day)
            with conn.transaction():
                total += conn.execute("DELETE FROM events WHERE ts < %s", (before_us,)).rowcount
                conn.execute(SQL.purge_index, (before_us,))
                conn.execute(SQL.purge_links, (before_us,))
                conn.execute("DELETE FROM written_batches WHERE ts < %s", (before_us,))
                conn.execute(SQL.purge_roots)
        return total

    # -- the message index
    def reindex(self, progress: Callable[[int], None] | None = None) -> int:
        self.flush()
        with self._conn() as conn, conn.transaction():
            return postgres_messages.rebuild(conn, progress)

    # -- rate limits, counted across every node of the database
    async def rate_hit(self, counter: str, key: str, now: float) -> int:
        return await asyncio.to_thread(self._rate_hit, counter, key, now)

    def _rate_hit(self, counter: str, key: str, now: float) -> int:
        minute = minute_of(now)
        with self._conn() as conn:
            row = conn.execute(_HIT, {"counter": counter, "key": key, "minute": minute}).fetchone()
            if row is not None and row[0] == 1:  # the first hit of a minute for this key: sweep the old ones
                conn.execute("DELETE FROM rate_counts WHERE minute < %s", (minute - 1,))
        assert row is not None
        return estimate(int(row[0]), int(row[1]), now)

    # -- mailboxes
    async def find_mailbox(self, address: str) -> Mailbox | None:
        """`get_mailbox` for the session path; while the database is away, a mailbox found before
        is still found (mail keeps flowing, its events spooled), an unknown one raises."""
        known = self._known.get(address)
        if known is not None and self._breaker.away is not None:
            return known  # not even a thread's hop while the database is known to be away
        try:
            mailbox = await asyncio.to_thread(self.get_mailbox, address)
        except StoreError:
            if known is not None:
                return known
            raise
        if mailbox is None:
            self._known.pop(address, None)
        else:
            if len(self._known) > _KNOWN_MAILBOXES:
                self._known.clear()
            self._known[address] = mailbox
        return mailbox

    def _mailbox_changed(self, address: str) -> None:
        self._known.pop(address, None)

    # -- the tracking center's audit log (the rest of its part: SqlParts); each entry is its own
    # commit: PostgreSQL groups the concurrent ones into one WAL flush itself
    def add_audit(self, entry: AuditEntry) -> None:
        with self._conn() as conn:
            conn.execute(SQL.add_audit, audit_row(entry))

    @contextmanager
    def _web_state_sql(self) -> Iterator[QmarkConnection]:
        with self._conn() as conn:
            yield QmarkConnection(conn)

    def close(self) -> None:
        self._breaker.close()
        if self._writer is not None:
            self._writer.close()
            self._writer = None
        if self._writer_conn is not None:
            self._writer_conn.close()
            self._writer_conn = None
        self._pool.close()


class _DatabaseAway(Exception):
    """The database cannot be reached (or went away during the batch): spool, retry later."""


def _day_of(partition: str) -> int | None:
    """The day number of a partition named by `postgres_messages.partition_name`, or None."""
    try:
        day = datetime.strptime(partition.removeprefix("events_d"), "%Y%m%d").replace(tzinfo=UTC)
    except ValueError:
        return None
    return int(day.timestamp()) // 86_400


_CONNECT_SECONDS: Final = 10
_AWAY_CONNECT_SECONDS: Final = 2  # the event writer's attempts while the breaker is open (then it spools)
# When a connection counts as lost although its host never said so (a network partition, a host
# that died): no answer to keepalive probes for 10 + 3 x 5 s, or data unacknowledged for 30 s.
# Without them a statement sent just before a partition waits for the kernel's retransmissions
# (about 15 minutes), and one waiting for its answer waits forever - the event writer with it,
# and every session waiting for its commit. A busy server's kernel still answers both.
_DEAD_PEER: Final[dict[str, Any]] = {
    "keepalives": 1,
    "keepalives_idle": 10,
    "keepalives_interval": 5,
    "keepalives_count": 3,
    "tcp_user_timeout": 30_000,
}
_KNOWN_MAILBOXES: Final = 100_000
_POOL_WAIT_SECONDS: Final = 3.0
_POOL_RECONNECT_SECONDS: Final = 3.0
_PROBE_SECONDS: Final = 1.0  # between the breaker's probes while the database is away
_REMEDY: Final = "check that PostgreSQL runs and that [store] url names a database this node may write to"


def _connect(url: str, timeout: int = _CONNECT_SECONDS) -> psycopg.Connection[Any]:
    """A connection of its own (migration, the breaker's probe, the event writer), as the pool's are made."""
    return psycopg.connect(url, autocommit=True, connect_timeout=timeout, **_DEAD_PEER)


def _redacted(url: str) -> str:
    """The URL without its password (it ends up in logs and error messages)."""
    head, at, tail = url.rpartition("@")
    if not at or ":" not in head.removeprefix("postgresql://"):
        return url
    user = head.removeprefix("postgresql://").split(":", 1)[0]
    return f"postgresql://{user}:***@{tail}"
