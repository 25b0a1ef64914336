"""The store's command-line actions (`mailwarden store reindex`, `forget-node`); cli.py parses the arguments."""

from __future__ import annotations

import sys
import time

from mailwarden.config import Config
from mailwarden.ingest.progress import CountingProgress
from mailwarden.store import open_store


def reindex(config: Config, *, progress: bool | None = None) -> int:
    """Rebuild the message index from the events, with a progress line on a terminal."""
    store = open_store(config)
    started = time.monotonic()
    try:
        total = store.count_events()
        show = sys.stderr.isatty() if progress is None else progress
        bar = CountingProgress(sys.stderr, total, "events") if show else None
        rows = store.reindex(bar.update if bar is not None else None)
        if bar is not None:
            bar.update(total)
            bar.close()
    finally:
        store.close()
    print(f"message index rebuilt: {rows:,} rows from {total:,} events in {time.monotonic() - started:.1f} s")
    return 0


def forget_node(config: Config, name: str) -> int:
    """Free the ref id of a node that no longer runs, so another node may take it."""
    store = open_store(config)
    try:
        forgotten = store.forget_node(name)
    finally:
        store.close()
    print(f"node {name} forgotten" if forgotten else f"no node {name} is registered in this store")
    return 0 if forgotten else 1
