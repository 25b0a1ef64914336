"""What the two SQL backends share: the reads written once, in SQLite's dialect with `?` placeholders.

The PostgreSQL store runs them through `QmarkConnection` and defines what they use that
PostgreSQL lacks (`instr`, `mw_ip_in` and the case-insensitive collation `nocase`, store/postgres.py),
so a search, a page of the message index or a message's links are one piece of SQL for both.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any, Protocol


class Rows(Protocol):
    """A cursor's results (sqlite3's and psycopg's cursors both are)."""

    def fetchone(self) -> Any: ...

    def fetchall(self) -> list[Any]: ...

    def __iter__(self) -> Iterator[Any]: ...


class SqlConnection(Protocol):
    """Runs `?`-placeholder SQL (sqlite3.Connection is one; `QmarkConnection` makes a psycopg one)."""

    def execute(self, sql: str, parameters: Sequence[Any], /) -> Rows: ...


class QmarkConnection:
    """A psycopg connection that takes `?` placeholders (the shared SQL has no literal `%` or `?`)."""

    def __init__(self, conn: Any) -> None:
        self._conn = conn  # a psycopg.Connection

    def execute(self, sql: str, parameters: Sequence[Any] = (), /) -> Rows:
        cursor: Rows = self._conn.execute(sql.replace("?", "%s").encode(), parameters)
        return cursor
