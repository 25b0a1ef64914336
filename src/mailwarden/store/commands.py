"""The store's command-line actions (`mailwarden store reindex`, `forget-node`, `migrate`); cli.py parses the arguments."""

from __future__ import annotations

import sys
import time
from collections.abc import Callable

from mailwarden.config import Config
from mailwarden.progress import Progress
from mailwarden.store import Position, Store, open_store, open_store_url


def reindex(config: Config, *, progress: bool | None = None) -> int:
    """Rebuild the message index from the events, with a progress line on a terminal."""
    store = open_store(config)
    started = time.monotonic()
    try:
        total = store.count_events()
        show = sys.stderr.isatty() if progress is None else progress
        bar = Progress(sys.stderr, total, "events") if show else None
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


MIGRATE_BATCH = 5000


def migrate(
    config: Config, source_url: str, target_url: str, *, progress: bool | None = None, batch: int = MIGRATE_BATCH
) -> int:
    """Copy a store's history (events, and with them the message index; mailboxes, web accounts)
    into another, e.g. a node's SQLite store into the shared PostgreSQL. Resumable: each batch
    is committed with the position after it, and a new run goes on from there."""
    source = open_store_url(source_url, base_dir=config.base_dir, existing=True)
    try:
        target = open_store_url(target_url, base_dir=config.base_dir)
    except BaseException:
        source.close()
        raise
    started = time.monotonic()
    show = sys.stderr.isatty() if progress is None else progress
    position = f"store-migrate:{source_url}"
    bar = Progress(sys.stderr, source.count_events_after(copied_until(target, position)), "events") if show else None
    try:
        copied = copy_history(source, target, position, batch, bar.update if bar else None)
        copy_accounts(source, target)
    finally:
        if bar is not None:
            bar.close()
        target.close()
        source.close()
    print(f"migrated {copied:,} events in {time.monotonic() - started:.1f} s")
    return 0


def copied_until(target: Store, position: str) -> int:
    """The id of the last source event a migration into `target` committed (0: none yet)."""
    return int(target.load_position(position) or 0)


def copy_history(
    source: Store, target: Store, position: str, batch: int, progress: Callable[[int], None] | None = None
) -> int:
    """The events after the target's position `position`, in the order they were written, each batch
    committed with its position (one transaction); how many were copied in this run."""
    after = copied_until(target, position)
    copied = 0
    while events := source.events_after(after, batch):
        after = events[-1].id or after
        for event in events:
            event.id = None
        target.append_bulk(events, [Position(position, str(after))])
        copied += len(events)
        if progress is not None:
            progress(copied)
    target.flush()
    return copied


def copy_accounts(source: Store, target: Store) -> None:
    """Mailboxes and web accounts the target does not have yet (a second run adds nothing twice)."""
    for mailbox in source.list_mailboxes():
        if target.get_mailbox(mailbox.address) is None:
            target.add_mailbox(mailbox.address, mailbox.password_hash)
            target.update_mailbox_settings(mailbox.address, mailbox.settings)
    for account in source.list_accounts():
        if target.get_account(account.name) is None:
            target.add_account(account)
