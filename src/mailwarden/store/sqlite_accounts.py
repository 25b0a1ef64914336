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

_ACCOUNT_COLUMNS: Final = "name, role, password_hash, created_us, domains"
_AUDIT_INSERT: Final = (
    "INSERT INTO audit_log (ts, account, action, target, client_ip, detail) VALUES (?, ?, ?, ?, ?, ?)"
)
_FAILURES_KEPT: Final = 1000  # groups back whose failure a late waiter may still ask about
_SESSION_COLUMNS: Final = "token_hash, account, csrf, created_us, seen_us"


def _account(row: tuple[Any, ...]) -> WebAccount:
    return WebAccount(row[0], cast(Role, row[1]), row[2], row[3], tuple(json.loads(row[4])))


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
            conn.executemany(_AUDIT_INSERT, rows)
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
            try:
                conn.execute(
                    f"INSERT INTO web_accounts ({_ACCOUNT_COLUMNS}) VALUES (?, ?, ?, ?, ?)",
                    (
                        account.name,
                        account.role,
                        account.password_hash,
                        account.created_us,
                        json.dumps(account.domains),
                    ),
                )
            except sqlite3.IntegrityError:
                raise StoreError(
                    f"account {account.name} exists already; `mailwarden accounts passwd {account.name}` changes its password"
                ) from None

    def get_account(self, name: str) -> WebAccount | None:
        with self._reading() as conn:
            row = conn.execute(f"SELECT {_ACCOUNT_COLUMNS} FROM web_accounts WHERE name = ?", (name,)).fetchone()
        return None if row is None else _account(row)

    def list_accounts(self) -> list[WebAccount]:
        with self._reading() as conn:
            rows = conn.execute(f"SELECT {_ACCOUNT_COLUMNS} FROM web_accounts ORDER BY name").fetchall()
        return [_account(row) for row in rows]

    def remove_account(self, name: str) -> bool:
        with self._reading() as conn:
            return conn.execute("DELETE FROM web_accounts WHERE name = ?", (name,)).rowcount > 0

    def set_account_password(self, name: str, password_hash: str) -> bool:
        with self._reading() as conn:
            conn.execute("BEGIN IMMEDIATE")
            try:
                changed = conn.execute(
                    "UPDATE web_accounts SET password_hash = ? WHERE name = ?", (password_hash, name)
                ).rowcount
                conn.execute("DELETE FROM web_sessions WHERE account = ?", (name,))
                conn.execute("COMMIT")
            except BaseException:
                conn.execute("ROLLBACK")
                raise
        return changed > 0

    def add_web_session(self, session: WebSession) -> None:
        with self._reading() as conn:
            conn.execute(
                f"INSERT INTO web_sessions ({_SESSION_COLUMNS}) VALUES (?, ?, ?, ?, ?)",
                (session.token_hash, session.account, session.csrf, session.created_us, session.seen_us),
            )

    def get_web_session(self, token_hash: str) -> WebSession | None:
        with self._reading() as conn:
            row = conn.execute(
                f"SELECT {_SESSION_COLUMNS} FROM web_sessions WHERE token_hash = ?", (token_hash,)
            ).fetchone()
        return None if row is None else WebSession(*row)

    def touch_web_session(self, token_hash: str, seen_us: int) -> None:
        with self._reading() as conn:
            conn.execute("UPDATE web_sessions SET seen_us = ? WHERE token_hash = ?", (seen_us, token_hash))

    def remove_web_session(self, token_hash: str) -> None:
        with self._reading() as conn:
            conn.execute("DELETE FROM web_sessions WHERE token_hash = ?", (token_hash,))

    def purge_web_sessions(self, seen_before_us: int, created_before_us: int) -> int:
        with self._reading() as conn:
            return conn.execute(
                "DELETE FROM web_sessions WHERE seen_us < ? OR created_us < ?", (seen_before_us, created_before_us)
            ).rowcount

    def add_audit(self, entry: AuditEntry) -> None:
        self._audit_log.add(
            (
                entry.ts,
                entry.account,
                entry.action,
                entry.target,
                entry.client_ip,
                json.dumps(entry.detail, sort_keys=True),
            )
        )

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
        with self._reading() as conn:
            rows = conn.execute(
                f"SELECT id, ts, account, action, target, client_ip, detail FROM audit_log{where} ORDER BY id DESC LIMIT ?",
                [*params, limit],
            ).fetchall()
        return [AuditEntry(r[1], r[2], r[3], r[4], r[5], json.loads(r[6]), id=r[0]) for r in rows]
