"""Retention: events older than `[store] retention_days` are deleted (`mailwarden purge`, and
periodically by `mailwarden serve`). A trace whose window reaches further back says so
(`search.retention_note`).
"""

from __future__ import annotations

import asyncio
import logging
from typing import Final

from mailwarden.events import now_us
from mailwarden.store import Store

log = logging.getLogger(__name__)
DAY_US: Final = 86400 * 1_000_000


def cutoff(retention_days: int, now: int | None = None) -> int:
    return (now if now is not None else now_us()) - retention_days * DAY_US


def purge(store: Store, retention_days: int, now: int | None = None) -> int:
    """Delete the events older than the retention; return how many went."""
    removed = store.purge_events(cutoff(retention_days, now))
    if removed:
        log.info("purged %d events older than %d days", removed, retention_days)
    return removed


async def purge_periodically(store: Store, retention_days: int, interval: float) -> None:
    """For `serve`: purge now and then every `interval` seconds, off the event loop."""
    while True:
        try:
            await asyncio.to_thread(purge, store, retention_days)
        except Exception:  # a failed purge must never stop the server; it is retried next time
            log.exception("purging old events failed; retrying in %.0f s", interval)
        await asyncio.sleep(interval)
