"""The parts of the store that both SQL backends implement alike, written once.

Reading positions, counting events, node ids, greylisting, pregreet passes, mailboxes and the
tracking center's accounts and sessions are a statement or two each, the same for SQLite and
PostgreSQL but for the placeholders (`sql.Statements`); a message's links, its queue file's life
and the message index's pages and counts are SQLite's reads for both (sqlite_messages,
sqlite_index). A backend mixes `SqlParts` in and says which dialect it speaks (`_sql`), how one
statement gets a connection (`_statement`: SQLite's reading connection under its lock, a
PostgreSQL connection from the pool), how several run as one transaction (`_transaction`) and
where the `?` reads go (`_reads`); what really differs (writing and purging events, rebuilding the
index, finding a mailbox, the audit log's writes) stays in the backend.
"""

from __future__ import annotations

import json
from abc import ABC, abstractmethod
from collections.abc import Iterable, Sequence
from contextlib import AbstractContextManager
from typing import Any, ClassVar, cast

from mailwarden.events import now_us
from mailwarden.messages.keys import Link
from mailwarden.store import sqlite_index, sqlite_messages
from mailwarden.store.accounts import AuditEntry, Role, WebAccount, WebSession
from mailwarden.store.base import GreylistEntry, IndexPage, IndexQuery, Mailbox, StoreError
from mailwarden.store.parts import node_clash
from mailwarden.store.sql import SqlConnection, Statements


class SqlParts(ABC):
    """Mixed into a store before `Store`: the parts' methods, on the backend's connections."""

    _sql: ClassVar[Statements]  # the backend's dialect: sql.SQLITE or sql.POSTGRES

    @abstractmethod
    def _statement(self) -> AbstractContextManager[SqlConnection]:
        """A connection for one statement; database errors leave it as StoreError."""

    @abstractmethod
    def _transaction(self, lock: str | None = None) -> AbstractContextManager[SqlConnection]:
        """A connection in a transaction: committed when the block ends, rolled back when it raises.
        `lock`: a table whose other writers wait until then (for a read followed by a write)."""

    @abstractmethod
    def _reads(self) -> AbstractContextManager[SqlConnection]:
        """A connection that takes SQLite's `?` placeholders, for the reads put together per query."""

    @abstractmethod
    def _mailbox_changed(self, address: str) -> None:
        """Forget what the backend remembers of a mailbox that changed or went."""

    # -- reading positions and events
    def load_position(self, name: str) -> str | None:
        with self._statement() as conn:
            row = conn.execute(self._sql.load_position, (name,)).fetchone()
        return None if row is None else str(row[0])

    def links(self, keys: Sequence[str]) -> list[Link]:
        with self._reads() as conn:
            return sqlite_messages.links(conn, keys)

    def queue_life(self, node: str, queue_id: str, at_us: int) -> str | None:
        with self._reads() as conn:
            return sqlite_messages.queue_life(conn, node, queue_id, at_us)

    def count_events(self) -> int:
        with self._statement() as conn:
            return int(conn.execute(self._sql.count_events, ()).fetchone()[0])

    def count_events_after(self, after_id: int) -> int:
        with self._statement() as conn:
            return int(conn.execute(self._sql.count_events_after, (after_id,)).fetchone()[0])

    def oldest_event_us(self) -> int | None:
        with self._statement() as conn:
            row = conn.execute(self._sql.oldest_event, ()).fetchone()
        return None if row is None or row[0] is None else int(row[0])

    # -- the message index
    def index_page(
        self,
        query: IndexQuery,
        *,
        limit: int,
        after: tuple[int, str] | None = None,
        offset: int = 0,
        before: tuple[int, str] | None = None,
    ) -> IndexPage:
        with self._reads() as conn:
            return sqlite_index.page(conn, query, limit, after, offset, before)

    def index_counts(self, query: IndexQuery) -> list[tuple[str, str | None, int]]:
        with self._reads() as conn:
            return sqlite_index.counts(conn, query)

    # -- node ids
    def register_node(self, name: str, node_id: int) -> None:
        with self._transaction(lock="nodes") as conn:  # two nodes starting at once: one after the other
            row = conn.execute(self._sql.node_of_id, (node_id,)).fetchone()
            if row is not None and row[0] != name:
                raise node_clash(name, node_id, row[0])
            if row is None:
                conn.execute(self._sql.forget_node, (name,))
                conn.execute(self._sql.register_node, (node_id, name, now_us()))

    def forget_node(self, name: str) -> bool:
        with self._statement() as conn:
            return conn.execute(self._sql.forget_node, (name,)).rowcount > 0

    # -- greylisting
    def greylist_get(self, network: str, sender: str, recipient: str) -> GreylistEntry | None:
        with self._statement() as conn:
            row = conn.execute(self._sql.greylist_get, (network, sender, recipient)).fetchone()
        return None if row is None else GreylistEntry(network, sender, recipient, *row)

    def greylist_put(self, entry: GreylistEntry) -> None:
        row = (
            entry.network,
            entry.sender,
            entry.recipient,
            entry.first_seen_us,
            entry.last_seen_us,
            entry.passed_us,
            entry.attempts,
        )
        with self._statement() as conn:
            conn.execute(self._sql.greylist_put, row)

    def greylist_sender_passed(self, network: str, sender: str, since_us: int) -> bool:
        with self._statement() as conn:
            return conn.execute(self._sql.greylist_sender_passed, (network, sender, since_us)).fetchone() is not None

    def greylist_purge(self, before_us: int) -> int:
        with self._statement() as conn:
            return conn.execute(self._sql.greylist_purge, (before_us,)).rowcount

    # -- pregreet passes
    def pregreet_passed(self, client_ip: str) -> int | None:
        with self._statement() as conn:
            row = conn.execute(self._sql.pregreet_passed, (client_ip,)).fetchone()
        return None if row is None else int(row[0])

    def pregreet_pass(self, client_ip: str, at_us: int, forget_before_us: int) -> None:
        with self._transaction() as conn:
            conn.execute(self._sql.pregreet_forget, (forget_before_us,))
            conn.execute(self._sql.pregreet_pass, (client_ip, at_us))

    # -- mailboxes
    def add_mailbox(self, address: str, password_hash: str) -> Mailbox:
        mailbox = Mailbox(address, password_hash, now_us())
        with self._statement() as conn:
            added = conn.execute(self._sql.add_mailbox, (address, password_hash, mailbox.created_us)).rowcount
        if not added:
            raise StoreError(f"mailbox {address} already exists; use `users passwd` to change its password")
        return mailbox

    def remove_mailbox(self, address: str) -> bool:
        self._mailbox_changed(address)
        with self._statement() as conn:
            return conn.execute(self._sql.remove_mailbox, (address,)).rowcount > 0

    def set_password(self, address: str, password_hash: str) -> bool:
        self._mailbox_changed(address)
        with self._statement() as conn:
            return conn.execute(self._sql.set_password, (password_hash, address)).rowcount > 0

    def update_mailbox_settings(self, address: str, settings: dict[str, Any]) -> bool:
        self._mailbox_changed(address)
        with self._statement() as conn:
            values = (json.dumps(settings, sort_keys=True), address)
            return conn.execute(self._sql.set_mailbox_settings, values).rowcount > 0

    def get_mailbox(self, address: str) -> Mailbox | None:
        with self._statement() as conn:
            row = conn.execute(self._sql.get_mailbox, (address,)).fetchone()
        return None if row is None else Mailbox(row[0], row[1], row[2], json.loads(row[3]))

    def list_mailboxes(self) -> list[Mailbox]:
        with self._statement() as conn:
            rows = conn.execute(self._sql.list_mailboxes, ()).fetchall()
        return [Mailbox(r[0], r[1], r[2], json.loads(r[3])) for r in rows]

    # -- the tracking center's accounts and login sessions
    def add_account(self, account: WebAccount) -> None:
        values = (account.name, account.role, account.password_hash, account.created_us, json.dumps(account.domains))
        with self._statement() as conn:
            added = conn.execute(self._sql.add_account, values).rowcount
        if not added:
            raise StoreError(
                f"account {account.name} exists already; `mailwarden accounts passwd {account.name}` changes its password"
            )

    def get_account(self, name: str) -> WebAccount | None:
        with self._statement() as conn:
            row = conn.execute(self._sql.get_account, (name,)).fetchone()
        return None if row is None else _account(row)

    def list_accounts(self) -> list[WebAccount]:
        with self._statement() as conn:
            rows = conn.execute(self._sql.list_accounts, ()).fetchall()
        return [_account(row) for row in rows]

    def remove_account(self, name: str) -> bool:
        with self._statement() as conn:
            return conn.execute(self._sql.remove_account, (name,)).rowcount > 0

    def set_account_password(self, name: str, password_hash: str) -> bool:
        with self._transaction() as conn:
            changed = conn.execute(self._sql.set_account_password, (password_hash, name)).rowcount
            conn.execute(self._sql.end_account_sessions, (name,))
        return changed > 0

    def add_web_session(self, session: WebSession) -> None:
        values = (session.token_hash, session.account, session.csrf, session.created_us, session.seen_us)
        with self._statement() as conn:
            conn.execute(self._sql.add_web_session, values)

    def get_web_session(self, token_hash: str) -> WebSession | None:
        with self._statement() as conn:
            row = conn.execute(self._sql.get_web_session, (token_hash,)).fetchone()
        return None if row is None else WebSession(*row)

    def touch_web_session(self, token_hash: str, seen_us: int) -> None:
        with self._statement() as conn:
            conn.execute(self._sql.touch_web_session, (seen_us, token_hash))

    def remove_web_session(self, token_hash: str) -> None:
        with self._statement() as conn:
            conn.execute(self._sql.remove_web_session, (token_hash,))

    def purge_web_sessions(self, seen_before_us: int, created_before_us: int) -> int:
        with self._statement() as conn:
            return conn.execute(self._sql.purge_web_sessions, (seen_before_us, created_before_us)).rowcount

    def list_audit(self, *, limit: int, before_id: int | None = None, account: str | None = None) -> list[AuditEntry]:
        clauses: list[str] = []
        params: list[object] = []
        if before_id is not None:
            clauses.append("id < ?")
            params.append(before_id)
        if account is not None:
            clauses.append("account = ?")
            params.append(account)
        where = f" WHERE {' AND '.join(clauses)}" if clauses else ""
        with self._reads() as conn:
            rows = conn.execute(
                f"SELECT id, ts, account, action, target, client_ip, detail FROM audit_log{where} ORDER BY id DESC LIMIT ?",
                [*params, limit],
            ).fetchall()
        return [AuditEntry(r[1], r[2], r[3], r[4], r[5], json.loads(r[6]), id=r[0]) for r in rows]


def refuse_newer_schema(applied: set[str], known: Iterable[str]) -> None:
    """A store that a newer mailwarden migrated is not opened (both backends)."""
    newer = applied - set(known)
    if newer:
        raise StoreError(
            f"the store was migrated by a newer mailwarden ({', '.join(sorted(newer))}); upgrade mailwarden"
        )


def audit_row(entry: AuditEntry) -> tuple[object, ...]:
    """The audit_log values of an entry: ts, account, action, target, client_ip, detail (both stores)."""
    return (
        entry.ts,
        entry.account,
        entry.action,
        entry.target,
        entry.client_ip,
        json.dumps(entry.detail, sort_keys=True),
    )


def _account(row: tuple[Any, ...]) -> WebAccount:
    """An account from its `sql.ACCOUNT_COLUMNS`."""
    return WebAccount(row[0], cast(Role, row[1]), row[2], row[3], tuple(json.loads(row[4])))
