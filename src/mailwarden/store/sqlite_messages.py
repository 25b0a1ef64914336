"""The SQLite store's part for messages: keys of events written without one, links between keys.

Called by the writer thread inside the transaction that inserts the events (and by the migration
that gives a store made before message keys its keys), so that events, their links and (later)
the message index always agree.
"""

from __future__ import annotations

import sqlite3
import sys
from collections.abc import Iterable, Sequence
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
)
from mailwarden.messages.legacy import QUEUE_IDLE_US, LegacyKeys, Life

_HINT_CANDIDATES: Final = 50
_SELECT: Final = f"SELECT id, {', '.join(FIELDS)} FROM events"
_INSERT_LINK: Final = (
    "INSERT INTO message_links (handle, message_key, upstream, recipient, hint, ts) VALUES (?, ?, ?, ?, ?, ?)"
    " ON CONFLICT (handle, message_key, upstream) DO NOTHING"
)


def event_rows(rows: Iterable[Sequence[Any]]) -> list[Event]:
    """Events from `_SELECT` rows."""
    return [Event.from_row(tuple(row[1:]), event_id=row[0]) for row in rows]


def _recall(conn: sqlite3.Connection, node: str, queue_id: str) -> Life | None:
    """The latest life of a queue id written to the store, for events that arrive without a key."""
    row = conn.execute(
        "SELECT message_key, ts, session FROM events WHERE queue_id = ? AND node = ? AND message_key IS NOT NULL"
        " ORDER BY ts DESC, id DESC LIMIT 1",
        (queue_id, node),
    ).fetchone()
    if row is None:
        return None
    accepted = conn.execute(
        "SELECT 1 FROM events WHERE message_key = ? AND kind = 'accept' LIMIT 1", (row[0],)
    ).fetchone()
    return Life(row[0], row[1], row[2], accepted is not None)


class MessageBook:
    """Keys and links of the events one connection writes; one per writing connection."""

    def __init__(self, conn: sqlite3.Connection, legacy: LegacyKeys | None = None) -> None:
        self.conn = conn
        self._legacy = legacy or LegacyKeys(lambda node, queue_id: _recall(conn, node, queue_id))

    def stamp(self, events: Iterable[Event]) -> None:
        """Give an event written without a key the one the old correlation rules give it."""
        legacy = self._legacy
        for event in events:
            if event.message_key is None:
                event.message_key = legacy.key(event)

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
        """Link a mailbox server's copy or access that no delivery names exactly, by its Message-ID.

        Dovecot's log may not say which delivery stored a copy (no `save` line in mail_log, a
        copy between folders, a Maildir our gateway wrote): then the writer decides once, by the
        Message-ID and the user, for the latest such delivery not after the event (allowing for
        other nodes' clocks). An exact link written later wins over it (`keys.upstream_edges`).
        """
        found: list[Link] = []
        for event in events:
            key = event.message_key
            if key is None or not _needs_hint(event) or self._has_upstream(key):
                continue
            target = _hint_target(event, self._delivered(event))
            if target is not None:
                links = hop(target, key, event.recipient, hint=True)
                self._insert([(link, event.ts) for link in links])
                found.extend(links)
        return found

    def _insert(self, rows: Sequence[tuple[Link, int]]) -> None:
        if rows:
            self.conn.executemany(
                _INSERT_LINK,
                [(ln.handle, ln.message_key, int(ln.upstream), ln.recipient, int(ln.hint), ts) for ln, ts in rows],
            )

    def _has_upstream(self, key: str) -> bool:
        row = self.conn.execute(
            "SELECT 1 FROM message_links AS down JOIN message_links AS up"
            " ON up.handle = down.handle AND up.upstream = 1 AND up.message_key != down.message_key"
            " WHERE down.message_key = ? AND down.upstream = 0 LIMIT 1",
            (key,),
        ).fetchone()
        return row is not None

    def _delivered(self, event: Event) -> list[Event]:
        """Deliveries of the event's Message-ID (or what Dovecot kept of it) not after the event, newest first."""
        assert event.message_id is not None
        clauses = ["kind = 'deliver'", "message_key IS NOT NULL", "ts <= ?"]
        params: list[Any] = [event.ts + CLOCK_SLACK_US]
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
        sql = f"{_SELECT} WHERE {' AND '.join(clauses)} ORDER BY ts DESC, id DESC LIMIT {_HINT_CANDIDATES}"
        return event_rows(self.conn.execute(sql, params))


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


def _hint_target(event: Event, delivered: Sequence[Event]) -> str | None:
    """The key an event is linked to by its Message-ID: the mailbox server's own delivery to that
    user on that node first, else an MTA's delivery to that recipient; the latest of either."""
    wanted = (event.recipient or "").lower()
    best: tuple[int, str] | None = None
    for candidate in delivered:  # newest first
        key = candidate.message_key
        if key is None or key == event.message_key or candidate.detail.get("action") in MAILBOX_ACTIONS:
            continue
        mailbox = candidate.detail.get("mailbox")
        names = {(candidate.recipient or "").lower(), mailbox.lower() if isinstance(mailbox, str) else ""}
        if wanted not in names:
            continue
        rank = 0 if candidate.source in MAILBOX_SERVERS and candidate.node == event.node else 1
        if best is None or rank < best[0]:
            best = (rank, key)
    return best[1] if best is not None else None


def stamp_earlier_events(conn: sqlite3.Connection) -> None:
    """The migration to message keys: every event stored before gets its key and links, once."""
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
        book.hint_links(batch)


def queue_life(conn: sqlite3.Connection, node: str, queue_id: str, at_us: int) -> str | None:
    row = conn.execute(
        "SELECT message_key FROM events WHERE queue_id = ? AND node = ? AND ts <= ? AND ts >= ?"
        f" AND message_key IS NOT NULL AND source NOT IN ({', '.join('?' for _ in MAILBOX_SERVERS)})"
        " ORDER BY ts DESC, id DESC LIMIT 1",
        (queue_id, node, at_us, at_us - QUEUE_IDLE_US, *sorted(MAILBOX_SERVERS)),
    ).fetchone()
    return None if row is None else str(row[0])


def links(conn: sqlite3.Connection, keys: Sequence[str]) -> list[Link]:
    """The link rows of `keys` and of every handle they name."""
    if not keys:
        return []
    marks = ", ".join("?" for _ in keys)
    rows = conn.execute(
        "SELECT handle, message_key, upstream, recipient, hint FROM message_links"
        f" WHERE handle IN (SELECT handle FROM message_links WHERE message_key IN ({marks}))",
        list(keys),
    ).fetchall()
    return [Link(row[0], row[1], bool(row[2]), row[3], bool(row[4])) for row in rows]
