"""SQLite store (the embedded default): WAL mode, one batching writer thread, versioned schema.

WAL lets the CLI and the web read while the daemon writes. The writer commits with
synchronous=FULL, so a committed batch survives a power cut, and group commit keeps that cheap.
"""

from __future__ import annotations

import functools
import ipaddress
import re
import sqlite3
import sys
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import AbstractContextManager, contextmanager
from pathlib import Path
from typing import Any, Final, cast

import apsw

from mailwarden.events import FIELDS, Event, now_us
from mailwarden.store import sqlite_index, sqlite_messages
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
)
from mailwarden.store.parts import RateLimitState, Store
from mailwarden.store.rates import MemoryRates
from mailwarden.store.sql import SQLITE as SQL
from mailwarden.store.sql import WriterConnection
from mailwarden.store.sql_parts import SqlParts, audit_row, refuse_newer_schema
from mailwarden.store.sqlite_accounts import SCHEMA as ACCOUNTS_SCHEMA
from mailwarden.store.sqlite_accounts import AuditLog
from mailwarden.store.sqlite_bulk import BulkProcess, Part, Places, Rows
from mailwarden.store.sqlite_index import MessageIndex
from mailwarden.store.sqlite_messages import InsertRows, MessageBook, event_rows, insert_prepared
from mailwarden.store.web_state import SCHEMA as WEB_STATE_SCHEMA
from mailwarden.store.web_state import SQLITE_RATE_COUNTS

Migration = str | Callable[[sqlite3.Connection], None]  # an SQL script, or a step over the data

# Named schema migrations, applied in this order and remembered in the `migrations` table.
# Append new ones (a unique name per change); never edit or reorder applied ones.
MIGRATIONS: Final[list[tuple[str, Migration]]] = [
    (
        "0001_events_and_mailboxes",
        """
    CREATE TABLE events (
        id INTEGER PRIMARY KEY,
        ts INTEGER NOT NULL, node TEXT NOT NULL, source TEXT NOT NULL, kind TEXT NOT NULL,
        session TEXT, ref TEXT, queue_id TEXT, message_id TEXT, client_ip TEXT, client_name TEXT,
        helo TEXT, sender TEXT, recipient TEXT, smtp_code INTEGER, enhanced_code TEXT, reply TEXT,
        reason TEXT, detail TEXT, size INTEGER, evidence TEXT
    );
    CREATE INDEX events_ts ON events (ts);
    CREATE INDEX events_ref ON events (ref) WHERE ref IS NOT NULL;
    CREATE INDEX events_session ON events (node, session) WHERE session IS NOT NULL;
    CREATE INDEX events_message_id ON events (message_id) WHERE message_id IS NOT NULL;
    CREATE INDEX events_recipient ON events (recipient, ts) WHERE recipient IS NOT NULL;
    CREATE INDEX events_sender ON events (sender, ts) WHERE sender IS NOT NULL;
    CREATE INDEX events_client_ip ON events (client_ip, ts) WHERE client_ip IS NOT NULL;
    CREATE INDEX events_queue_id ON events (queue_id, ts) WHERE queue_id IS NOT NULL;
    CREATE TABLE mailboxes (
        address TEXT PRIMARY KEY,
        password_hash TEXT NOT NULL,
        created_us INTEGER NOT NULL,
        settings TEXT NOT NULL DEFAULT '{}'
    );
    """,
    ),
    (
        # The trace searches addresses without regard to case, by recipient domain and by reason.
        "0002_trace_search_indexes",
        """
    DROP INDEX IF EXISTS events_recipient;
    DROP INDEX IF EXISTS events_sender;
    CREATE INDEX events_recipient_nocase ON events (recipient COLLATE NOCASE, ts) WHERE recipient IS NOT NULL;
    CREATE INDEX events_sender_nocase ON events (sender COLLATE NOCASE, ts) WHERE sender IS NOT NULL;
    CREATE INDEX events_recipient_domain ON events (substr(recipient, instr(recipient, '@') + 1) COLLATE NOCASE, ts)
        WHERE recipient IS NOT NULL;
    CREATE INDEX events_reason ON events (reason, ts) WHERE reason IS NOT NULL;
    """,
    ),
    (
        "greylist",
        """
    CREATE TABLE greylist (
        network TEXT NOT NULL, sender TEXT NOT NULL, recipient TEXT NOT NULL,
        first_seen_us INTEGER NOT NULL, last_seen_us INTEGER NOT NULL, passed_us INTEGER,
        attempts INTEGER NOT NULL DEFAULT 1,
        PRIMARY KEY (network, sender, recipient)
    );
    CREATE INDEX greylist_passed ON greylist (network, sender, passed_us) WHERE passed_us IS NOT NULL;
    CREATE INDEX greylist_last_seen ON greylist (last_seen_us)
    """,
    ),
    (
        # Reading positions of log followers and imports (ingest/), committed with their events.
        "ingest_positions",
        """
    CREATE TABLE positions (name TEXT PRIMARY KEY, value TEXT NOT NULL, updated_us INTEGER NOT NULL);
    """,
    ),
    (
        # Clients that waited for our greeting (checks/pregreet.py): greeted at once for a while.
        "pregreet_passes",
        """
    CREATE TABLE pregreet_passes (client_ip TEXT PRIMARY KEY, passed_us INTEGER NOT NULL);
    CREATE INDEX pregreet_passes_passed ON pregreet_passes (passed_us);
    """,
    ),
    # The tracking center: accounts, their sessions and the audit log (store/sqlite_accounts.py).
    ("web_accounts", ACCOUNTS_SCHEMA),
    (
        # Each event's message, stamped by its writer, and the links between messages' keys
        # (messages/keys.py): `upstream` 1 = the key handed the message on to `handle`, 0 = it arrived as it.
        "message_keys",
        """
    ALTER TABLE events ADD COLUMN message_key TEXT;
    CREATE INDEX events_message_key ON events (message_key) WHERE message_key IS NOT NULL;
    CREATE TABLE message_links (
        handle TEXT NOT NULL, message_key TEXT NOT NULL, upstream INTEGER NOT NULL,
        recipient TEXT, hint INTEGER NOT NULL DEFAULT 0, ts INTEGER NOT NULL,
        PRIMARY KEY (handle, message_key, upstream)
    ) WITHOUT ROWID;
    CREATE INDEX message_links_key ON message_links (message_key);
    CREATE INDEX message_links_ts ON message_links (ts);
    """,
    ),
    # Events stored before message keys get theirs (and their links) by the old correlation rules, once.
    ("message_keys_of_earlier_events", sqlite_messages.stamp_earlier_events),
    (
        # One row per message and recipient (messages/index.py), kept up to date by the writer;
        # `message_roots` names the message (root) of every key linked under another one.
        "message_index",
        """
    CREATE TABLE message_roots (key TEXT PRIMARY KEY, root TEXT NOT NULL) WITHOUT ROWID;
    CREATE INDEX message_roots_root ON message_roots (root);
    CREATE TABLE message_index (
        message_key TEXT NOT NULL, recipient TEXT NOT NULL COLLATE NOCASE,
        first_seen INTEGER NOT NULL, last_seen INTEGER NOT NULL, node TEXT NOT NULL,
        sender TEXT COLLATE NOCASE, sender_domain TEXT COLLATE NOCASE, recipient_domain TEXT COLLATE NOCASE,
        client_ip TEXT, message_id TEXT, ref TEXT, queue_id TEXT,
        status TEXT NOT NULL, reason TEXT, smtp_code INTEGER, size INTEGER,
        PRIMARY KEY (message_key, recipient)
    ) WITHOUT ROWID;
    CREATE INDEX message_index_seen ON message_index (first_seen);
    CREATE INDEX message_index_recipient ON message_index (recipient, first_seen);
    CREATE INDEX message_index_recipient_domain ON message_index (recipient_domain, first_seen, status, reason);
    CREATE INDEX message_index_sender ON message_index (sender, first_seen);
    CREATE INDEX message_index_sender_domain ON message_index (sender_domain, first_seen);
    CREATE INDEX message_index_client ON message_index (client_ip, first_seen);
    CREATE INDEX message_index_message_id ON message_index (message_id) WHERE message_id IS NOT NULL;
    CREATE INDEX message_index_reason ON message_index (reason, first_seen) WHERE reason IS NOT NULL;
    """,
    ),
    # A store with events gets its index built from them, once (`mailwarden store reindex` does it again).
    ("message_index_of_earlier_events", sqlite_index.index_earlier_events),
    (
        # Searches run on the message index: the events keep the indexes a timeline and the writers
        # need (by message key, time, ref; a connection's and a mailbox login's own events; our
        # gateway's Message-IDs for the proxy's duplicate check). Each message's queue files are in
        # `message_queues` (a re-injection's too; a restarted follower finds an open life there).
        "events_timeline_indexes",
        """
    DROP INDEX IF EXISTS events_session;
    DROP INDEX IF EXISTS events_message_id;
    DROP INDEX IF EXISTS events_client_ip;
    DROP INDEX IF EXISTS events_queue_id;
    DROP INDEX IF EXISTS events_recipient_nocase;
    DROP INDEX IF EXISTS events_sender_nocase;
    DROP INDEX IF EXISTS events_recipient_domain;
    DROP INDEX IF EXISTS events_reason;
    CREATE INDEX events_connection ON events (node, session) WHERE message_key IS NULL AND session IS NOT NULL;
    CREATE INDEX events_login ON events (recipient COLLATE NOCASE, ts) WHERE message_key IS NULL AND recipient IS NOT NULL;
    CREATE INDEX events_gateway_message_id ON events (message_id) WHERE source = 'gateway' AND message_id IS NOT NULL;
    CREATE TABLE message_queues (
        queue_id TEXT NOT NULL, node TEXT NOT NULL, message_key TEXT NOT NULL, last_us INTEGER NOT NULL,
        PRIMARY KEY (queue_id, node, message_key)
    ) WITHOUT ROWID;
    INSERT INTO message_queues (queue_id, node, message_key, last_us)
        SELECT queue_id, node, message_key, max(ts) FROM events
        WHERE queue_id IS NOT NULL AND message_key IS NOT NULL AND source != 'dovecot'
        GROUP BY queue_id, node, message_key;
    """,
    ),
    (
        # The message index, cheaper to keep up to date (measured on an import: a third less CPU per
        # event): a rowid table with its key unique, the domain index covering a page (the message
        # key in it), and no index by sender domain, reason or status alone (those searches walk the
        # time index, or a recipient's or domain's).
        "message_index_lean",
        """
    DROP TABLE message_index;
    CREATE TABLE message_index (
        message_key TEXT NOT NULL, recipient TEXT NOT NULL COLLATE NOCASE,
        first_seen INTEGER NOT NULL, last_seen INTEGER NOT NULL, node TEXT NOT NULL,
        sender TEXT COLLATE NOCASE, sender_domain TEXT COLLATE NOCASE, recipient_domain TEXT COLLATE NOCASE,
        client_ip TEXT, message_id TEXT, ref TEXT, queue_id TEXT,
        status TEXT NOT NULL, reason TEXT, smtp_code INTEGER, size INTEGER,
        UNIQUE (message_key, recipient)
    );
    CREATE INDEX message_index_seen ON message_index (first_seen);
    CREATE INDEX message_index_recipient ON message_index (recipient, first_seen);
    CREATE INDEX message_index_domain ON message_index (recipient_domain, first_seen, message_key, status, reason);
    CREATE INDEX message_index_sender ON message_index (sender, first_seen);
    CREATE INDEX message_index_client ON message_index (client_ip, first_seen);
    CREATE INDEX message_index_message_id ON message_index (message_id) WHERE message_id IS NOT NULL;
    """,
    ),
    ("message_index_lean_rebuilt", sqlite_index.rebuild_all),
    (
        # The node ids refs carry, one node name each (store/parts.py `NodeRegistry`).
        "node_ids",
        """
    CREATE TABLE nodes (node_id INTEGER PRIMARY KEY, name TEXT NOT NULL UNIQUE, registered_us INTEGER NOT NULL);
    """,
    ),
    # What the tracking center's processes share (store/web_state.py), and the /why counter's table.
    ("web_shared_state", WEB_STATE_SCHEMA + ";" + SQLITE_RATE_COUNTS),
]

_INSERT_EVENTS: Final = f"INSERT INTO events ({', '.join(FIELDS)})"
Bulk = tuple[Rows, Places]
"""A bulk import's rows in order (None where an event's row is still to be made) and the place of
each event the writer keys among them (`sqlite_bulk.Packed`)."""


def _insert_events(
    conn: WriterConnection, events: Sequence[Event], insert: InsertRows, bulk: Bulk | None = None
) -> None:
    """Insert the rows and give the events their ids: one writer and no AUTOINCREMENT, so each row
    gets the largest id plus one, and the ids of a batch are consecutive. `bulk`: the rows of a
    bulk import's whole batch in order and the place of each of `events` among them (`sqlite_bulk`)."""
    if bulk is None:
        last = insert(conn, _INSERT_EVENTS, [event.to_row() for event in events], "")
        for offset, event in enumerate(events, last - len(events) + 1):
            event.id = offset
        return
    rows, places = bulk
    for place, event in zip(places, events, strict=True):
        if rows[place] is None:  # its key was given here
            rows[place] = event.to_row()
    first = insert(conn, _INSERT_EVENTS, cast(list[tuple[Any, ...]], rows), "") - len(rows) + 1  # no None left
    for place, event in zip(places, events, strict=True):
        event.id = first + place


_FOUND_SECONDS: Final = 1.0
_FOUND_LIMIT: Final = 100_000
_SELECT = f"SELECT id, {', '.join(FIELDS)} FROM events"
_PURGE_SLICE: Final = 20_000
_BULK_CACHE_KIB: Final = 256 * 1024  # the writer's page cache during bulk imports (measured: 1.5x events/s)
_SOURCE_NAME: Final = re.compile(r"[a-z0-9_-]{1,32}")
_EXACT: Final = ("ref", "session", "node", "source", "message_id", "client_ip", "queue_id", "reason")
_ANY_OF: Final = (
    ("ids", "id"),
    ("refs", "ref"),
    ("message_ids", "message_id"),
    ("queue_ids", "queue_id"),
    ("message_keys", "message_key"),
)
_DOMAIN_OF: Final = "substr({0}, instr({0}, '@') + 1)"


def _in(column: str, values: Sequence[Any], clauses: list[str], params: list[Any]) -> None:
    clauses.append(f"{column} IN ({', '.join('?' for _ in values)})")
    params.extend(values)


def events_where(query: EventQuery) -> tuple[str, list[Any]]:
    """The WHERE clause for `query`, written so that each filter can use its index."""
    clauses: list[str] = []
    params: list[Any] = []
    if query.since_us is not None:
        clauses.append("ts >= ?")
        params.append(query.since_us)
    if query.until_us is not None:
        clauses.append("ts < ?")
        params.append(query.until_us)
    if query.kinds:
        _in("kind", query.kinds, clauses, params)
    for name in _EXACT:
        value = getattr(query, name)
        if value is None:
            continue
        if name == "source" and _SOURCE_NAME.fullmatch(value):
            clauses.append(f"source = '{value}'")  # a literal: an index kept for one source applies
        else:
            clauses.append(f"{name} = ?")
            params.append(value)
    for name in ("recipient", "sender"):
        value = getattr(query, name)
        if value is not None:
            clauses.append(f"{name} = ? COLLATE NOCASE")
            params.append(value)
        domain = getattr(query, f"{name}_domain")
        if domain is not None:
            clauses.append(f"{name} IS NOT NULL AND {_DOMAIN_OF.format(name)} = ? COLLATE NOCASE")
            params.append(domain.lstrip("@"))
        contains = getattr(query, f"{name}_contains")
        if contains is not None:
            clauses.append(f"instr(lower({name}), ?) > 0")
            params.append(contains.lower())
    for name, column in _ANY_OF:
        values = getattr(query, name)
        if values:
            _in(column, values, clauses, params)
    if query.keyless:
        clauses.append("message_key IS NULL")
    if query.message_id_prefix:  # a range, so that the Message-ID index serves it
        prefix = query.message_id_prefix
        clauses.append("message_id >= ? AND substr(message_id, 1, ?) = ?")
        params.extend([prefix, len(prefix), prefix])
        if ord(prefix[-1]) < sys.maxunicode:
            clauses.append("message_id < ?")
            params.append(prefix[:-1] + chr(ord(prefix[-1]) + 1))
    if query.recipients:
        clauses.append(f"recipient COLLATE NOCASE IN ({', '.join('?' for _ in query.recipients)})")
        params.extend(query.recipients)
    if query.sessions:  # by node: one node's sessions are one index search (an OR of pairs is a scan)
        by_node: dict[str, list[str]] = {}
        for node, session in query.sessions:
            by_node.setdefault(node, []).append(session)
        groups = []
        for node, sessions in by_node.items():
            groups.append(f"node = ? AND session IN ({', '.join('?' for _ in sessions)})")
            params.extend([node, *sessions])
        clauses.append(groups[0] if len(groups) == 1 else "(" + " OR ".join(f"({g})" for g in groups) + ")")
    if query.client_network is not None:
        sqlite_index.network_clause(query.client_network, clauses, params)
    return (" WHERE " + " AND ".join(clauses) if clauses else ""), params


@functools.lru_cache(maxsize=64)
def _parsed_network(text: str) -> ipaddress.IPv4Network | ipaddress.IPv6Network:
    return ipaddress.ip_network(text)


def _ip_in(address: str | None, network: str) -> bool:
    if not address:
        return False
    try:
        return ipaddress.ip_address(address) in _parsed_network(network)
    except ValueError:
        return False


_OPEN_TIMEOUT: Final = 30.0


def _connect(path: Path) -> sqlite3.Connection:
    conn = sqlite3.connect(path, timeout=_OPEN_TIMEOUT, isolation_level=None, check_same_thread=False)
    _use_wal(conn)
    conn.execute("PRAGMA synchronous=FULL")
    conn.execute("PRAGMA foreign_keys=ON")
    conn.create_function("mw_ip_in", 2, _ip_in, deterministic=True)
    return conn


def _use_wal(conn: sqlite3.Connection) -> None:
    """Switch to WAL, waiting for other processes that open the same new store at this moment.

    Changing the journal mode does not wait on the busy handler (SQLite answers "database is
    locked" at once), so several processes starting together must retry it themselves.
    """
    deadline = time.monotonic() + _OPEN_TIMEOUT
    pause = 0.005
    while True:
        try:
            if str(conn.execute("PRAGMA journal_mode=WAL").fetchone()[0]).lower() == "wal":
                return
        except sqlite3.OperationalError as exc:
            if "locked" not in str(exc) and "busy" not in str(exc):
                raise
        if time.monotonic() > deadline:
            raise sqlite3.OperationalError(f"could not switch to WAL within {_OPEN_TIMEOUT:g}s: database is locked")
        time.sleep(pause)
        pause = min(pause * 2, 0.2)


def _statements(script: str) -> list[str]:
    """The SQL statements of a script; a ";" inside a string or a trigger body does not end one."""
    statements: list[str] = []
    current = ""
    for piece in script.split(";"):
        current += piece + ";"
        if sqlite3.complete_statement(current):
            if current.strip(" \t\r\n;"):
                statements.append(current)
            current = ""
    if current.strip(" \t\r\n;"):
        statements.append(current)
    return statements


def migrate(conn: sqlite3.Connection) -> None:
    """Apply the named migrations not applied yet, each in its own transaction (safe when several processes open at once)."""
    conn.execute(SQL.create_migrations)
    applied = {row[0] for row in conn.execute(SQL.applied_migrations)}
    refuse_newer_schema(applied, (name for name, _ in MIGRATIONS))
    for name, script in MIGRATIONS:
        if name in applied:
            continue
        conn.execute("BEGIN IMMEDIATE")
        try:
            if conn.execute(SQL.migration_applied, (name,)).fetchone() is None:
                if callable(script):
                    script(conn)
                else:
                    for statement in _statements(script):
                        conn.execute(statement)
                conn.execute(SQL.record_migration, (name, now_us()))
            conn.execute("COMMIT")
        except BaseException:
            conn.execute("ROLLBACK")
            raise


def write_batch(
    conn: WriterConnection,
    book: MessageBook,
    index: MessageIndex,
    events: list[Event],
    positions: list[Position],
    bulk: Bulk | None = None,
) -> None:
    """One transaction: the events, their queues and links, the message index, then the positions.
    `bulk`: a bulk import's rows (`_insert_events`); `events` are then those that are not only stored."""
    conn.execute("BEGIN")
    try:
        _write_events(conn, book, index, events, bulk)
        _commit(conn, positions)
    except BaseException:
        _roll_back(conn, index)
        raise


def _write_events(
    conn: WriterConnection, book: MessageBook, index: MessageIndex, events: list[Event], bulk: Bulk | None
) -> None:
    """The events, their queues and links and the message index, in the open transaction."""
    book.stamp(events)
    _insert_events(conn, events, book.insert, bulk)
    book.record_queues(events)
    index.update(events, book.record_links(events))
    hinted = book.hint_links(events)  # looks at the index (this batch's messages too)
    if hinted:
        index.update((), hinted)


def _roll_back(conn: WriterConnection, index: MessageIndex) -> None:
    conn.execute("ROLLBACK")
    index.forget()  # it folded what was rolled back


def _commit(conn: WriterConnection, positions: list[Position]) -> None:
    if positions:
        conn.executemany(SQL.save_positions, [(position.name, position.value, now_us()) for position in positions])
    conn.execute("COMMIT")


def _bulk_connect(path: Path) -> apsw.Connection:
    """The bulk writer's connection, through APSW rather than the sqlite3 module: the same SQL and
    file, but binding a row's values costs a quarter (measured over the events of bench/ingest.py's
    100 MB slice: 1.0 against 4.2-4.6 us per 21-column row; the whole write 24 against 30 us/event).
    Its SQLite is APSW's own, newer than the system's; both keep the file format and WAL locking."""
    conn = apsw.Connection(str(path))
    conn.set_busy_timeout(int(_OPEN_TIMEOUT * 1000))
    mode = conn.execute("PRAGMA journal_mode=WAL").fetchone()
    if mode is None or str(mode[0]).lower() != "wal":  # the store that started this process made it WAL
        raise StoreError(
            f"the SQLite store {path} is not in WAL mode (journal_mode {mode}); open it with mailwarden first"
        )
    for pragma in ("synchronous=FULL", "foreign_keys=ON", f"cache_size=-{_BULK_CACHE_KIB}"):
        conn.execute(f"PRAGMA {pragma}")
    return conn


class BulkWrites:
    """The writing connection of a bulk import (`sqlite_bulk`'s process): APSW (`_bulk_connect`),
    a large page cache (the events' and the index's B-trees over a growing table thrash in 2 MiB;
    measured: 1.5x events/s) and each statement prepared once and run row by row (`insert_prepared`:
    nothing else runs in this process)."""

    def __init__(self, path: Path) -> None:
        self.conn = _bulk_connect(path)
        self.book = MessageBook(self.conn, insert=insert_prepared)
        self.index = MessageIndex(self.conn, insert_prepared)
        self._open: list[Part] = []  # the parts written in the open transaction, in order

    def write(self, part: Part, positions: list[Position], commit: bool = True) -> None:
        """Write `part` of a batch in the open transaction (its first part begins it); `commit`: the
        batch's last part, committed with `positions`. A failure rolls back every part written
        since the last commit (`rolled_back` returns them)."""
        if not self._open:
            self.conn.execute("BEGIN")
        self._open.append(part)
        events, rows, places = part
        try:
            _write_events(self.conn, self.book, self.index, events, (rows, places))
            if commit:
                _commit(self.conn, positions)
                self._open.clear()
        except BaseException:
            _roll_back(self.conn, self.index)
            raise

    def rolled_back(self) -> list[Part]:
        """The parts of the transaction that failed, the failing one last; to be written again."""
        parts, self._open = self._open, []
        return parts

    def close(self) -> None:
        self.conn.close()


class SqliteStore(SqlParts, Store):
    """Every part of the store in one SQLite file; rate limits are counted on this machine: in this
    process, or in the table the SMTP workers share (one machine)."""

    _sql = SQL

    def __init__(
        self,
        path: Path,
        *,
        batch_interval: float = 0.05,
        writer: EventWriter | None = None,
        rates: RateLimitState | None = None,
    ) -> None:
        """`writer`: where event writes go instead of this store's own writer thread (an SMTP worker's link);
        `rates`: the rate-limit counters (an SMTP worker's: smtp/clients.py `SharedCounts`), else in memory."""
        self.path = path
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            self._conn = _connect(path)
            migrate(self._conn)
        except (OSError, sqlite3.Error) as exc:
            raise StoreError(f"cannot open the SQLite store {path}: {exc}; check the path and its permissions") from exc
        self._batch_interval = batch_interval
        self._lock = threading.Lock()
        self._starting = threading.Lock()
        self._writer_conn: sqlite3.Connection | None = None
        self._audit = AuditLog(lambda: _connect(path))
        self._book: MessageBook | None = None
        self._index: MessageIndex | None = None
        self._writer: EventWriter | None = writer
        self._bulk: BulkProcess | None = None  # a bulk import's writer, started by its first batch
        self._found: dict[str, tuple[float, Mailbox]] = {}  # find_mailbox: address -> (valid until, mailbox)
        self._rates: RateLimitState = MemoryRates() if rates is None else rates

    # -- events
    def _writer_started(self) -> EventWriter:
        if self._writer is None:
            with self._starting:  # the gateway's delivery threads commit too, not only the event loop
                if self._writer is None:
                    self._writer_conn = _connect(self.path)
                    self._book = MessageBook(self._writer_conn)
                    self._index = MessageIndex(self._writer_conn)
                    self._writer = BatchWriter(
                        self._write_batch, self._batch_interval, f"store-writer:{self.path.name}"
                    )
        return self._writer

    def _write_batch(self, events: list[Event], positions: list[Position]) -> None:
        assert self._writer_conn is not None and self._book is not None and self._index is not None
        write_batch(self._writer_conn, self._book, self._index, events, positions)

    def append(self, event: Event) -> None:
        self._writer_started().put(event)

    def commit_soon(self, events: Sequence[Event], done: Committed) -> None:
        self._writer_started().commit_soon(events, done)

    def append_bulk(self, events: Sequence[Event], positions: Sequence[Position] = ()) -> None:
        """Written by a process of its own (`sqlite_bulk`): the importer parses while it writes."""
        self._bulk_process().put(events, positions)

    def append_bulk_part(self, events: Sequence[Event]) -> bool:
        """Taken: the writer process writes it into the transaction the next `append_bulk` commits."""
        self._bulk_process().put(events, (), commit=False)
        return True

    def _bulk_process(self) -> BulkProcess:
        if self._bulk is None:
            self.flush()  # what was queued before comes first
            self._bulk = BulkProcess(self.path)
        return self._bulk

    def save_position(self, position: Position) -> None:
        self._writer_started().put_position(position)

    def flush(self) -> None:
        if self._bulk is not None:
            self._bulk.flush()
        if self._writer is not None:
            self._writer.flush()

    def writer_state(self) -> WriterState:
        return self._writer.state() if isinstance(self._writer, BatchWriter) else WriterState.idle()

    def query_events(self, query: EventQuery) -> list[Event]:
        where, params = events_where(query)
        sql = _SELECT + where
        sql += " ORDER BY ts DESC, id DESC" if query.newest_first else " ORDER BY ts, id"
        if query.limit is not None or query.offset:
            sql += " LIMIT ? OFFSET ?"
            params.extend([query.limit if query.limit is not None else -1, query.offset])
        with self._reading() as conn:
            rows = conn.execute(sql, params).fetchall()
        return event_rows(rows)

    def events_after(self, after_id: int, limit: int) -> list[Event]:
        with self._reading() as conn:
            return event_rows(conn.execute(f"{_SELECT} WHERE id > ? ORDER BY id LIMIT ?", (after_id, limit)).fetchall())

    def purge_events(self, before_us: int) -> int:
        """Delete in slices, so the gateway's mailbox lookups (same connection) never wait long."""
        total = 0
        while True:
            with self._reading() as conn:
                cursor = conn.execute(
                    "DELETE FROM events WHERE id IN (SELECT id FROM events WHERE ts < ? LIMIT ?)",
                    (before_us, _PURGE_SLICE),
                )
                total += cursor.rowcount
            if cursor.rowcount < _PURGE_SLICE:
                break
        with self._reading() as conn:  # what the purged events were the only evidence of
            conn.execute(SQL.purge_index, (before_us,))
            conn.execute(SQL.purge_links, (before_us,))
            conn.execute(SQL.purge_roots)
        return total

    def reindex(self, progress: Callable[[int], None] | None = None) -> int:
        self.flush()
        with self._reading() as conn:
            conn.execute("BEGIN IMMEDIATE")
            try:
                written = sqlite_index.rebuild(conn, progress)
                conn.execute("COMMIT")
            except BaseException:
                conn.execute("ROLLBACK")
                raise
        if self._index is not None:
            self._index.forget()
        return written

    # -- mailboxes
    async def find_mailbox(self, address: str) -> Mailbox | None:
        """`get_mailbox` for the session path, with existing mailboxes remembered for a second.

        Under load the lookup cost 7 % of the event loop's time (a read transaction next to the
        busy event writer). Only found mailboxes are remembered: a new mailbox is found at once,
        a removed one is refused a second later at the latest (changes made through this store at once).
        """
        now = time.monotonic()
        cached = self._found.get(address)
        if cached is not None and cached[0] > now:
            return cached[1]
        mailbox = self.get_mailbox(address)
        if mailbox is None:
            self._found.pop(address, None)
        else:
            if len(self._found) > _FOUND_LIMIT:
                self._found.clear()
            self._found[address] = (now + _FOUND_SECONDS, mailbox)
        return mailbox

    def _mailbox_changed(self, address: str) -> None:
        self._found.pop(address, None)

    # -- rate limits
    async def rate_hit(self, counter: str, key: str, now: float) -> int:
        return await self._rates.rate_hit(counter, key, now)

    # -- the tracking center's audit log (the rest of its part: SqlParts)
    def add_audit(self, entry: AuditEntry) -> None:
        self._audit.add(audit_row(entry))

    @contextmanager
    def _reading(self) -> Iterator[sqlite3.Connection]:
        with self._lock:
            try:
                yield self._conn
            except sqlite3.OperationalError as exc:
                raise StoreError(f"SQLite store {self.path}: {exc}") from exc

    def _web_state_sql(self) -> AbstractContextManager[sqlite3.Connection]:
        return self._reading()

    def _statement(self) -> AbstractContextManager[sqlite3.Connection]:
        return self._reading()

    def _reads(self) -> AbstractContextManager[sqlite3.Connection]:
        return self._reading()

    @contextmanager
    def _transaction(self, lock: str | None = None) -> Iterator[sqlite3.Connection]:
        with self._reading() as conn:
            conn.execute("BEGIN IMMEDIATE")  # the database's write lock: `lock` is taken with it
            try:
                yield conn
                conn.execute("COMMIT")
            except BaseException:
                conn.execute("ROLLBACK")
                raise

    def close(self) -> None:
        self._audit.close()
        if self._bulk is not None:
            self._bulk.close()
            self._bulk = None
        if self._writer is not None:
            self._writer.close()
            self._writer = None
        if self._writer_conn is not None:
            self._writer_conn.close()
            self._writer_conn = None
        self._conn.close()
