"""250 means on disk: the system calls of a delivery come in the order that makes it true.

Per message: fsync(file) -> its delivery journal record synced -> link into new/ -> fsync(new/)
-> commit of its events -> the 250. The os functions the delivery threads call are recorded
(in the order they return), the event store's commit and the session's answer too; alone and
for a group of messages delivered together, with unnamed (O_TMPFILE) and with named files.
"""

from __future__ import annotations

import asyncio
import errno
import os
import re
import threading
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import pytest

from mailwarden.deliver.journal import JOURNAL_DIR
from mailwarden.deliver.maildir import Delivered, Maildirs, Sink, Target
from mailwarden.deliver.writer import DeliveryThreads
from mailwarden.events import Event

MARK = re.compile(rb"message (R\d+)")
Call = tuple[str, str]  # (what, whose): ("fsync", "R1"), ("link", "R1 .../new"), ("commit", "R1 R2"), ...


class RecordedOs:
    """os.open/write/fsync/fdatasync/link wrapped: each call is noted, naming the message or path it concerns."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch, *, unnamed: bool) -> None:
        self.calls: list[Call] = []
        self._path: dict[int, str] = {}  # open descriptor -> path
        self._message: dict[int, str] = {}  # descriptor of a message file -> its ref
        real_open, real_write, real_link = os.open, os.write, os.link
        real_fsync, real_fdatasync = os.fsync, os.fdatasync

        def open_(path: Any, flags: int, *args: Any, **kwargs: Any) -> int:
            if not unnamed and flags & os.O_TMPFILE == os.O_TMPFILE:
                raise OSError(errno.EOPNOTSUPP, "Operation not supported")  # as NFS answers
            fd = real_open(path, flags, *args, **kwargs)
            self._path[fd] = str(path)
            self._message.pop(fd, None)
            return fd

        def write(fd: int, data: Any) -> int:
            found = MARK.search(bytes(data))
            if found is not None:
                self._message[fd] = found.group(1).decode()
            return real_write(fd, data)

        def synced(name: str, real: Callable[[int], None]) -> Callable[[int], None]:
            def sync(fd: int) -> None:
                real(fd)
                self.calls.append((name, self._message.get(fd) or self._path.get(fd, f"fd {fd}")))

            return sync

        def link(source: str, name: str, *, dst_dir_fd: int, follow_symlinks: bool) -> None:
            real_link(source, name, dst_dir_fd=dst_dir_fd, follow_symlinks=follow_symlinks)
            fd = int(source.rpartition("/")[2]) if source.startswith("/proc/self/fd/") else self._fd_of(source)
            self.calls.append(("link", f"{self._message[fd]} {self._path[dst_dir_fd]}"))

        monkeypatch.setattr(os, "open", open_)
        monkeypatch.setattr(os, "write", write)
        monkeypatch.setattr(os, "fsync", synced("fsync", real_fsync))
        monkeypatch.setattr(os, "fdatasync", synced("fdatasync", real_fdatasync))
        monkeypatch.setattr(os, "link", link)

    def _fd_of(self, path: str) -> int:
        return next(fd for fd, opened in reversed(self._path.items()) if opened == path)

    def index(self, call: Call, *, after: int = -1) -> int:
        """Where `call` was made (the first time after `after`)."""
        for position in range(after + 1, len(self.calls)):
            if self.calls[position] == call:
                return position
        raise AssertionError(f"{call} not made after position {after}: {self.calls}")


def deliver_event(copy: Delivered, ref: str) -> Event:
    detail = {"mailbox": copy.mailbox, "folder": copy.folder, "uid": copy.uid}
    return Event(kind="deliver", source="gateway", node="mx1", ref=ref, recipient=copy.mailbox, detail=detail)


def run_deliveries(tmp_path: Path, recorded: RecordedOs, refs: Sequence[str], targets: Sequence[Target]) -> None:
    """Deliver one message per ref through one delivery thread; the first holds the thread until the
    others are queued, so they are delivered together as one group."""
    maildirs = Maildirs(tmp_path / "mail")

    def commit(events: Sequence[Event], done: Callable[[Exception | None], None]) -> None:
        recorded.calls.append(("commit", " ".join(sorted({str(e.ref) for e in events}))))
        done(None)

    threads = DeliveryThreads(maildirs, commit, maildirs.root / JOURNAL_DIR, threads=1)
    busy, release = threading.Event(), threading.Event()

    def content(ref: str) -> tuple[bytes, Callable[[Sink], None]]:
        data = f"Subject: order\r\n\r\nmessage {ref}\r\n".encode()

        def write(sink: Sink) -> None:
            if ref == refs[0]:
                busy.set()
                release.wait(30)
            sink.write(data)

        return data, write

    async def one(ref: str) -> None:
        data, write = content(ref)
        copies = maildirs.plan(targets, len(data))
        await threads.deliver(copies, write, [deliver_event(copy, ref) for copy in copies])
        recorded.calls.append(("250", ref))

    async def all_of_them() -> None:
        first = asyncio.ensure_future(one(refs[0]))
        await asyncio.to_thread(busy.wait, 30)
        rest = [asyncio.ensure_future(one(ref)) for ref in refs[1:]]
        await asyncio.sleep(0)  # they are queued while the thread writes the first
        release.set()
        await asyncio.gather(first, *rest)

    try:
        asyncio.run(all_of_them())
    finally:
        threads.close()


def assert_durable_order(recorded: RecordedOs, ref: str, new_dirs: Sequence[str], journal: str) -> None:
    file_synced = recorded.index(("fsync", ref))
    links = [recorded.index(("link", f"{ref} {directory}"), after=file_synced) for directory in new_dirs]
    journaled = max(
        i for i, call in enumerate(recorded.calls) if call[0] == "fdatasync" and journal in call[1] and i < min(links)
    )
    assert file_synced < journaled, f"{ref}: its journal record was synced before the file itself"
    committed = next(i for i, (what, whose) in enumerate(recorded.calls) if what == "commit" and ref in whose.split())
    for link, directory in zip(links, new_dirs, strict=True):
        dir_synced = recorded.index(("fsync", directory), after=link)
        assert dir_synced < committed, f"{ref}: events committed before {directory} was fsynced after the link"
    assert committed < recorded.index(("250", ref)), f"{ref}: 250 before the commit of its events"


@pytest.mark.parametrize("unnamed", [True, False], ids=["unnamed-file", "named-file-in-tmp"])
def test_each_message_of_a_group_is_synced_journaled_linked_dir_synced_and_committed_before_its_250(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, unnamed: bool
) -> None:
    recorded = RecordedOs(monkeypatch, unnamed=unnamed)
    refs = ["R0", "R1", "R2", "R3", "R4"]
    targets = [Target("bob@example.test"), Target("carol@example.test")]
    run_deliveries(tmp_path, recorded, refs, targets)

    new_dirs = [str(tmp_path / "mail" / "example.test" / name / "new") for name in ("bob", "carol")]
    journal = str(tmp_path / "mail" / JOURNAL_DIR)
    for ref in refs:
        assert_durable_order(recorded, ref, new_dirs, journal)
    group = [call for call in recorded.calls if call[0] == "commit" and "R1" in call[1]]
    assert group == [("commit", "R1 R2 R3 R4")], "the four queued messages were not delivered as one group"
    in_group = recorded.calls[recorded.index(("fsync", "R1")) : recorded.index(group[0])]
    assert [call for call in in_group if call[0] == "fsync" and call[1] in new_dirs] == [
        ("fsync", directory) for directory in new_dirs
    ], "a group fsyncs each new/ directory once, after all its links"
