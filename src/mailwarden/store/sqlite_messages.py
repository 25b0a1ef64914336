"""The SQLite store's part for messages: keys of events written without one, links between keys.

Called by the writer thread inside the transaction that inserts the events (and by the migration
that gives a store made before message keys its keys), so that events, their links and (later)
the message index always agree.
"""

from __future__ import annotations

import functools
import sqlite3
import sys
from collections.abc import Callable, Iterable, Sequence
from typing import Any, Final

from mailwarden.events import FIELDS, Event
from mailwarden.handoff import cut_message_id_prefix
from mailwarden.messages.keys import (
    ACCESS_KINDS,
    CLOCK_SLACK_US,
    MAILBOX_ACTIONS,
    MAILBOX_SERVERS,
    Link,
    hop,
    links_of,
    queue_files,
)
from mailwarden.messages.legacy import QUEUE_IDLE_US, LegacyKeys, Life
from mailwarden.store.sql import Queries, WriterConnection

_HINT_CANDIDATES: Final = 50
_KEYS_PER_QUERY: Final = 500
ROWS_PER_STATEMENT: Final = 50  # one statement for many rows (1,000 parameters; SQLite allows 32,766)
_SELECT: Final = f"SELECT id, {', '.join(FIELDS)} FROM events"
INSERT_LINKS: Final = "INSERT INTO message_links (handle, message_key, upstream, recipient, hint, ts)"
LINKS_ONCE: Final = " ON CONFLICT (handle, message_key, upstream) DO NOTHING"


@functools.lru_cache(maxsize=256)
def _statement(head: str, width: int, rows: int, tail: str) -> str:
    values = "(" + ", ".join("?" for _ in range(width)) + ")"
    return f"{head} VALUES {', '.join(values for _ in range(rows))}{tail}"


def insert_rows(conn: sqlite3.Connection, head: str, rows: Sequence[Sequence[object]], tail: str = "") -> int:
    """`head VALUES (...), (...) ... tail` for many rows at once.

    The sqlite3 module lets go of the GIL for every step, and the writer thread then waits to get
    it back from the busy parser (or event loop), once per step: one statement of many rows is
    one step (under smtp-source a commit took 6 ms, median, with a row per step, 2.6 ms with 50).
    Returns the id of the last row inserted.
    """
    last = 0
    for start in range(0, len(rows), ROWS_PER_STATEMENT):
        chunk = rows[start : start + ROWS_PER_STATEMENT]
        cursor = conn.execute(_statement(head, len(chunk[0]), len(chunk), tail), [v for row in chunk for v in row])
        last = cursor.lastrowid or 0
    return last


def insert_prepared(conn: WriterConnection, head: str, rows: Sequence[Sequence[object]], tail: str = "") -> int:
    """`head VALUES (...) tail` prepared once and run for each row, for a writer that has the
    interpreter to itself (a bulk import's process: no GIL to wait for between steps). Measured
    there: upserts into the message index cost 45 % less CPU than statements of 50 rows, and the
    whole write 8-10 us/event less. Returns the id of the last row inserted."""
    if not rows:
        return 0
    conn.executemany(_statement(head, len(rows[0]), 1, tail), rows)
    return int(conn.execute("SELECT last_insert_rowid()").fetchone()[0])


InsertRows = Callable[[Any, str, Sequence[Sequence[object]], str], int]
"""How a writer inserts many rows on its connection: `insert_rows` (a thread sharing the interpreter,
on a sqlite3 connection, whose cursors know their last row id) or `insert_prepared` (any
`WriterConnection`: a bulk import's APSW connection)."""


def event_rows(rows: Iterable[Sequence[Any]]) -> list[Event]:
    """Events from `_SELECT` rows."""
    return [Event.from_row(tuple(row[1:]), event_id=row[0]) for row in rows]


def recall(conn: Queries, node: str, queue_id: str) -> Life | None:
    """The latest life of a queue id written to the store, for events that arrive without a key."""
    row = conn.execute(
        "SELECT message_key, last_us FROM message_queues WHERE queue_id = ? AND node = ? ORDER BY last_us DESC LIMIT 1",
        (queue_id, node),
    ).fetchone()
    if row is None:
        return None
    key, last_us = row
    session = conn.execute(
        "SELECT session FROM events WHERE message_key = ? AND session IS NOT NULL LIMIT 1", (key,)
    ).fetchone()
    accepted = conn.execute("SELECT 1 FROM events WHERE message_key = ? AND kind = 'accept' LIMIT 1", (key,)).fetchone()
    return Life(key, last_us, session[0] if session else None, accepted is not None)


class MessageBook:
    """Keys and links of the events one connection writes; one per writing connection."""

    def __init__(
        self, conn: WriterConnection, legacy: LegacyKeys | None = None, insert: InsertRows = insert_rows
    ) -> None:
        self.conn = conn
        self.insert = insert
        self._legacy = legacy or LegacyKeys(lambda node, queue_id: recall(conn, node, queue_id))

    def stamp(self, events: Iterable[Event]) -> None:
        """Give an event written without a key the one the old correlation rules give it."""
        legacy = self._legacy
        for event in events:
            if event.message_key is None:
                event.message_key = legacy.key(event)

    def record_queues(self, events: Iterable[Event]) -> None:
        """Note each message's queue files (`keys.queue_files`)."""
        self.insert(
            self.conn,
            "INSERT INTO message_queues (queue_id, node, message_key, last_us)",
            queue_files(events),
            " ON CONFLICT (queue_id, node, message_key) DO UPDATE SET last_us = max(last_us, excluded.last_us)",
        )

    def record_links(self, events: Iterable[Event]) -> list[Link]:
        """Store the links the events name (a hop to Dovecot, a re-injected queue file, a stored copy)."""
        found: list[Link] = []
        rows: list[tuple[Link, int]] = []
        for event in events:
            for link in links_of(event):
                found.append(link)
                rows.append((link, event.ts))
        self._insert(rows)
        return found

    def hint_links(self, events: Iterable[Event]) -> list[Link]:
        """Links by Message-ID for this batch's mailbox server events (`hint_links`)."""
        return hint_links(self.conn, events, self._insert)

    def _insert(self, rows: Sequence[tuple[Link, int]]) -> None:
        self.insert(self.conn, INSERT_LINKS, link_rows(rows), LINKS_ONCE)


def link_rows(links: Iterable[tuple[Link, int]]) -> list[tuple[object, ...]]:
    """The `message_links` rows (`INSERT_LINKS`'s columns) of links, each with the time of the event that named it."""
    return [(ln.handle, ln.message_key, int(ln.upstream), ln.recipient, int(ln.hint), ts) for ln, ts in links]


def hint_links(
    conn: Queries, events: Iterable[Event], insert: Callable[[Sequence[tuple[Link, int]]], None]
) -> list[Link]:
    """Link a mailbox server's copy or access that no delivery names exactly, by its Message-ID
    (both stores, in the transaction that writes the events, once the index holds their messages).

    Dovecot's log may not say which delivery stored a copy (no `save` line in mail_log, a
    copy between folders, a Maildir our gateway wrote): then the writer decides once, by the
    Message-ID and the user, for the latest such delivery not after the event (allowing for
    other nodes' clocks). An exact link written later wins over it (`keys.upstream_edges`).
    """
    found: list[Link] = []
    for event in events:
        key = event.message_key
        if key is None or not _needs_hint(event) or _has_upstream(conn, key):
            continue
        target = _hint_target(event, _delivered(conn, event))
        if target is not None:
            links = hop(target, key, event.recipient, hint=True)
            insert([(link, event.ts) for link in links])
            found.extend(links)
    return found


def _has_upstream(conn: Queries, key: str) -> bool:
    row = conn.execute(
        "SELECT 1 FROM message_links AS down JOIN message_links AS up"
        " ON up.handle = down.handle AND up.upstream = 1 AND up.message_key != down.message_key"
        " WHERE down.message_key = ? AND down.upstream = 0 LIMIT 1",
        (key,),
    ).fetchone()
    return row is not None


def _delivered(conn: Queries, event: Event) -> list[tuple[str, str, int]]:
    """(message, recipient, first seen) of the messages with the event's Message-ID (or what
    Dovecot kept of it) and that recipient that arrived not after the event, newest first."""
    sql, params = delivered_query(event)
    return [(str(key), str(recipient), int(seen)) for key, recipient, seen in conn.execute(sql, params)]


def delivered_query(event: Event) -> tuple[str, list[Any]]:
    """`_delivered`'s query. It must find the rows by Message-ID: the recipient's index also
    matches (recipient, time, and the order), and SQLite, knowing no statistics, takes it - which
    walks every message the recipient ever got back from the event's time until one has the
    Message-ID. `(recipient = ?) IS TRUE` compares alike (the column's collation) but no index
    serves it, in SQLite and in PostgreSQL."""
    assert event.message_id is not None and event.recipient is not None
    clauses = ["first_seen <= ?", "(recipient = ?) IS TRUE"]
    params: list[Any] = [event.ts + CLOCK_SLACK_US, event.recipient]
    prefix = cut_message_id_prefix(event.message_id)
    if prefix is None:
        clauses.append("message_id = ?")
        params.append(event.message_id)
    else:
        clauses.append("message_id >= ? AND substr(message_id, 1, ?) = ?")
        params.extend([prefix, len(prefix), prefix])
        if ord(prefix[-1]) < sys.maxunicode:
            clauses.append("message_id < ?")
            params.append(prefix[:-1] + chr(ord(prefix[-1]) + 1))
    sql = (
        f"SELECT message_key, recipient, first_seen FROM message_index WHERE {' AND '.join(clauses)}"
        f" ORDER BY first_seen DESC LIMIT {_HINT_CANDIDATES}"
    )
    return sql, params


def _needs_hint(event: Event) -> bool:
    """A mailbox server's event that no exact handle may link: an access, a copy, an LDA delivery."""
    if event.source not in MAILBOX_SERVERS or not event.message_id or not event.recipient:
        return False
    action = event.detail.get("action")
    if event.kind in ACCESS_KINDS:
        return action != "discard"
    if event.kind == "deliver" and action in MAILBOX_ACTIONS:
        return True
    return event.kind in ("deliver", "defer") and (not event.session or event.detail.get("protocol") == "lda")


def _hint_target(event: Event, delivered: Sequence[tuple[str, str, int]]) -> str | None:
    """The message an event is linked to by its Message-ID and user: the latest one delivered to them."""
    for key, _, _ in delivered:  # newest first
        if key != event.message_key:
            return key
    return None


def stamp_earlier_events(conn: sqlite3.Connection) -> None:
    """The migration to message keys: every event stored before gets its key and exact links, once
    (the links by Message-ID need the message index: `sqlite_index.index_earlier_events`)."""
    book = MessageBook(conn, LegacyKeys())  # the whole history comes by in order: nothing to look up
    after: tuple[int, int] = (-(1 << 62), -1)
    while True:
        batch = event_rows(
            conn.execute(f"{_SELECT} WHERE (ts, id) > (?, ?) ORDER BY ts, id LIMIT 20000", after).fetchall()
        )
        if not batch:
            break
        after = (batch[-1].ts, batch[-1].id or 0)
        book.stamp(batch)
        conn.executemany(
            "UPDATE events SET message_key = ? WHERE id = ?",
            [(event.message_key, event.id) for event in batch if event.message_key is not None],
        )
        book.record_links(batch)


def hint_earlier_events(conn: sqlite3.Connection) -> int:
    """Links by Message-ID for the mailbox server events stored before (once the index exists)."""
    book = MessageBook(conn, LegacyKeys())
    made = 0
    after = -1
    while True:
        batch = event_rows(
            conn.execute(
                f"{_SELECT} WHERE id > ? AND source IN ({', '.join(repr(s) for s in sorted(MAILBOX_SERVERS))})"
                " ORDER BY id LIMIT 20000",
                (after,),
            ).fetchall()
        )
        if not batch:
            return made
        after = batch[-1].id or 0
        made += len(book.hint_links(batch))


def queue_life(conn: Queries, node: str, queue_id: str, at_us: int) -> str | None:
    row = conn.execute(
        "SELECT message_key FROM message_queues WHERE queue_id = ? AND node = ? AND last_us <= ? AND last_us >= ?"
        " ORDER BY last_us DESC LIMIT 1",
        (queue_id, node, at_us, at_us - QUEUE_IDLE_US),
    ).fetchone()
    return None if row is None else str(row[0])


def links(conn: Queries, keys: Sequence[str]) -> list[Link]:
    """The link rows of `keys` and of every handle they name."""
    found: list[Link] = []
    for start in range(0, len(keys), _KEYS_PER_QUERY):
        chunk = keys[start : start + _KEYS_PER_QUERY]
        rows = conn.execute(
            "SELECT handle, message_key, upstream, recipient, hint FROM message_links"
            f" WHERE handle IN (SELECT handle FROM message_links WHERE message_key IN ({', '.join('?' for _ in chunk)}))",
            list(chunk),
        )
        found.extend(Link(row[0], row[1], bool(row[2]), row[3], bool(row[4])) for row in rows)
    return found
