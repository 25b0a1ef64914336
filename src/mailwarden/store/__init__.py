"""The store: events and mailboxes behind one interface.

SQLite is the embedded default (`store/sqlite.py`); a PostgreSQL store for several nodes
implements the same `Store` interface later. Nothing outside `store/` writes SQL.
"""

from __future__ import annotations

from mailwarden.store.base import EventQuery, EventWriter, Mailbox, Position, Store, StoreError


def open_store(
    url: str, *, base_dir: str | None = None, batch_interval: float = 0.05, writer: EventWriter | None = None
) -> Store:
    """Open the store named by a URL from `[store] url`; `writer` takes its event writes (an SMTP worker's link)."""
    if url.startswith("sqlite:///"):
        from pathlib import Path

        from mailwarden.store.sqlite import SqliteStore

        raw = url.removeprefix("sqlite:///")
        path = Path(raw)
        if not path.is_absolute() and base_dir is not None:
            path = Path(base_dir) / path
        return SqliteStore(path, batch_interval=batch_interval, writer=writer)
    raise StoreError(f"unsupported store url {url!r}: use sqlite:///relative/path or sqlite:////absolute/path")


__all__ = ["EventQuery", "EventWriter", "Mailbox", "Position", "Store", "StoreError", "open_store"]
