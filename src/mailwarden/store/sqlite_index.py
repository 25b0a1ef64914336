"""The SQLite store's message index: kept up to date in the writer's transaction, rebuilt on demand.

`message_index` has one row per message and recipient (`messages.index.IndexRow`);
`message_roots` names, for every key linked under another one, the message (root) it belongs to.
Both are derived from the events and their links: `MessageIndex.update` folds the messages a
batch of events touches (`messages.index.message_rows`, in the transaction that writes the
events), `rebuild` folds every message from scratch with the same function, so the two agree.
"""

from __future__ import annotations

import ipaddress
import sqlite3
from collections import OrderedDict
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Final

from mailwarden.events import FIELDS, Event
from mailwarden.messages.index import INDEX_FIELDS, IndexRow, message_rows
from mailwarden.messages.keys import Link, components, root_of, upstream_edges
from mailwarden.store import sqlite_messages
from mailwarden.store.base import IndexPage, IndexQuery, StoreError
from mailwarden.store.sql import SqlConnection, WriterConnection
from mailwarden.store.sqlite_messages import InsertRows, event_rows, insert_rows

_CHUNK: Final = 500  # keys per IN (...) query
_REBUILD_ROWS: Final = 5000  # rows a rebuild writes at a time
_COUNTED_PAIRS: Final = 32  # (status, reason) combinations counted one by one in a single pass
_BUSY_NETWORK: Final = 2000  # rows of a client network beyond which a page walks the time index
_CACHED_MESSAGES: Final = 4096  # messages whose events the writer keeps (most continue in the next batch)
_SELECT: Final = f"SELECT id, {', '.join(FIELDS)} FROM events"
_ROW_COLUMNS: Final = ", ".join(INDEX_FIELDS)
_UPSERT: Final = f"INSERT INTO message_index ({_ROW_COLUMNS})"
_ON_CONFLICT: Final = " ON CONFLICT (message_key, recipient) DO UPDATE SET " + ", ".join(
    f"{name} = excluded.{name}" for name in INDEX_FIELDS[2:]
)
Progress = Callable[[int], None]  # told how many events were folded so far


def _chunks(items: Sequence[str]) -> Iterator[Sequence[str]]:
    for start in range(0, len(items), _CHUNK):
        yield items[start : start + _CHUNK]


def _marks(items: Sequence[object]) -> str:
    return ", ".join("?" for _ in items)


@dataclass
class _Message:
    """What the writer knows of a message it folded lately: its keys, events and rows."""

    keys: set[str]
    events: list[Event]
    rows: list[IndexRow]


class MessageIndex:
    """Keeps `message_index` and `message_roots` up to date for the events one connection writes."""

    def __init__(self, conn: WriterConnection, insert: InsertRows = insert_rows) -> None:
        self.conn = conn
        self._insert = insert
        self._messages: OrderedDict[str, _Message] = OrderedDict()  # by root, least recently folded first
        self._root_of: dict[str, str] = {}  # key -> root, for the keys of `_messages`
        self._version: int | None = None  # the database's data_version when they were remembered

    def forget(self) -> None:
        """Drop what is remembered (its transaction was rolled back, or another connection wrote since)."""
        self._messages.clear()
        self._root_of.clear()

    def update(self, events: Sequence[Event], links: Sequence[Link]) -> None:
        """Fold every message the batch's events (already inserted) or new links touch into its rows."""
        batch: dict[str, list[Event]] = {}
        for event in events:
            if event.message_key is not None:
                batch.setdefault(event.message_key, []).append(event)
        if not batch and not links:
            return
        roots, looked_up = self._look_up(list(batch))
        first_id = min((e.id for e in events if e.id is not None), default=1 << 62)
        moved = self._relink(links) if links else set()  # messages whose keys changed: folded again
        if links:
            roots, looked_up = self._roots(list(batch)), {}
        dirty = sorted({roots[key] for key in batch} | moved)
        members = self._members(dirty, looked_up)
        earlier = self._earlier([r for r in dirty if r not in self._messages], members, first_id)
        stale = self._stored_rows([r for r in dirty if r not in self._messages and (r in moved or earlier.get(r))])
        upserts: list[tuple[object, ...]] = []
        deletes: list[tuple[str, str]] = []
        remember = len(dirty) <= _CACHED_MESSAGES // 4  # a live writer's messages go on; a bulk import's are done
        for root in dirty:
            known = self._messages.get(root)
            folded = list(known.events) if known is not None else list(earlier.get(root, ()))
            for key in members[root]:
                folded.extend(batch.get(key, ()))
            rows = message_rows(root, folded)
            before = {row.recipient.lower(): row for row in (known.rows if known is not None else stale.get(root, ()))}
            current = {row.recipient.lower(): row for row in rows}
            upserts.extend(row for name, row in current.items() if before.get(name) != row)
            deletes.extend((root, row.recipient) for name, row in before.items() if name not in current)
            if remember:
                self._messages.pop(root, None)  # remembered again as the most recent
                self._remember(root, _Message(members[root], folded, rows))
            else:
                self._drop(root)
        if deletes:
            self.conn.executemany("DELETE FROM message_index WHERE message_key = ? AND recipient = ?", deletes)
        self._insert(self.conn, _UPSERT, upserts, _ON_CONFLICT)

    def _remember(self, root: str, message: _Message) -> None:
        self._messages[root] = message
        for key in message.keys:
            self._root_of[key] = root
        while len(self._messages) > _CACHED_MESSAGES:
            _, dropped = self._messages.popitem(last=False)
            for key in dropped.keys:
                self._root_of.pop(key, None)

    def _drop(self, root: str) -> None:
        dropped = self._messages.pop(root, None)
        if dropped is not None:
            for key in dropped.keys:
                self._root_of.pop(key, None)

    def _look_up(self, keys: Sequence[str]) -> tuple[dict[str, str], dict[str, set[str]]]:
        """Each key's message, and the keys of the messages among them that are roots, together with
        the database's data_version (what is remembered is dropped when another connection wrote):
        one statement for a live writer's batch, whose every SQLite call waits for the GIL again."""
        unknown = [key for key in keys if key not in self._root_of]
        first = unknown[:_CHUNK]
        sql = "SELECT NULL, NULL, data_version FROM pragma_data_version()"
        if first:
            marks = _marks(first)
            sql += f" UNION ALL SELECT key, root, NULL FROM message_roots WHERE key IN ({marks}) OR root IN ({marks})"
        found = self.conn.execute(sql, [*first, *first]).fetchall()
        version = next(row[2] for row in found if row[0] is None)
        if version != self._version:  # another connection (process) wrote: what is remembered may be stale
            had = bool(self._root_of)
            self.forget()
            self._version = version
            if had:
                return self._look_up(keys)
        roots = {key: self._root_of.get(key, key) for key in keys}
        members: dict[str, set[str]] = {key: {key} for key in first}  # complete: every row naming them came
        for key, root, _ in found:
            if key is None:
                continue
            if key in members or key in roots:
                roots[key] = root
            if root in members:
                members[root].add(key)
        roots.update(self._roots(unknown[_CHUNK:]))
        return roots, {root: keys for root, keys in members.items() if roots.get(root, root) == root}

    def _roots(self, keys: Sequence[str]) -> dict[str, str]:
        """Each key's message: itself, unless `message_roots` names another."""
        found = {key: self._root_of.get(key, key) for key in keys}
        unknown = [key for key in keys if key not in self._root_of]
        for chunk in _chunks(unknown):
            for key, root in self.conn.execute(
                f"SELECT key, root FROM message_roots WHERE key IN ({_marks(chunk)})", chunk
            ):
                found[key] = root
        return found

    def _members(self, roots: Sequence[str], looked_up: dict[str, set[str]]) -> dict[str, set[str]]:
        """The keys of each message: its root and the keys linked under it."""
        members = {root: {root} for root in roots}
        unknown = []
        for root in roots:
            known = self._messages.get(root)
            if known is not None:
                members[root] = set(known.keys)
            elif root in looked_up:
                members[root] = looked_up[root]
            else:
                unknown.append(root)
        for chunk in _chunks(unknown):
            for key, root in self.conn.execute(
                f"SELECT key, root FROM message_roots WHERE root IN ({_marks(chunk)})", chunk
            ):
                members[root].add(key)
        return members

    def _earlier(self, roots: Sequence[str], members: dict[str, set[str]], before_id: int) -> dict[str, list[Event]]:
        """The events written before this batch of the messages not remembered."""
        owner = {key: root for root in roots for key in members[root]}
        found: dict[str, list[Event]] = {}
        keys = sorted(owner)
        for chunk in _chunks(keys):
            rows = self.conn.execute(
                f"{_SELECT} WHERE message_key IN ({_marks(chunk)}) AND id < ?", [*chunk, before_id]
            ).fetchall()
            for event in event_rows(rows):
                found.setdefault(owner[str(event.message_key)], []).append(event)
        return found

    def _stored_rows(self, roots: Sequence[str]) -> dict[str, list[IndexRow]]:
        found: dict[str, list[IndexRow]] = {}
        for chunk in _chunks(roots):
            sql = f"SELECT {_ROW_COLUMNS} FROM message_index WHERE message_key IN ({_marks(chunk)})"
            for values in self.conn.execute(sql, chunk):
                row = IndexRow(*values)
                found.setdefault(row.message_key, []).append(row)
        return found

    def _relink(self, links: Sequence[Link]) -> set[str]:
        """Put the keys new links join under their message's root; the messages to fold again.

        A key that moves leaves its former message: that one is folded again without it, or its
        rows go when it is now part of another message itself.
        """
        conn = self.conn
        refold: set[str] = set()
        joined = components(
            sorted({link.message_key for link in links}), lambda keys: sqlite_messages.links(conn, keys)
        )
        messages = {message.root: message for message in joined.values()}
        previous = self._roots(sorted({key for message in messages.values() for key in message.keys}))
        placed: list[tuple[str, str]] = []
        freed: list[tuple[str]] = []
        for root, message in sorted(messages.items()):
            for member in sorted(message.keys):
                before = previous[member]
                if before == root:
                    continue
                if member == root:
                    freed.append((member,))
                else:
                    placed.append((member, root))
                self._drop(before)
                refold |= {root, before}
            if root in refold:
                self._drop(root)
        conn.executemany("DELETE FROM message_roots WHERE key = ?", freed)
        self._insert(conn, "INSERT OR REPLACE INTO message_roots (key, root)", placed, "")
        now = self._roots(sorted(refold))
        merged = sorted(root for root in refold if now[root] != root)
        conn.executemany("DELETE FROM message_index WHERE message_key = ?", [(root,) for root in merged])
        return refold - set(merged)


def index_earlier_events(conn: sqlite3.Connection) -> None:
    """The migration that gives a store with events its message index (and the links by Message-ID
    of its mailbox server events, which need the index to find what they continue)."""
    rebuild(conn)
    if sqlite_messages.hint_earlier_events(conn):
        rebuild(conn)


def rebuild_all(conn: sqlite3.Connection) -> None:
    """A migration that lays the index out anew: its rows again, from the events."""
    rebuild(conn)


def rebuild(conn: sqlite3.Connection, progress: Progress | None = None) -> int:
    """Make `message_roots` and `message_index` again from the links and events; the rows written.

    Messages of one key are folded in key order as the events come; messages of linked keys
    afterwards, each from the events of all its keys.
    """
    conn.execute("DELETE FROM message_index")
    conn.execute("DELETE FROM message_roots")
    edges = upstream_edges(_all_links(conn))
    linked: dict[str, set[str]] = {}
    for key in {*edges, *(up for ups in edges.values() for up, _ in ups)}:
        root = root_of(key, edges)
        linked.setdefault(root, {root}).add(key)
        if root != key:
            conn.execute("INSERT INTO message_roots (key, root) VALUES (?, ?)", (key, root))
    in_component = {key for keys in linked.values() for key in keys}
    pending: list[IndexRow] = []
    written = folded = 0
    cursor = conn.execute(f"{_SELECT} WHERE message_key IS NOT NULL ORDER BY message_key, id")
    for key, events in _by_key(cursor):
        folded += len(events)
        if key not in in_component:
            pending.extend(message_rows(key, events))
        if len(pending) >= _REBUILD_ROWS:
            written += _insert(conn, pending)
        if progress is not None:
            progress(folded)
    for root, keys in sorted(linked.items()):
        members = sorted(keys)
        events = [
            event
            for chunk in _chunks(members)
            for event in event_rows(conn.execute(f"{_SELECT} WHERE message_key IN ({_marks(chunk)})", chunk))
        ]
        pending.extend(message_rows(root, events))
        if len(pending) >= _REBUILD_ROWS:
            written += _insert(conn, pending)
    return written + _insert(conn, pending)


def _all_links(conn: sqlite3.Connection) -> list[Link]:
    rows = conn.execute("SELECT handle, message_key, upstream, recipient, hint FROM message_links")
    return [Link(row[0], row[1], bool(row[2]), row[3], bool(row[4])) for row in rows]


def _by_key(cursor: Iterable[Sequence[object]]) -> Iterator[tuple[str, list[Event]]]:
    """Events ordered by key, grouped by key."""
    current: str | None = None
    group: list[Sequence[object]] = []
    for row in cursor:
        key = str(row[1 + FIELDS.index("message_key")])
        if key != current and group:
            assert current is not None
            yield current, event_rows(group)
            group = []
        current = key
        group.append(row)
    if group and current is not None:
        yield current, event_rows(group)


def _insert(conn: sqlite3.Connection, rows: list[IndexRow]) -> int:
    """Write the rows gathered (and forget them); how many."""
    insert_rows(conn, _UPSERT, rows, _ON_CONFLICT)
    written = len(rows)
    rows.clear()
    return written


# ---------------------------------------------------------------------------- searching
def _where(query: IndexQuery, *, network_index: bool = True) -> tuple[list[str], list[object]]:
    """The conditions of `query` on `message_index`, each written so an index can serve it (a client
    network only when `network_index`: see `page`)."""
    clauses: list[str] = []
    params: list[object] = []
    if query.allowed_domains is not None:
        allowed = sorted({domain.lower().lstrip("@") for domain in query.allowed_domains})
        clauses.append(f"recipient_domain IN ({_marks(allowed)})" if allowed else "0 = 1")
        params.extend(allowed)
    if query.since_us is not None:
        clauses.append("first_seen >= ?")
        params.append(query.since_us)
    if query.until_us is not None:
        clauses.append("first_seen < ?")
        params.append(query.until_us)
    for column in ("status", "reason", "message_key", "message_id"):
        value = getattr(query, column)
        if value is not None:
            clauses.append(f"{column} = ?")
            params.append(value)
    for name in ("sender", "recipient"):
        exact, domain, contains = (getattr(query, name + suffix) for suffix in ("", "_domain", "_contains"))
        if exact is not None:
            clauses.append(f"{name} = ?")  # the column's collation: NOCASE
            params.append(exact)
        if domain is not None:
            clauses.append(f"{name}_domain = ?")
            params.append(domain.lower().lstrip("@"))
        if contains is not None:
            clauses.append(f"instr(lower({name}), ?) > 0")
            params.append(contains.lower())
    if query.queue_id is not None:  # any hop's queue file: the messages of the events that name it
        clauses.append(
            "message_key IN (SELECT coalesce((SELECT root FROM message_roots WHERE key = q.message_key), q.message_key)"
            " FROM message_queues AS q WHERE q.queue_id = ?)"
        )
        params.append(query.queue_id)
    if query.client_network is not None:
        network_clause(query.client_network, clauses, params, indexed=network_index)
    return clauses, params


def network_clause(text: str, clauses: list[str], params: list[object], *, indexed: bool = True) -> None:
    """A single address matches exactly; a network by a text-prefix range (index) plus an exact test,
    or by the exact test alone (`indexed` False: the query then walks another index, by time)."""
    try:
        network = ipaddress.ip_network(text.strip(), strict=False)
    except ValueError:
        raise StoreError(f"{text!r} is not an IP address or network (e.g. 192.0.2.7 or 192.0.2.0/24)") from None
    if network.num_addresses == 1:
        clauses.append("client_ip = ?")
        params.append(str(network.network_address))
        return
    prefix = _text_prefix(network)
    if prefix and indexed:
        clauses.append("client_ip >= ? AND client_ip < ?")
        params.extend([prefix + ".", prefix + "/"])  # "/" sorts right after "."
    clauses.append("mw_ip_in(client_ip, ?)")
    params.append(str(network))


def _text_prefix(network: ipaddress.IPv4Network | ipaddress.IPv6Network) -> str:
    """The text all addresses of an IPv4 network start with (whole octets), "" for IPv6."""
    if network.version != 4:
        return ""
    return ".".join(str(network.network_address).split(".")[: network.prefixlen // 8])


def _busy_network(conn: SqlConnection, text: str) -> bool:
    """Whether a client network has so many rows that walking the time index and testing each row
    finds a page sooner than reading them all from the client index and sorting them by time."""
    network = ipaddress.ip_network(text.strip(), strict=False)
    if network.num_addresses == 1:
        return False
    prefix = _text_prefix(network)
    if not prefix:
        return True
    probe = "SELECT count(*) FROM (SELECT 1 FROM message_index WHERE client_ip >= ? AND client_ip < ? LIMIT ?) AS probe"
    (found,) = conn.execute(probe, (prefix + ".", prefix + "/", _BUSY_NETWORK)).fetchone()
    return bool(found >= _BUSY_NETWORK)


def page(
    conn: SqlConnection,
    query: IndexQuery,
    limit: int,
    after: tuple[int, str] | None,
    offset: int,
    before: tuple[int, str] | None = None,
) -> IndexPage:
    """Newest first; with `before` (and no `after`) the page just newer than that message, walked
    from it upwards, so going back costs what going on does."""
    busy = query.client_network is not None and _busy_network(conn, query.client_network)
    clauses, params = _where(query, network_index=not busy)
    keyset = list(clauses)
    keyset_params = list(params)
    if after is not None:
        keyset.append("(first_seen, message_key) < (?, ?)")
        keyset_params.extend(after)
    backwards = before is not None and after is None
    if backwards:
        assert before is not None
        keyset.append("(first_seen, message_key) > (?, ?)")
        keyset_params.extend(before)
    where = f" WHERE {' AND '.join(keyset)}" if keyset else ""
    order = "ASC" if backwards else "DESC"
    found = conn.execute(
        f"SELECT DISTINCT first_seen, message_key FROM message_index{where}"
        f" ORDER BY first_seen {order}, message_key {order} LIMIT ? OFFSET ?",
        [*keyset_params, limit + 1, 0 if backwards else offset],
    ).fetchall()
    messages = [(int(seen), str(key)) for seen, key in found[:limit]]
    if backwards:
        messages.reverse()
    if not messages:
        return IndexPage([], None)
    keys = [key for _, key in messages]
    scoped = " AND ".join([f"message_key IN ({_marks(keys)})", *clauses])
    rows = [
        IndexRow(*values)
        for values in conn.execute(
            f"SELECT {_ROW_COLUMNS} FROM message_index WHERE {scoped}"
            " ORDER BY first_seen DESC, message_key DESC, recipient",
            [*keys, *params],
        )
    ]
    more = len(found) > limit
    if backwards:  # older: at least the message `before` named; newer: what the extra row found
        return IndexPage(rows, messages[-1], messages[0] if more else None)
    return IndexPage(rows, messages[-1] if more else None, messages[0] if after is not None or offset else None)


def counts(conn: SqlConnection, query: IndexQuery) -> list[tuple[str, str | None, int]]:
    """Rows by status and reason, in two passes over the rows that match: the combinations (a
    handful, kept in a tiny temporary index), then one count of each. A GROUP BY would sort every
    row first: 190 ms against 120 ms for a customer's 150,000 rows of a month (measured)."""
    clauses, params = _where(query)
    where = f" WHERE {' AND '.join(clauses)}" if clauses else ""
    pairs = conn.execute(f"SELECT DISTINCT status, reason FROM message_index{where}", params).fetchall()
    if not pairs:
        return []
    if len(pairs) > _COUNTED_PAIRS:  # many combinations: one count each would cost more than a sort
        sql = f"SELECT status, reason, count(*) FROM message_index{where} GROUP BY status, reason"
        return _most_first((str(status), reason, int(number)) for status, reason, number in conn.execute(sql, params))
    filters = ", ".join("count(*) FILTER (WHERE status = ? AND reason IS NOT DISTINCT FROM ?)" for _ in pairs)
    (numbers,) = conn.execute(
        f"SELECT {filters} FROM message_index{where}", [value for pair in pairs for value in pair] + params
    ).fetchall()
    return _most_first(
        (str(status), reason, int(number)) for (status, reason), number in zip(pairs, numbers, strict=True)
    )


def _most_first(rows: Iterable[tuple[str, str | None, int]]) -> list[tuple[str, str | None, int]]:
    return sorted(rows, key=lambda row: (-row[2], row[0], row[1] or ""))
