"""The PostgreSQL store's events and message index: written in the writer's transaction, by day.

Events go to a table partitioned by day (`events_dYYYYMMDD`, made as a batch needs them; retention
drops whole days). A batch is one transaction: keys stamped (`messages.legacy`, as in SQLite),
ids from one sequence for every node, the rows by COPY, each message's queue files and links,
the message index of every message the batch touched, and the reading positions that end it.

The index is folded by the function the SQLite store uses (`messages.index.message_rows`) over
all events of each touched message (its keys found with `messages.keys.components`), so both
stores give the same rows for the same events. Links by Message-ID (a mailbox server's copy that
no delivery names) are made as in SQLite (`sqlite_messages.hint_links`), once the index holds the
batch's messages, and the messages they join are folded again.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from datetime import UTC, datetime
from typing import Any, Final

import psycopg

from mailwarden.events import FIELDS, Event, now_us
from mailwarden.messages.index import INDEX_FIELDS, IndexRow, message_rows
from mailwarden.messages.keys import Link, components, links_of, queue_files
from mailwarden.messages.legacy import LegacyKeys
from mailwarden.store import sqlite_messages
from mailwarden.store.base import Position
from mailwarden.store.sql import POSTGRES as SQL
from mailwarden.store.sql import QmarkConnection
from mailwarden.store.sqlite_messages import event_rows

DAY_US: Final = 86_400_000_000
_COLUMNS: Final = ", ".join(("id", *FIELDS))
SELECT_EVENTS: Final = f"SELECT {_COLUMNS} FROM events"
_KEYS_PER_QUERY: Final = 2000
_INDEX_COLUMNS: Final = ", ".join(INDEX_FIELDS)

# The events, their messages and the message index (one migration of `postgres.MIGRATIONS`). The
# collation `nocase` compares addresses without regard to case, as SQLite's NOCASE; "C" keeps the
# byte order the shared SQL's prefix ranges (client networks, cut Message-IDs) and keyset pages need.
SCHEMA: Final = """
CREATE COLLATION nocase (provider = icu, locale = 'und-u-ks-level2', deterministic = false);
CREATE FUNCTION instr(text, text) RETURNS integer IMMUTABLE PARALLEL SAFE LANGUAGE sql
    AS $$ SELECT strpos($1 COLLATE "C", $2 COLLATE "C") $$;
CREATE FUNCTION mw_ip_in(text, text) RETURNS boolean IMMUTABLE PARALLEL SAFE LANGUAGE plpgsql AS $$
BEGIN
    RETURN $1 IS NOT NULL AND $1 <> '' AND $1::inet <<= $2::inet;
EXCEPTION WHEN others THEN
    RETURN false;
END $$;
CREATE SEQUENCE events_id_seq;
CREATE TABLE events (
    id bigint NOT NULL, ts bigint NOT NULL, node text NOT NULL, source text NOT NULL, kind text NOT NULL,
    session text, ref text, queue_id text, message_id text COLLATE "C", client_ip text COLLATE "C",
    client_name text, helo text, sender text, recipient text, smtp_code integer, enhanced_code text,
    reply text, reason text, detail text, size bigint, evidence text, message_key text COLLATE "C"
) PARTITION BY RANGE (ts);
CREATE INDEX events_ts ON events (ts, id);
CREATE INDEX events_id ON events (id);
CREATE INDEX events_message_key ON events (message_key) WHERE message_key IS NOT NULL;
CREATE INDEX events_ref ON events (ref) WHERE ref IS NOT NULL;
CREATE INDEX events_connection ON events (node, session) WHERE message_key IS NULL AND session IS NOT NULL;
CREATE INDEX events_login ON events ((recipient COLLATE nocase), ts) WHERE message_key IS NULL AND recipient IS NOT NULL;
CREATE INDEX events_gateway_message_id ON events (message_id) WHERE source = 'gateway' AND message_id IS NOT NULL;
CREATE TABLE positions (name text PRIMARY KEY, value text NOT NULL, updated_us bigint NOT NULL);
CREATE TABLE message_links (
    handle text COLLATE "C" NOT NULL, message_key text COLLATE "C" NOT NULL, upstream integer NOT NULL,
    recipient text, hint integer NOT NULL DEFAULT 0, ts bigint NOT NULL,
    PRIMARY KEY (handle, message_key, upstream)
);
CREATE INDEX message_links_key ON message_links (message_key);
CREATE INDEX message_links_ts ON message_links (ts);
CREATE TABLE message_queues (
    queue_id text NOT NULL, node text NOT NULL, message_key text COLLATE "C" NOT NULL, last_us bigint NOT NULL,
    PRIMARY KEY (queue_id, node, message_key)
);
CREATE TABLE message_roots (key text COLLATE "C" PRIMARY KEY, root text COLLATE "C" NOT NULL);
CREATE INDEX message_roots_root ON message_roots (root);
CREATE TABLE message_index (
    message_key text COLLATE "C" NOT NULL, recipient text COLLATE nocase NOT NULL,
    first_seen bigint NOT NULL, last_seen bigint NOT NULL, node text NOT NULL,
    sender text COLLATE nocase, sender_domain text COLLATE nocase, recipient_domain text COLLATE nocase,
    client_ip text COLLATE "C", message_id text COLLATE "C", ref text, queue_id text,
    status text NOT NULL, reason text, smtp_code integer, size bigint,
    UNIQUE (message_key, recipient)
);
CREATE INDEX message_index_seen ON message_index (first_seen);
CREATE INDEX message_index_recipient ON message_index (recipient, first_seen);
CREATE INDEX message_index_domain ON message_index (recipient_domain, first_seen, message_key, status, reason);
CREATE INDEX message_index_sender ON message_index (sender, first_seen);
CREATE INDEX message_index_client ON message_index (client_ip, first_seen);
CREATE INDEX message_index_message_id ON message_index (message_id) WHERE message_id IS NOT NULL
"""


def partition_name(day: int) -> str:
    """The partition of day number `day` (days since the epoch): events_dYYYYMMDD."""
    return "events_d" + datetime.fromtimestamp(day * 86_400, UTC).strftime("%Y%m%d")


def ensure_partitions(conn: psycopg.Connection[Any], days: Iterable[int], known: set[int]) -> None:
    """Make the day partitions the events need (outside the batch's transaction: another node may be
    making the same one at this moment, and then its CREATE wins and ours is nothing)."""
    for day in sorted(set(days) - known):
        name = partition_name(day)
        try:
            conn.execute(
                f"CREATE TABLE IF NOT EXISTS {name} PARTITION OF events"
                f" FOR VALUES FROM ({day * DAY_US}) TO ({(day + 1) * DAY_US})".encode()
            )
        except (psycopg.errors.DuplicateTable, psycopg.errors.UniqueViolation):
            pass  # made by another node just now
        known.add(day)


def write_batch(conn: psycopg.Connection[Any], events: list[Event], positions: list[Position]) -> None:
    """One batch in the current transaction (see the module's docstring)."""
    shared = QmarkConnection(conn)
    legacy = LegacyKeys(lambda node, queue_id: sqlite_messages.recall(shared, node, queue_id))
    for event in events:
        if event.message_key is None:
            event.message_key = legacy.key(event)
    if events:
        ids = sorted(
            row[0]
            for row in conn.execute("SELECT nextval('events_id_seq') FROM generate_series(1, %s)", (len(events),))
        )
        for event, event_id in zip(events, ids, strict=True):
            event.id = event_id
        with conn.cursor().copy(f"COPY events ({_COLUMNS}) FROM STDIN".encode()) as copy:
            for event in events:
                copy.write_row((event.id, *event.to_row()))
    _record_queues(conn, events)
    links = [(link, event.ts) for event in events for link in links_of(event)]
    _insert_links(conn, links)
    touched = {event.message_key for event in events if event.message_key is not None}
    refold(conn, touched | {link.message_key for link, _ in links}, events)
    hinted = sqlite_messages.hint_links(shared, events, lambda rows: _insert_links(conn, rows))  # on the index
    if hinted:
        refold(conn, {link.message_key for link in hinted}, events)
    if positions:
        conn.cursor().executemany(
            SQL.save_positions, [(position.name, position.value, now_us()) for position in positions]
        )


def _insert_links(conn: psycopg.Connection[Any], links: Sequence[tuple[Link, int]]) -> None:
    if links:
        conn.cursor().executemany(
            f"{sqlite_messages.INSERT_LINKS} VALUES (%s, %s, %s, %s, %s, %s){sqlite_messages.LINKS_ONCE}",
            sqlite_messages.link_rows(links),
        )


def _record_queues(conn: psycopg.Connection[Any], events: Iterable[Event]) -> None:
    """Each message's queue files (`keys.queue_files`)."""
    rows = queue_files(events)
    if rows:
        conn.cursor().executemany(
            "INSERT INTO message_queues (queue_id, node, message_key, last_us) VALUES (%s, %s, %s, %s)"
            " ON CONFLICT (queue_id, node, message_key)"
            " DO UPDATE SET last_us = greatest(message_queues.last_us, excluded.last_us)",
            rows,
        )


def refold(conn: psycopg.Connection[Any], keys: Iterable[str], batch: Sequence[Event] = ()) -> int:
    """Fold again every message these keys belong to, from all its events: its roots and index rows.
    `batch` are events of this transaction: they are taken as they are, only the others are read
    back (those of another node's transaction whose ids fall between this batch's, committed at
    this very moment, are missed until the message's next event or `store reindex`; a batch never
    sees another's uncommitted events anyway)."""
    wanted = sorted(set(keys))
    if not wanted:
        return 0
    shared = QmarkConnection(conn)
    messages = {c.root: c for c in components(wanted, lambda chunk: sqlite_messages.links(shared, chunk)).values()}
    members = sorted({key for message in messages.values() for key in message.keys})
    owner = {key: root for root, message in messages.items() for key in message.keys}
    conn.execute("DELETE FROM message_roots WHERE key = ANY(%s)", (members,))
    placed = [(key, root) for key, root in sorted(owner.items()) if key != root]
    if placed:
        conn.cursor().executemany("INSERT INTO message_roots (key, root) VALUES (%s, %s)", placed)
    conn.execute("DELETE FROM message_index WHERE message_key = ANY(%s)", (members,))
    ours = [event.id for event in batch if event.id is not None]
    first_new, last_new = (min(ours), max(ours)) if ours else (1 << 62, -1)
    folded: dict[str, list[Event]] = {}
    for start in range(0, len(members), _KEYS_PER_QUERY):
        chunk = members[start : start + _KEYS_PER_QUERY]
        rows = conn.execute(
            f"{SELECT_EVENTS} WHERE message_key = ANY(%s) AND (id < %s OR id > %s)".encode(),
            (chunk, first_new, last_new),
        ).fetchall()
        for event in event_rows(rows):
            folded.setdefault(owner[str(event.message_key)], []).append(event)
    for event in batch:
        if event.message_key in owner:
            folded.setdefault(owner[event.message_key], []).append(event)
    for events in folded.values():
        events.sort(key=lambda event: (event.ts, event.id or 0))
    unique: dict[tuple[str, str], IndexRow] = {}  # recipients equal but for case are one row, as in SQLite
    for root in sorted(folded):
        for row in message_rows(root, folded[root]):
            unique[(row.message_key, row.recipient.lower())] = row
    rows_out = list(unique.values())
    if rows_out:
        with conn.cursor().copy(f"COPY message_index ({_INDEX_COLUMNS}) FROM STDIN".encode()) as copy:
            for row in rows_out:
                copy.write_row(row)
    return len(rows_out)


def rebuild(conn: psycopg.Connection[Any], progress: Callable[[int], None] | None = None) -> int:
    """The message index again from the events, in the current transaction; the rows written."""
    conn.execute("DELETE FROM message_index")
    conn.execute("DELETE FROM message_roots")
    keys = [
        str(row[0]) for row in conn.execute("SELECT DISTINCT message_key FROM events WHERE message_key IS NOT NULL")
    ]
    keys.sort()
    folded = 0
    for start in range(0, len(keys), _KEYS_PER_QUERY):
        chunk = keys[start : start + _KEYS_PER_QUERY]
        refold(conn, chunk)  # a message met again in a later chunk is folded again, alike
        if progress is not None:
            folded += int(
                conn.execute("SELECT count(*) FROM events WHERE message_key = ANY(%s)", (chunk,)).fetchone()[0]  # type: ignore[index]
            )
            progress(folded)
    return int(conn.execute("SELECT count(*) FROM message_index").fetchone()[0])  # type: ignore[index]


def query(conn: psycopg.Connection[Any], where: str, params: Sequence[Any], tail: str) -> list[Event]:
    """Events by the shared WHERE clause (`sqlite.events_where`)."""
    return event_rows(QmarkConnection(conn).execute(SELECT_EVENTS + where + tail, params).fetchall())
