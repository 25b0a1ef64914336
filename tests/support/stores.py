"""Both stores for the tests that need one: SQLite (a file in the test's directory) and PostgreSQL
(the private server of tests/support/postgres.py, its shared database emptied for each test).

The fixtures in tests/conftest.py (`store_url`, `open_node`, `store`) are parametrized by
`BACKENDS`, so every test that takes one runs once per backend and says which in its id
(`test_x[sqlite]`, `test_x[postgresql]`): a promise broken on one backend only is named with it.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from mailwarden.store import open_store_url
from mailwarden.store.parts import Store
from tests.support.postgres import Postgres

BACKENDS = ["sqlite", "postgresql"]

Opener = Callable[..., Store]  # opens the test's store once more: another node's or process's handle


def empty_store_url(backend: str, tmp_path: Path, postgres: Callable[[], Postgres]) -> str:
    """The URL of an empty store on `backend` (PostgreSQL is asked for only when it is the backend)."""
    if backend == "sqlite":
        return f"sqlite:///{tmp_path / 'store.db'}"
    return postgres().empty_store()


class Handles:
    """Every handle opened on one store URL, closed together at the end of the test."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.opened: list[Store] = []

    def open(self, **options: Any) -> Store:
        """Another handle (`open_store_url` options: batch_interval, writer, local_rates, spool)."""
        self.opened.append(open_store_url(self.url, **options))
        return self.opened[-1]

    def close(self) -> None:
        for store in reversed(self.opened):
            store.close()
