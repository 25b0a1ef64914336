"""Both stores for the tests that need one: SQLite (a file in the test's directory) and PostgreSQL
(the private server of tests/support/postgres.py, its shared database emptied for each test).

The fixtures in tests/conftest.py (`store_handles`, `store_url`, `open_node`, `store`) are parametrized by
`BACKENDS`, so every test that takes one runs once per backend and says which in its id
(`test_x[sqlite]`, `test_x[postgresql]`): a promise broken on one backend only is named with it.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable
from contextlib import closing
from pathlib import Path
from typing import Any

import psycopg

from mailwarden.store import open_store_url
from mailwarden.store.base import IndexQuery
from mailwarden.store.parts import Store
from tests.support.postgres import Postgres

BACKENDS = ["sqlite", "postgresql"]

Opener = Callable[..., Store]  # opens the test's store once more: another node's or process's handle


class Handles:
    """Every handle opened on the test's store, closed together at the end of the test."""

    def __init__(self, backend: str, tmp_path: Path, postgres: Callable[[], Postgres]) -> None:
        """`postgres` is asked for only when it is the backend (a run without PostgreSQL skips only those tests)."""
        self.backend = backend
        self._path = tmp_path / "store.db"
        self._postgres = postgres
        self.opened: list[Store] = []
        self.url = self._emptied()

    def open(self, **options: Any) -> Store:
        """Another handle (`open_store_url` options: batch_interval, writer, local_rates, spool)."""
        self.opened.append(open_store_url(self.url, **options))
        return self.opened[-1]

    def start_over(self) -> None:
        """Close every handle and empty the store: a test that compares two histories in one store."""
        self.close()
        self._emptied()

    def close(self) -> None:
        for store in reversed(self.opened):
            store.close()
        self.opened.clear()

    def _emptied(self) -> str:
        if self.backend == "sqlite":
            for path in self._path.parent.glob(self._path.name + "*"):  # with its -wal and -shm
                path.unlink()
            return f"sqlite:///{self._path}"
        return self._postgres().empty_store()


def index_rows(store: Store) -> list[tuple[object, ...]]:
    """Every row of the message index, in one order for both stores (through the search every caller uses)."""
    rows: list[tuple[object, ...]] = []
    after = None
    while True:
        page = store.index_page(IndexQuery(), limit=500, after=after)
        rows.extend(tuple(row) for row in page.rows)
        if page.after is None:
            return sorted(rows, key=lambda row: (str(row[0]), str(row[1]).lower()))
        after = page.after


def run_sql(url: str, sql: str) -> None:
    """One statement on the store behind `url`, past the store's code (what an older version or an
    operator left behind)."""
    if url.startswith("sqlite:///"):
        with closing(sqlite3.connect(url.removeprefix("sqlite:///"))) as conn, conn:
            conn.execute(sql)
    else:
        with psycopg.connect(url, autocommit=True) as conn:
            conn.execute(sql.encode())


def own_store_url(backend: str, postgres: Callable[[], Postgres]) -> str:
    """A store of its own for a mailwarden instance that serves several tests (a module's gateway):
    SQLite in the instance's var/, on PostgreSQL a new database (the shared one is emptied per test)."""
    if backend == "sqlite":
        return "sqlite:///var/mailwarden.db"
    return postgres().new_database()
