"""The tracking center's audit log is written in groups: one commit (one fsync) for every entry that
queued up while the previous commit ran, and each `add` returns only once its own entry is stored.
A slow disk is stood in for by a connection whose COMMIT waits until the test lets it go.
"""

from __future__ import annotations

import sqlite3
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from mailwarden.store import StoreError
from mailwarden.store.accounts import AuditEntry
from mailwarden.store.sqlite import SqliteStore
from mailwarden.store.sqlite_accounts import AuditLog

WRITERS = 20


class HeldCommits(sqlite3.Connection):
    """Counts its COMMITs; the first one waits for `release`, as a disk busy with a long flush would."""

    commits = 0
    release = threading.Event()

    def execute(self, sql: str, *args: object) -> sqlite3.Cursor:  # type: ignore[override]
        if sql == "COMMIT":
            HeldCommits.commits += 1
            if HeldCommits.commits == 1:
                assert HeldCommits.release.wait(30)
        return super().execute(sql, *args)


@pytest.fixture
def store(tmp_path: Path) -> Iterator[SqliteStore]:
    made = SqliteStore(tmp_path / "store.db")
    yield made
    made.close()


def entry(n: int) -> AuditEntry:
    return AuditEntry(n, "support", "search", f"recipient=user{n}@example.test", "192.0.2.1", {"found": str(n)})


def stored(path: Path) -> int:
    reader = sqlite3.connect(path)
    try:
        return int(reader.execute("SELECT count(*) FROM audit_log").fetchone()[0])
    finally:
        reader.close()


def test_entries_that_queue_up_during_a_commit_share_the_next_one(store: SqliteStore) -> None:
    log = AuditLog(
        lambda: sqlite3.connect(store.path, isolation_level=None, check_same_thread=False, factory=HeldCommits)
    )
    store._audit = log  # the store's own log, on connections that count their commits
    HeldCommits.commits = 0
    HeldCommits.release.clear()
    returned: list[int] = []

    def write(n: int) -> None:
        store.add_audit(entry(n))
        returned.append(stored(store.path))  # what a reader sees once add() has returned

    first = threading.Thread(target=write, args=(0,))
    first.start()
    while HeldCommits.commits == 0:  # the first entry's commit is running (and held)
        time.sleep(0.001)
    others = [threading.Thread(target=write, args=(n,)) for n in range(1, WRITERS)]
    for thread in others:
        thread.start()
    deadline = time.monotonic() + 30
    while len(log._pending) < WRITERS - 1:  # all of them wait behind the held commit
        assert time.monotonic() < deadline
        time.sleep(0.001)
    assert returned == []  # nobody's entry is committed yet, so nobody has returned
    HeldCommits.release.set()
    for thread in [first, *others]:
        thread.join(30)
    assert HeldCommits.commits == 2  # the first entry's, then one for the nineteen behind it
    assert stored(store.path) == WRITERS and returned[0] >= 1 and min(returned[1:]) == WRITERS
    assert {e.target for e in store.list_audit(limit=100)} == {entry(n).target for n in range(WRITERS)}


def test_a_failed_commit_is_raised_to_every_writer_of_its_group(store: SqliteStore, tmp_path: Path) -> None:
    store._audit = AuditLog(lambda: sqlite3.connect(tmp_path / "other.db", isolation_level=None))  # no such table
    with pytest.raises(StoreError, match="the audit log could not be written: no such table: audit_log"):
        store.add_audit(entry(1))
