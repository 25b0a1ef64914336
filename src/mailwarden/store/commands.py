"""The store's command-line actions (`mailwarden store reindex`); cli.py parses the arguments."""

from __future__ import annotations

import sys
import time

from mailwarden.config import Config
from mailwarden.ingest.progress import CountingProgress


def reindex(config: Config, *, progress: bool | None = None) -> int:
    """Rebuild the message index from the events, with a progress line on a terminal."""
    from mailwarden.serve import open_configured_store

    store = open_configured_store(config)
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
