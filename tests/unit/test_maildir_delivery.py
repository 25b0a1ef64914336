"""Durable Maildir delivery: one copy per recipient (hard links), all or nothing, recovery of tmp/."""

from __future__ import annotations

import asyncio
import errno
import os
import shutil
from collections.abc import Callable, Sequence
from pathlib import Path

import pytest

from mailwarden.deliver.journal import JOURNAL_DIR
from mailwarden.deliver.maildir import MaildirError, Maildirs, Message, Sink, Target
from mailwarden.deliver.writer import DeliveryThreads
from mailwarden.events import Event
from mailwarden.store import StoreError

MESSAGE = b"Subject: hi\r\n\r\nhello\r\n"


def write(data: bytes = MESSAGE) -> Callable[[Sink], None]:
    def writer(handle: Sink) -> None:
        handle.write(data)

    return writer


def files(directory: Path) -> list[Path]:
    return sorted(p for p in directory.rglob("*") if p.is_file())


def in_state(maildirs: Maildirs, mailbox: str, sub: str, folder: str = "INBOX") -> list[Path]:
    return sorted((maildirs.folder_dir(mailbox, folder) / sub).iterdir())


def test_several_recipients_share_one_file_through_hard_links(tmp_path: Path) -> None:
    maildirs = Maildirs(tmp_path)
    targets = [Target("bob@example.test"), Target("carol@example.test"), Target("bob@example.test", "Junk")]
    delivered = maildirs.deliver(targets, write())
    assert [(d.mailbox, d.folder) for d in delivered] == [(t.mailbox, t.folder) for t in targets]
    inodes = {d.path.stat().st_ino for d in delivered}
    assert len(inodes) == 1
    assert delivered[0].path.stat().st_nlink == 3  # the tmp/ name is gone, the three copies remain
    assert all(d.path.read_bytes() == MESSAGE for d in delivered)
    assert all(d.path.parent.name == "new" for d in delivered)
    assert len({d.uid for d in delivered}) == 1 and delivered[0].uid.endswith(f",S={len(MESSAGE)}")
    assert (maildirs.folder_dir("bob@example.test", "Junk") / "maildirfolder").exists()
    assert in_state(maildirs, "bob@example.test", "tmp") == []


def test_a_write_that_fails_midway_leaves_nothing_behind(tmp_path: Path) -> None:
    maildirs = Maildirs(tmp_path)

    def broken(handle: Sink) -> None:
        handle.write(b"half a message")
        raise OSError(28, "No space left on device")

    with pytest.raises(MaildirError, match="No space left"):
        maildirs.deliver([Target("bob@example.test"), Target("carol@example.test")], broken)
    for mailbox in ("bob@example.test", "carol@example.test"):
        for sub in ("tmp", "new", "cur"):
            assert in_state(maildirs, mailbox, sub) == []


def test_a_recipient_whose_folder_cannot_be_created_takes_the_others_back(tmp_path: Path) -> None:
    maildirs = Maildirs(tmp_path)
    maildirs.ensure("bob@example.test")
    (tmp_path / "other.test").write_text("a plain file where the domain directory must be")
    with pytest.raises(MaildirError):
        maildirs.deliver([Target("bob@example.test"), Target("carol@other.test")], write())
    assert files(tmp_path / "example.test") == []


def test_a_failed_message_in_a_group_does_not_affect_the_others(tmp_path: Path) -> None:
    maildirs = Maildirs(tmp_path)
    (tmp_path / "other.test").write_text("not a directory")
    outcomes = maildirs.deliver_many(
        [
            Message([Target("bob@example.test")], write(b"first\r\n")),
            Message([Target("carol@other.test")], write(b"second\r\n")),
            Message([Target("bob@example.test")], write(b"third\r\n")),
        ]
    )
    assert isinstance(outcomes[1], MaildirError)
    first, third = outcomes[0], outcomes[2]
    assert isinstance(first, list) and isinstance(third, list)
    assert first[0].path.read_bytes() == b"first\r\n"
    assert third[0].path.read_bytes() == b"third\r\n"
    assert in_state(maildirs, "bob@example.test", "tmp") == []


def test_a_folder_removed_behind_our_back_is_created_again(tmp_path: Path) -> None:
    maildirs = Maildirs(tmp_path)
    maildirs.deliver([Target("bob@example.test")], write())
    shutil.rmtree(tmp_path / "example.test" / "bob")
    (copy,) = maildirs.deliver([Target("bob@example.test")], write())
    assert copy.path.read_bytes() == MESSAGE


def test_unsafe_mailbox_and_folder_names_are_refused(tmp_path: Path) -> None:
    maildirs = Maildirs(tmp_path)
    for target in (Target("../etc@example.test"), Target("bob@../x"), Target("bob@example.test", "../Junk")):
        with pytest.raises(MaildirError, match="unsafe"):
            maildirs.deliver([target], write())
    assert files(tmp_path) == []


def test_recovery_empties_every_tmp_directory(tmp_path: Path) -> None:
    maildirs = Maildirs(tmp_path)
    maildirs.deliver([Target("bob@example.test"), Target("bob@example.test", "Junk")], write())
    leftovers = [
        maildirs.folder_dir("bob@example.test") / "tmp" / "1.P1Q1.host",
        maildirs.folder_dir("bob@example.test", "Junk") / "tmp" / "2.P1Q2.host",
        maildirs.ensure("carol@example.org") / "tmp" / "3.P1Q3.host",
    ]
    for leftover in leftovers:
        leftover.write_bytes(b"half")
    assert maildirs.recover() == 3
    assert not any(p.exists() for p in leftovers)
    assert len(in_state(maildirs, "bob@example.test", "new")) == 1  # delivered mail is untouched


def test_names_sort_in_delivery_order(tmp_path: Path) -> None:
    maildirs = Maildirs(tmp_path)
    names = [maildirs.deliver([Target("bob@example.test")], write())[0].uid for _ in range(50)]
    assert names == sorted(names)


class Evidence:
    """The event store's `commit_soon` as the delivery threads see it: records what it was given, or fails."""

    def __init__(self, fail: bool = False) -> None:
        self.fail = fail
        self.committed: list[str] = []

    def __call__(self, events: Sequence[Event], done: Callable[[Exception | None], None]) -> None:
        if self.fail:
            done(StoreError("disk full"))
            return
        self.committed.extend(str(event.ref) for event in events)
        done(None)


def accept(ref: str) -> Event:
    return Event(kind="accept", source="gateway", node="mx1", ref=ref)


def test_the_delivery_threads_answer_every_waiter_and_commit_only_the_evidence_of_what_is_on_disk(
    tmp_path: Path,
) -> None:
    maildirs = Maildirs(tmp_path)
    (tmp_path / "other.test").write_text("not a directory")
    evidence = Evidence()
    threads = DeliveryThreads(maildirs, evidence, tmp_path / JOURNAL_DIR)

    async def many() -> list[object]:
        jobs = []
        for n in range(30):
            data = b"%d\r\n" % n
            copies = maildirs.plan([Target("carol@other.test" if n == 7 else "bob@example.test")], len(data))
            jobs.append(threads.deliver(copies, write(data), [accept(f"R{n}")]))
        return await asyncio.gather(*jobs, return_exceptions=True)

    try:
        outcomes = asyncio.run(many())
    finally:
        threads.close()
    assert isinstance(outcomes[7], MaildirError)
    assert [o for n, o in enumerate(outcomes) if n != 7] == [None] * 29
    assert len(in_state(maildirs, "bob@example.test", "new")) == 29
    assert sorted(evidence.committed) == sorted(f"R{n}" for n in range(30) if n != 7)


def test_evidence_that_fails_is_reported_after_the_copies_are_taken_back(tmp_path: Path) -> None:
    maildirs = Maildirs(tmp_path)
    threads = DeliveryThreads(maildirs, Evidence(fail=True), tmp_path / JOURNAL_DIR)
    copies = maildirs.plan([Target("bob@example.test"), Target("carol@example.test")], len(MESSAGE))
    try:
        with pytest.raises(StoreError, match="disk full"):
            asyncio.run(threads.deliver(copies, write(), [accept("R1")]))
    finally:
        threads.close()
    for mailbox in ("bob@example.test", "carol@example.test"):
        assert in_state(maildirs, mailbox, "new") == []


def test_a_planned_name_names_the_copies_and_must_match_the_written_size(tmp_path: Path) -> None:
    maildirs = Maildirs(tmp_path)
    copies = maildirs.plan([Target("bob@example.test"), Target("bob@example.test", "Junk")], len(MESSAGE))
    (outcome,) = maildirs.deliver_many([Message([Target(c.mailbox, c.folder) for c in copies], write(), copies[0].uid)])
    assert outcome == copies
    wrong = maildirs.plan([Target("bob@example.test")], len(MESSAGE) + 1)
    (failed,) = maildirs.deliver_many([Message([Target("bob@example.test")], write(), wrong[0].uid)])
    assert isinstance(failed, MaildirError) and "planned name" in str(failed)
    assert not wrong[0].path.exists() and in_state(maildirs, "bob@example.test", "tmp") == []


def test_where_unnamed_files_are_refused_named_files_in_tmp_are_used_and_none_is_left(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    real_open = os.open

    def no_tmpfile(path: object, flags: int, *args: object, **kwargs: object) -> int:
        if flags & os.O_TMPFILE == os.O_TMPFILE:
            raise OSError(errno.EOPNOTSUPP, "Operation not supported")  # as NFS answers
        return real_open(path, flags, *args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(os, "open", no_tmpfile)
    maildirs = Maildirs(tmp_path)
    delivered = maildirs.deliver([Target("bob@example.test"), Target("carol@example.test")], write())
    assert delivered[0].path.stat().st_nlink == 2 and delivered[1].path.read_bytes() == MESSAGE
    (failed,) = maildirs.deliver_many([Message([Target("bob@example.test")], write(), "1.M1P1Q1.host,S=1")])
    assert isinstance(failed, MaildirError)  # the wrong size in the planned name: taken back
    for mailbox in ("bob@example.test", "carol@example.test"):
        assert in_state(maildirs, mailbox, "tmp") == []
    assert len(in_state(maildirs, "bob@example.test", "new")) == 1
