"""The store: events, the message index, mailboxes and the checks' state, in narrow parts.

SQLite is the embedded default (`store/sqlite.py`), PostgreSQL the store several nodes share
(`store/postgres.py`); both implement the parts of `store/parts.py` (together: `Store`). Nothing outside `store/` writes SQL.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from mailwarden.store.base import EventQuery, EventWriter, Mailbox, Position, StoreError
from mailwarden.store.parts import RateLimitState, Store

if TYPE_CHECKING:
    from mailwarden.config import Config
    from mailwarden.store.spool import EventSpool


def open_store(config: Config) -> Store:
    """Open the store of `[store]` (each call its own connections: the web reads beside the gateway)."""
    from mailwarden.store.spool import EventSpool

    spool = EventSpool(config.path(config.store.spool_dir), config.store.spool_max_mb * 1024 * 1024)
    return open_store_url(
        config.store.url, base_dir=config.base_dir, batch_interval=config.store.batch_interval, spool=spool
    )


def open_store_url(
    url: str,
    *,
    base_dir: Path | None = None,
    batch_interval: float = 0.05,
    spool: EventSpool | None = None,
    writer: EventWriter | None = None,
    local_rates: RateLimitState | None = None,
    existing: bool = False,
) -> Store:
    """Open the store named by a URL (`[store] url`); a relative SQLite path is below `base_dir`;
    `spool` keeps a PostgreSQL store's events while the database is away (SQLite is local: none).
    An SMTP worker's store: `writer` takes its event writes (the link to the supervisor's writer,
    store/remote.py), and `local_rates` are the rate-limit counters of a store that counts on this
    machine (SQLite; the table all workers share), where PostgreSQL counts in the database.
    `existing`: a store that must be there already (a SQLite file is otherwise made, empty)."""
    if url.startswith("sqlite:///"):
        from mailwarden.store.sqlite import SqliteStore

        path = Path(url.removeprefix("sqlite:///"))
        if not path.is_absolute() and base_dir is not None:
            path = base_dir / path
        if existing and not path.is_file():
            raise StoreError(
                f"no SQLite store at {path}: check the path in {url!r}"
                " (sqlite:///relative/to/the/base/directory, sqlite:////absolute/path)"
            )
        return SqliteStore(path, batch_interval=batch_interval, writer=writer, rates=local_rates)
    if url.startswith("postgresql://"):
        from mailwarden.store.postgres import PostgresStore

        return PostgresStore(url, batch_interval=batch_interval, spool=spool, writer=writer)
    raise StoreError(
        f"unsupported store url {url!r}: use sqlite:///relative/path, sqlite:////absolute/path or postgresql://user@host/database"
    )


__all__ = ["EventQuery", "EventWriter", "Mailbox", "Position", "Store", "StoreError", "open_store", "open_store_url"]
