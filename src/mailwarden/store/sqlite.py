"""SQLite store (the embedded default): WAL mode, one batching writer thread, versioned schema.

WAL lets the CLI and the web read while the daemon writes. The writer commits with
synchronous=FULL, so a committed batch survives a power cut, and group commit keeps that cheap.
"""

from __future__ import annotations

import functools
import ipaddress
import json
import sqlite3
import sys
import threading
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Final

from mailwarden.events import FIELDS, Event, now_us
from mailwarden.store.base import (
    BatchWriter,
    Committed,
    EventQuery,
    EventWriter,
    GreylistEntry,
    Mailbox,
    Position,
    Store,
    StoreError,
)
from mailwarden.store.sqlite_accounts import SCHEMA as ACCOUNTS_SCHEMA
from mailwarden.store.sqlite_accounts import SqliteAccounts

# Named schema migrations, applied in this order and remembered in the `migrations` table.
# Append new ones (a unique name per change); never edit or reorder applied ones.
MIGRATIONS: Final[list[tuple[str, str]]] = [
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
]

_ROWS_PER_INSERT: Final = 50  # one statement for many rows (1,000 parameters; SQLite allows 32,766)


@functools.lru_cache(maxsize=_ROWS_PER_INSERT)
def _insert(rows: int) -> str:
    values = "(" + ", ".join("?" for _ in FIELDS) + ")"
    return f"INSERT INTO events ({', '.join(FIELDS)}) VALUES {', '.join(values for _ in range(rows))}"


def _insert_events(conn: sqlite3.Connection, events: Sequence[Event]) -> None:
    """Insert in statements of many rows, not one statement per row.

    The sqlite3 module lets go of the GIL for every step, and the writer thread then waits for
    the busy event loop to give it back, once per row: under smtp-source a commit took 6 ms
    (median) with a row per step and 2.6 ms with 50 rows per step.
    """
    for start in range(0, len(events), _ROWS_PER_INSERT):
        chunk = events[start : start + _ROWS_PER_INSERT]
        conn.execute(_insert(len(chunk)), [value for event in chunk for value in event.to_row()])


_FOUND_SECONDS: Final = 1.0
_FOUND_LIMIT: Final = 100_000
_SELECT = f"SELECT id, {', '.join(FIELDS)} FROM events"
_PURGE_SLICE: Final = 20_000
_BULK_CACHE_KIB: Final = 256 * 1024  # the writer's page cache during bulk imports (measured: 1.5x events/s)
_EXACT: Final = ("ref", "session", "node", "source", "message_id", "client_ip", "queue_id", "reason")
_DOMAIN_OF: Final = "substr({0}, instr({0}, '@') + 1)"


def _in(column: str, values: Sequence[Any], clauses: list[str], params: list[Any]) -> None:
    clauses.append(f"{column} IN ({', '.join('?' for _ in values)})")
    params.extend(values)


def _where(query: EventQuery) -> tuple[str, list[Any]]:
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
        if value is not None:
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
    if query.ids:
        _in("id", query.ids, clauses, params)
    if query.refs:
        _in("ref", query.refs, clauses, params)
    if query.message_ids:
        _in("message_id", query.message_ids, clauses, params)
    if query.message_id_prefix:  # a range, so that the Message-ID index serves it
        prefix = query.message_id_prefix
        clauses.append("message_id >= ? AND substr(message_id, 1, ?) = ?")
        params.extend([prefix, len(prefix), prefix])
        if ord(prefix[-1]) < sys.maxunicode:
            clauses.append("message_id < ?")
            params.append(prefix[:-1] + chr(ord(prefix[-1]) + 1))
    if query.queue_ids:
        _in("queue_id", query.queue_ids, clauses, params)
    if query.recipients:
        clauses.append(f"recipient COLLATE NOCASE IN ({', '.join('?' for _ in query.recipients)})")
        params.extend(query.recipients)
    if query.sessions:
        pairs = " OR ".join("(node = ? AND session = ?)" for _ in query.sessions)
        clauses.append(f"({pairs})")
        for node, session in query.sessions:
            params.extend([node, session])
    if query.client_network is not None:
        _network_clause(query.client_network, clauses, params)
    return (" WHERE " + " AND ".join(clauses) if clauses else ""), params


def _network_clause(text: str, clauses: list[str], params: list[Any]) -> None:
    """A single address matches exactly; a network by a text-prefix range (index) plus an exact test."""
    try:
        network = ipaddress.ip_network(text.strip(), strict=False)
    except ValueError:
        raise StoreError(f"{text!r} is not an IP address or network (e.g. 192.0.2.7 or 192.0.2.0/24)") from None
    if network.num_addresses == 1:
        clauses.append("client_ip = ?")
        params.append(str(network.network_address))
        return
    if network.version == 4:
        whole_octets = network.prefixlen // 8
        prefix = ".".join(str(network.network_address).split(".")[:whole_octets])
        if prefix:
            clauses.append("client_ip >= ? AND client_ip < ?")
            params.extend([prefix + ".", prefix + "/"])  # "/" sorts right after "."
    clauses.append("mw_ip_in(client_ip, ?)")
    params.append(str(network))


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
    conn.execute("CREATE TABLE IF NOT EXISTS migrations (name TEXT PRIMARY KEY, applied_us INTEGER NOT NULL)")
    applied = {row[0] for row in conn.execute("SELECT name FROM migrations")}
    known = {name for name, _ in MIGRATIONS}
    if applied - known:
        raise StoreError(
            f"the store was migrated by a newer mailwarden ({', '.join(sorted(applied - known))}); upgrade mailwarden"
        )
    for name, script in MIGRATIONS:
        if name in applied:
            continue
        conn.execute("BEGIN IMMEDIATE")
        try:
            if conn.execute("SELECT 1 FROM migrations WHERE name = ?", (name,)).fetchone() is None:
                for statement in _statements(script):
                    conn.execute(statement)
                conn.execute("INSERT INTO migrations (name, applied_us) VALUES (?, ?)", (name, now_us()))
            conn.execute("COMMIT")
        except BaseException:
            conn.execute("ROLLBACK")
            raise


class SqliteStore(SqliteAccounts, Store):
    def __init__(self, path: Path, *, batch_interval: float = 0.05, writer: EventWriter | None = None) -> None:
        """`writer`: where event writes go instead of this store's own writer thread (an SMTP worker's link)."""
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
        self._writer: EventWriter | None = writer
        self._bulk = False  # a bulk import writes here: the writer keeps more index pages in memory
        self._bulk_cache = False
        self._found: dict[str, tuple[float, Mailbox]] = {}  # find_mailbox: address -> (valid until, mailbox)

    # -- events
    def _writer_started(self) -> EventWriter:
        if self._writer is None:
            with self._starting:  # the gateway's delivery threads commit too, not only the event loop
                if self._writer is None:
                    self._writer_conn = _connect(self.path)
                    self._writer = BatchWriter(
                        self._write_batch, self._batch_interval, f"store-writer:{self.path.name}"
                    )
        return self._writer

    def _write_batch(self, events: list[Event], positions: list[Position]) -> None:
        assert self._writer_conn is not None
        conn = self._writer_conn
        if self._bulk and not self._bulk_cache:  # nine indexes over a growing table: 2 MiB of pages thrash
            conn.execute(f"PRAGMA cache_size=-{_BULK_CACHE_KIB}")
            self._bulk_cache = True
        conn.execute("BEGIN")
        try:
            _insert_events(conn, events)
            if positions:
                conn.executemany(
                    "INSERT INTO positions (name, value, updated_us) VALUES (?, ?, ?) "
                    "ON CONFLICT (name) DO UPDATE SET value = excluded.value, updated_us = excluded.updated_us",
                    [(position.name, position.value, now_us()) for position in positions],
                )
            conn.execute("COMMIT")
        except BaseException:
            conn.execute("ROLLBACK")
            raise

    def append(self, event: Event) -> None:
        self._writer_started().put(event)

    def commit_soon(self, events: Sequence[Event], done: Committed) -> None:
        self._writer_started().commit_soon(events, done)

    def append_bulk(self, events: Sequence[Event], positions: Sequence[Position] = ()) -> None:
        self._bulk = True
        self._writer_started().put_bulk(events, positions)

    def save_position(self, position: Position) -> None:
        self._writer_started().put_position(position)

    def load_position(self, name: str) -> str | None:
        with self._reading() as conn:
            row = conn.execute("SELECT value FROM positions WHERE name = ?", (name,)).fetchone()
        return None if row is None else str(row[0])

    def flush(self) -> None:
        if self._writer is not None:
            self._writer.flush()

    def query_events(self, query: EventQuery) -> list[Event]:
        where, params = _where(query)
        sql = _SELECT + where
        sql += " ORDER BY ts DESC, id DESC" if query.newest_first else " ORDER BY ts, id"
        if query.limit is not None or query.offset:
            sql += " LIMIT ? OFFSET ?"
            params.extend([query.limit if query.limit is not None else -1, query.offset])
        with self._reading() as conn:
            rows = conn.execute(sql, params).fetchall()
        return [Event.from_row(tuple(row[1:]), event_id=row[0]) for row in rows]

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
                return total

    def oldest_event_us(self) -> int | None:
        with self._reading() as conn:
            row = conn.execute("SELECT min(ts) FROM events").fetchone()
        return None if row is None or row[0] is None else int(row[0])

    # -- mailboxes
    def add_mailbox(self, address: str, password_hash: str) -> Mailbox:
        created = now_us()
        with self._reading() as conn:
            try:
                conn.execute(
                    "INSERT INTO mailboxes (address, password_hash, created_us) VALUES (?, ?, ?)",
                    (address, password_hash, created),
                )
            except sqlite3.IntegrityError:
                raise StoreError(
                    f"mailbox {address} already exists; use `users passwd` to change its password"
                ) from None
        return Mailbox(address, password_hash, created)

    def remove_mailbox(self, address: str) -> bool:
        self._found.pop(address, None)
        with self._reading() as conn:
            return conn.execute("DELETE FROM mailboxes WHERE address = ?", (address,)).rowcount > 0

    def set_password(self, address: str, password_hash: str) -> bool:
        self._found.pop(address, None)
        with self._reading() as conn:
            cursor = conn.execute("UPDATE mailboxes SET password_hash = ? WHERE address = ?", (password_hash, address))
            return cursor.rowcount > 0

    def update_mailbox_settings(self, address: str, settings: dict[str, Any]) -> bool:
        self._found.pop(address, None)
        with self._reading() as conn:
            cursor = conn.execute(
                "UPDATE mailboxes SET settings = ? WHERE address = ?", (json.dumps(settings, sort_keys=True), address)
            )
            return cursor.rowcount > 0

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

    def get_mailbox(self, address: str) -> Mailbox | None:
        with self._reading() as conn:
            row = conn.execute(
                "SELECT address, password_hash, created_us, settings FROM mailboxes WHERE address = ?", (address,)
            ).fetchone()
        return None if row is None else Mailbox(row[0], row[1], row[2], json.loads(row[3]))

    def list_mailboxes(self) -> list[Mailbox]:
        with self._reading() as conn:
            rows = conn.execute(
                "SELECT address, password_hash, created_us, settings FROM mailboxes ORDER BY address"
            ).fetchall()
        return [Mailbox(r[0], r[1], r[2], json.loads(r[3])) for r in rows]

    # -- greylisting
    def greylist_get(self, network: str, sender: str, recipient: str) -> GreylistEntry | None:
        with self._reading() as conn:
            row = conn.execute(
                "SELECT first_seen_us, last_seen_us, passed_us, attempts FROM greylist"
                " WHERE network = ? AND sender = ? AND recipient = ?",
                (network, sender, recipient),
            ).fetchone()
        return None if row is None else GreylistEntry(network, sender, recipient, *row)

    def greylist_put(self, entry: GreylistEntry) -> None:
        with self._reading() as conn:
            conn.execute(
                "INSERT OR REPLACE INTO greylist"
                " (network, sender, recipient, first_seen_us, last_seen_us, passed_us, attempts)"
                " VALUES (?, ?, ?, ?, ?, ?, ?)",
                (
                    entry.network,
                    entry.sender,
                    entry.recipient,
                    entry.first_seen_us,
                    entry.last_seen_us,
                    entry.passed_us,
                    entry.attempts,
                ),
            )

    def greylist_sender_passed(self, network: str, sender: str, since_us: int) -> bool:
        with self._reading() as conn:
            row = conn.execute(
                "SELECT 1 FROM greylist WHERE network = ? AND sender = ? AND passed_us IS NOT NULL"
                " AND last_seen_us >= ? LIMIT 1",
                (network, sender, since_us),
            ).fetchone()
        return row is not None

    def greylist_purge(self, before_us: int) -> int:
        with self._reading() as conn:
            return conn.execute("DELETE FROM greylist WHERE last_seen_us < ?", (before_us,)).rowcount

    # -- pregreet passes
    def pregreet_passed(self, client_ip: str) -> int | None:
        with self._reading() as conn:
            row = conn.execute("SELECT passed_us FROM pregreet_passes WHERE client_ip = ?", (client_ip,)).fetchone()
        return None if row is None else int(row[0])

    def pregreet_pass(self, client_ip: str, at_us: int, forget_before_us: int) -> None:
        with self._reading() as conn:
            conn.execute("DELETE FROM pregreet_passes WHERE passed_us < ?", (forget_before_us,))
            conn.execute(
                "INSERT OR REPLACE INTO pregreet_passes (client_ip, passed_us) VALUES (?, ?)", (client_ip, at_us)
            )

    @contextmanager
    def _reading(self) -> Iterator[sqlite3.Connection]:
        with self._lock:
            try:
                yield self._conn
            except sqlite3.OperationalError as exc:
                raise StoreError(f"SQLite store {self.path}: {exc}") from exc

    def close(self) -> None:
        if self._writer is not None:
            self._writer.close()
            self._writer = None
        if self._writer_conn is not None:
            self._writer_conn.close()
            self._writer_conn = None
        self._conn.close()
