"""SQLite side of the tracking center's store part (`store/accounts.py`): its tables and the audit
log's group commits (the statements both stores share are `sql_parts.SqlParts`)."""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Callable, Sequence
from typing import Final

from mailwarden.store.base import StoreError
from mailwarden.store.sql import SQLITE as SQL

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
