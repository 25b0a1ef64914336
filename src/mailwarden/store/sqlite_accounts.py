"""SQLite side of the tracking center's store part (`store/accounts.py`): accounts, sessions, audit log."""

from __future__ import annotations

import json
import sqlite3
import threading
from abc import abstractmethod
from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager
from typing import Any, Final, cast

from mailwarden.store.accounts import AccountStore, AuditEntry, Role, WebAccount, WebSession
from mailwarden.store.base import StoreError
from mailwarden.store.sql import SQLITE as SQL
from mailwarden.store.sql import SqlConnection

# Appended to sqlite.MIGRATIONS as "web_accounts".
SCHEMA: Final = """
    CREATE TABLE web_accounts (
        name TEXT PRIMARY KEY,
        role TEXT NOT NULL CHECK (role IN ('admin', 'support', 'customer')),
        domains TEXT NOT NULL DEFAULT '[]',
        password_hash TEXT NOT NULL,
        created_us INTEGER NOT NULL
    );
    CREATE TABLE web_sessions (
        token_hash TEXT PRIMARY KEY,
        account TEXT NOT NULL REFERENCES web_accounts (name) ON DELETE CASCADE,
        csrf TEXT NOT NULL,
        created_us INTEGER NOT NULL,
        seen_us INTEGER NOT NULL
    );
    CREATE INDEX web_sessions_account ON web_sessions (account);
    CREATE TABLE audit_log (
        id INTEGER PRIMARY KEY,
        ts INTEGER NOT NULL,
        account TEXT NOT NULL,
        action TEXT NOT NULL,
        target TEXT,
        client_ip TEXT,
        detail TEXT NOT NULL DEFAULT '{}'
    );
    CREATE INDEX audit_log_account ON audit_log (account, id);
"""

_FAILURES_KEPT: Final = 1000  # groups back whose failure a late waiter may still ask about


def account_of(row: tuple[Any, ...]) -> WebAccount:
    """An account from its `sql.ACCOUNT_COLUMNS` (both stores)."""
    return WebAccount(row[0], cast(Role, row[1]), row[2], row[3], tuple(json.loads(row[4])))


def account_row(account: WebAccount) -> tuple[object, ...]:
    """The `sql.ACCOUNT_COLUMNS` of an account (both stores)."""
    return (account.name, account.role, account.password_hash, account.created_us, json.dumps(account.domains))


def session_row(session: WebSession) -> tuple[object, ...]:
    """The `sql.SESSION_COLUMNS` of a login session (both stores)."""
    return (session.token_hash, session.account, session.csrf, session.created_us, session.seen_us)


def account_exists(name: str) -> StoreError:
    """Why `add_account` refused (both stores)."""
    return StoreError(f"account {name} exists already; `mailwarden accounts passwd {name}` changes its password")


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


class AuditLog:
    """Audit entries committed in groups, on a connection of their own (group commit without a thread).

    Every page view and search of the tracking center writes an entry, and a commit is an fsync
    (synchronous=FULL): written one by one on the store's reading connection, they held every
    reader behind a disk flush. Here whoever finds no commit running commits every entry that
    queued up meanwhile - one fsync for all of them - while the others wait for it; `add` returns
    once its own entry is committed (or raises what went wrong), so no answer goes out before its
    entry is on disk, and reading goes on meanwhile (WAL).
    """

    def __init__(self, connect: Callable[[], sqlite3.Connection]) -> None:
        self._connect = connect
        self._conn: sqlite3.Connection | None = None
        self._ready = threading.Condition()
        self._pending: list[Sequence[object]] = []
        self._collecting = 0  # the group new entries join
        self._committed = -1  # the last group written (or failed)
        self._failed: dict[int, str] = {}
        self._busy = False

    def add(self, row: Sequence[object]) -> None:
        with self._ready:
            self._pending.append(row)
            group = self._collecting
            while self._committed < group:
                if self._busy:
                    self._ready.wait()
                    continue
                self._busy = True
                rows, self._pending = self._pending, []
                number = self._collecting
                self._collecting += 1
                self._ready.release()
                try:
                    self._write(rows)
                except (sqlite3.Error, StoreError) as exc:
                    self._failed[number] = str(exc)
                finally:
                    self._ready.acquire()
                    self._busy = False
                    self._committed = number
                    self._failed.pop(number - _FAILURES_KEPT, None)
                    self._ready.notify_all()
            if group in self._failed:
                raise StoreError(f"the audit log could not be written: {self._failed[group]}")

    def _write(self, rows: list[Sequence[object]]) -> None:
        if self._conn is None:
            self._conn = self._connect()
        conn = self._conn
        conn.execute("BEGIN IMMEDIATE")
        try:
            conn.executemany(SQL.add_audit, rows)
            conn.execute("COMMIT")
        except BaseException:
            conn.execute("ROLLBACK")
            raise

    def close(self) -> None:
        with self._ready:
            if self._conn is not None:
                self._conn.close()
                self._conn = None


class SqliteAccounts(AccountStore):
    """Mixed into SqliteStore; statements run on its reading connection (small, point writes),
    audit entries through `AuditLog`."""

    @abstractmethod
    def _reading(self) -> AbstractContextManager[sqlite3.Connection]: ...

    @property
    @abstractmethod
    def _audit_log(self) -> AuditLog: ...

    def add_account(self, account: WebAccount) -> None:
        with self._reading() as conn:
            if not conn.execute(SQL.add_account, account_row(account)).rowcount:
                raise account_exists(account.name)

    def get_account(self, name: str) -> WebAccount | None:
        with self._reading() as conn:
            row = conn.execute(SQL.get_account, (name,)).fetchone()
        return None if row is None else account_of(row)

    def list_accounts(self) -> list[WebAccount]:
        with self._reading() as conn:
            rows = conn.execute(SQL.list_accounts).fetchall()
        return [account_of(row) for row in rows]

    def remove_account(self, name: str) -> bool:
        with self._reading() as conn:
            return conn.execute(SQL.remove_account, (name,)).rowcount > 0

    def set_account_password(self, name: str, password_hash: str) -> bool:
        with self._reading() as conn:
            conn.execute("BEGIN IMMEDIATE")
            try:
                changed = conn.execute(SQL.set_account_password, (password_hash, name)).rowcount
                conn.execute(SQL.end_account_sessions, (name,))
                conn.execute("COMMIT")
            except BaseException:
                conn.execute("ROLLBACK")
                raise
        return changed > 0

    def add_web_session(self, session: WebSession) -> None:
        with self._reading() as conn:
            conn.execute(SQL.add_web_session, session_row(session))

    def get_web_session(self, token_hash: str) -> WebSession | None:
        with self._reading() as conn:
            row = conn.execute(SQL.get_web_session, (token_hash,)).fetchone()
        return None if row is None else WebSession(*row)

    def touch_web_session(self, token_hash: str, seen_us: int) -> None:
        with self._reading() as conn:
            conn.execute(SQL.touch_web_session, (seen_us, token_hash))

    def remove_web_session(self, token_hash: str) -> None:
        with self._reading() as conn:
            conn.execute(SQL.remove_web_session, (token_hash,))

    def purge_web_sessions(self, seen_before_us: int, created_before_us: int) -> int:
        with self._reading() as conn:
            return conn.execute(SQL.purge_web_sessions, (seen_before_us, created_before_us)).rowcount

    def add_audit(self, entry: AuditEntry) -> None:
        self._audit_log.add(audit_row(entry))

    def list_audit(self, *, limit: int, before_id: int | None = None, account: str | None = None) -> list[AuditEntry]:
        with self._reading() as conn:
            return audit_entries(conn, limit, before_id, account)


def audit_entries(conn: SqlConnection, limit: int, before_id: int | None, account: str | None) -> list[AuditEntry]:
    """`AccountStore.list_audit` (both stores; PostgreSQL's through `QmarkConnection`)."""
    clauses: list[str] = []
    params: list[object] = []
    if before_id is not None:
        clauses.append("id < ?")
        params.append(before_id)
    if account is not None:
        clauses.append("account = ?")
        params.append(account)
    where = f" WHERE {' AND '.join(clauses)}" if clauses else ""
    rows = conn.execute(
        f"SELECT id, ts, account, action, target, client_ip, detail FROM audit_log{where} ORDER BY id DESC LIMIT ?",
        [*params, limit],
    ).fetchall()
    return [AuditEntry(r[1], r[2], r[3], r[4], r[5], json.loads(r[6]), id=r[0]) for r in rows]
