"""Durable Maildir delivery, shared by the gateway (writing) and the POP3 server (reading).

Layout: ROOT/DOMAIN/LOCALPART/ is a mailbox's Maildir (cur, new, tmp); other folders are
Maildir++ subfolders (ROOT/DOMAIN/LOCALPART/.Junk/). A delivery writes the message once into
tmp/, fsyncs it, hard-links it into new/ of every recipient, fsyncs those directories and only
then returns - so "250" is only ever said for mail that is on disk. On any error every link
made so far is removed again: nothing is left half-delivered. `deliver_many` does this for a
group of messages at once, so that they share their fsyncs (the gateway's delivery thread,
`deliver/writer.py`).

Readers (the POP3 server) see a message by its unique name (`uid`, the file name without the
":2,FLAGS" info part), which never changes: it is what the gateway's `deliver` event records and
what POP3's UIDL shows. The first reader moves new/ to cur/ (as the Maildir convention asks);
a message is then found by its uid wherever it is, even after another program renamed it to
change its flags. `lock` gives one reader at a time exclusive use of a mailbox (an flock, so it
also holds against other processes).
"""

from __future__ import annotations

import contextlib
import fcntl
import itertools
import logging
import os
import re
import socket
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO, Final

log = logging.getLogger(__name__)

INBOX = "INBOX"
SUBDIRS = ("cur", "new", "tmp")
INFO_SEPARATOR: Final = ":"  # name:2,FLAGS (the Maildir "info" part, absent in new/)
LOCK_FILE: Final = "mailwarden.lock"
_ARRIVAL: Final = re.compile(r"^(\d+)\.(?:M(\d+))?")
_WIRE_SIZE: Final = re.compile(r",W=(\d+)")


class MaildirError(OSError):
    pass


@dataclass(frozen=True)
class Target:
    mailbox: str  # local@domain
    folder: str = INBOX


@dataclass(frozen=True)
class Delivered:
    mailbox: str
    folder: str
    path: Path
    uid: str  # the Maildir unique name (file name without the ":2,flags" info part)


@dataclass(frozen=True)
class Stored:
    """A message as a reader sees it: its stable uid, where it is now, and its size."""

    uid: str
    path: Path
    size: int  # octets with CRLF line ends: the Maildir++ ",W=" size when the name has one, else the file size


def uid_of(filename: str) -> str:
    """The unique name of a Maildir file (its name without the info part)."""
    return filename.partition(INFO_SEPARATOR)[0]


def _arrival_key(name: str, mtime_ns: int) -> tuple[int, int, str]:
    """Delivery order: the time in the unique name (seconds, microseconds), else the file's mtime."""
    match = _ARRIVAL.match(name)
    if match is None:
        return (mtime_ns // 1_000_000_000, (mtime_ns // 1000) % 1_000_000, name)
    return (int(match.group(1)), int(match.group(2) or 0), name)


class MailboxLock:
    """An exclusive flock on a mailbox, held while a reader works on it."""

    def __init__(self, fd: int) -> None:
        self._fd: int | None = fd

    def release(self) -> None:
        if self._fd is not None:
            os.close(self._fd)  # closing the descriptor drops the flock
            self._fd = None


@dataclass
class _Job:
    """One message on its way into one or more Maildirs (see `Maildirs.deliver_many`)."""

    targets: list[Target]
    write: Callable[[BinaryIO], None]
    dirs: list[Path] = field(default_factory=list)
    provisional: Path | None = None
    handle: BinaryIO | None = None
    size: int = 0
    name: str = ""
    linked: list[Path] = field(default_factory=list)
    error: MaildirError | None = None

    @property
    def new_dirs(self) -> set[Path]:
        return {d / "new" for d in self.dirs}

    def outcome(self) -> list[Delivered] | MaildirError:
        if self.error is not None:
            return self.error
        return [Delivered(t.mailbox, t.folder, p, self.name) for t, p in zip(self.targets, self.linked, strict=True)]


def _safe_host() -> str:
    return socket.gethostname().replace("/", r"\057").replace(":", r"\072") or "localhost"


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class Maildirs:
    """All mailboxes under one root."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self._host = _safe_host()
        self._counter = itertools.count()
        self._ensured: set[Path] = set()  # folders known to exist: saves three mkdir calls per delivery

    def mailbox_dir(self, mailbox: str) -> Path:
        local, _, domain = mailbox.rpartition("@")
        if not local or not domain or "/" in mailbox or local.startswith(".") or domain.startswith("."):
            raise MaildirError(f"refusing unsafe mailbox name {mailbox!r}")
        return self.root / domain / local

    def folder_dir(self, mailbox: str, folder: str = INBOX) -> Path:
        base = self.mailbox_dir(mailbox)
        if folder == INBOX:
            return base
        if "/" in folder or folder.startswith("."):
            raise MaildirError(f"refusing unsafe folder name {folder!r}")
        return base / f".{folder}"

    def ensure(self, mailbox: str, folder: str = INBOX) -> Path:
        directory = self.folder_dir(mailbox, folder)
        if directory in self._ensured:
            return directory
        for sub in SUBDIRS:
            (directory / sub).mkdir(parents=True, exist_ok=True)
        if folder != INBOX:
            (directory / "maildirfolder").touch(exist_ok=True)
        self._ensured.add(directory)
        return directory

    def unique_name(self, size: int) -> str:
        now = time.time()
        seconds = int(now)
        micros = int((now - seconds) * 1_000_000)
        # microseconds zero-padded: within a second, name order is delivery order
        return f"{seconds}.M{micros:06d}P{os.getpid()}Q{next(self._counter)}.{self._host},S={size}"

    def deliver(self, targets: Sequence[Target], write: Callable[[BinaryIO], None]) -> list[Delivered]:
        """Write one message for all `targets` durably; blocking. Raises MaildirError."""
        if not targets:
            return []
        (outcome,) = self.deliver_many([(targets, write)])
        if isinstance(outcome, MaildirError):
            raise outcome
        return outcome

    def deliver_many(
        self, messages: Sequence[tuple[Sequence[Target], Callable[[BinaryIO], None]]]
    ) -> list[list[Delivered] | MaildirError]:
        """Write several messages durably at once (group commit); blocking. One outcome per message.

        `write` writes a whole message into the handle it is given (it may be called twice: a
        folder removed behind our back is created again). All files are written first and then
        fsynced, all links made and then each new/ directory fsynced once: on a journaling file
        system the first fsync commits the journal for the whole group, so the group costs about
        two journal commits instead of two per message. A message that fails is taken back
        completely; the others are not affected.
        """
        if not all(targets for targets, _ in messages):
            raise ValueError("deliver_many: every message needs at least one target")
        jobs = [_Job(list(targets), write) for targets, write in messages]
        for job in jobs:
            self._run_step(job, self._write_tmp)
        for job in jobs:
            self._run_step(job, self._sync_tmp)
        for job in jobs:
            self._run_step(job, self._link)
        for directory in {d for job in jobs if job.error is None for d in job.new_dirs}:
            try:
                _fsync_dir(directory)
            except OSError as exc:
                for job in jobs:
                    if job.error is None and directory in job.new_dirs:
                        self._fail(job, exc)
        for job in jobs:  # the tmp/ name is only scaffolding: its removal need not be durable
            if job.provisional is not None and job.error is None:
                with contextlib.suppress(OSError):
                    job.provisional.unlink()
        return [job.outcome() for job in jobs]

    def _run_step(self, job: _Job, step: Callable[[_Job], None]) -> None:
        if job.error is not None:
            return
        try:
            step(job)
        except BaseException as exc:
            self._fail(job, exc)
            if not isinstance(exc, Exception):
                raise

    def _fail(self, job: _Job, exc: BaseException) -> None:
        """Take a message back completely: its links, its tmp file; remember why."""
        for path in job.linked:
            with contextlib.suppress(OSError):
                path.unlink()
        if job.handle is not None:
            with contextlib.suppress(OSError):
                job.handle.close()
        if job.provisional is not None:
            with contextlib.suppress(OSError):
                job.provisional.unlink()
        if isinstance(exc, MaildirError):
            job.error = exc
        elif isinstance(exc, OSError):
            job.error = MaildirError(exc.errno, f"delivery failed: {exc.strerror or exc}")
        else:
            job.error = MaildirError(f"delivery failed: {type(exc).__name__}: {exc}")

    def _write_tmp(self, job: _Job) -> None:
        try:
            self._open_and_write(job)
        except FileNotFoundError:  # a cached folder was removed behind our back: create it again
            self._ensured.clear()
            self._open_and_write(job)

    def _open_and_write(self, job: _Job) -> None:
        job.dirs = [self.ensure(t.mailbox, t.folder) for t in job.targets]
        job.provisional = job.dirs[0] / "tmp" / f"{time.time_ns()}.P{os.getpid()}Q{next(self._counter)}.{self._host}"
        job.handle = open(job.provisional, "xb")  # noqa: SIM115 - closed in _sync_tmp or _fail
        job.write(job.handle)
        job.handle.flush()
        # Start writing it out now, so that the group's fsyncs find their data already on its way.
        os.posix_fadvise(job.handle.fileno(), 0, 0, os.POSIX_FADV_DONTNEED)

    def _sync_tmp(self, job: _Job) -> None:
        assert job.handle is not None
        os.fsync(job.handle.fileno())
        job.size = job.handle.tell()
        job.handle.close()
        job.handle = None

    def _link(self, job: _Job) -> None:
        assert job.provisional is not None
        job.name = self.unique_name(job.size)
        for directory in job.dirs:
            final = directory / "new" / job.name
            os.link(job.provisional, final)
            job.linked.append(final)

    def remove(self, delivered: Sequence[Delivered]) -> None:
        """Take back a delivery (when its evidence could not be stored), wherever a reader moved it."""
        for copy in delivered:
            self._unlink(copy.mailbox, copy.folder, copy.uid, copy.path)

    def _unlink(self, mailbox: str, folder: str, uid: str, path: Path) -> bool:
        """Remove the message `uid`, last seen at `path`; False if it was already gone."""
        try:
            path.unlink()
            return True
        except FileNotFoundError:  # renamed meanwhile (new -> cur, flags) or removed by someone else
            pass
        moved = self.locate(mailbox, uid, folder)
        if moved is None:
            return False
        try:
            moved.unlink()
            return True
        except FileNotFoundError:
            return False

    # ------------------------------------------------------------------ reading (POP3)
    def lock(self, mailbox: str) -> MailboxLock | None:
        """Exclusive use of `mailbox` by one reader; None while another one holds it."""
        lock_path = self.ensure(mailbox) / LOCK_FILE
        fd = os.open(lock_path, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            return None
        return MailboxLock(fd)

    def messages(self, mailbox: str, folder: str = INBOX) -> list[Stored]:
        """The folder's messages in delivery order; moves what is in new/ to cur/ (first access)."""
        directory = self.ensure(mailbox, folder)
        for entry in os.scandir(directory / "new"):
            if entry.is_file() and not entry.name.startswith("."):
                try:
                    Path(entry.path).rename(directory / "cur" / f"{entry.name}{INFO_SEPARATOR}2,")
                except FileNotFoundError:  # another reader moved it first
                    pass
        found: list[tuple[tuple[int, int, str], Stored]] = []
        for entry in os.scandir(directory / "cur"):
            if entry.name.startswith("."):
                continue
            try:
                status = entry.stat()
            except FileNotFoundError:
                continue
            uid = uid_of(entry.name)
            wire = _WIRE_SIZE.search(uid)
            size = int(wire.group(1)) if wire else status.st_size
            found.append((_arrival_key(uid, status.st_mtime_ns), Stored(uid, Path(entry.path), size)))
        found.sort(key=lambda pair: pair[0])
        return [stored for _, stored in found]

    def locate(self, mailbox: str, uid: str, folder: str = INBOX) -> Path | None:
        """Where the message `uid` is now (its info part may have changed), or None if it is gone."""
        directory = self.folder_dir(mailbox, folder)
        for sub in ("cur", "new"):
            try:
                for entry in os.scandir(directory / sub):
                    if uid_of(entry.name) == uid:
                        return Path(entry.path)
            except FileNotFoundError:
                continue
        return None

    def set_flags(self, mailbox: str, stored: Stored, flags: str, folder: str = INBOX) -> Stored | None:
        """Add Maildir flags (e.g. "S" for seen) to a message in cur/; None if it is gone."""
        path = stored.path if stored.path.exists() else self.locate(mailbox, stored.uid, folder)
        if path is None:
            return None
        info = path.name.partition(INFO_SEPARATOR)[2]
        current = info[2:] if info.startswith("2,") else ""
        merged = "".join(sorted(set(current) | set(flags)))
        if merged == current and path.parent.name == "cur":
            return Stored(stored.uid, path, stored.size)
        target = self.folder_dir(mailbox, folder) / "cur" / f"{stored.uid}{INFO_SEPARATOR}2,{merged}"
        path.rename(target)
        return Stored(stored.uid, target, stored.size)

    def expunge(self, mailbox: str, messages: Sequence[Stored], folder: str = INBOX) -> list[Stored]:
        """Delete `messages` durably; returns those that were still there (the others vanished before)."""
        removed = [stored for stored in messages if self._unlink(mailbox, folder, stored.uid, stored.path)]
        if removed:
            _fsync_dir(self.folder_dir(mailbox, folder) / "cur")
        return removed

    def tmp_dirs(self) -> Iterator[Path]:
        if not self.root.is_dir():
            return
        for domain in self.root.iterdir():
            if not domain.is_dir():
                continue
            for mailbox in domain.iterdir():
                if not mailbox.is_dir():
                    continue
                yield mailbox / "tmp"
                yield from mailbox.glob(".*/tmp")

    def recover(self) -> int:
        """At start, before any delivery: remove what a crash left in tmp/. Returns the count."""
        removed = 0
        for tmp in self.tmp_dirs():
            if not tmp.is_dir():
                continue
            for leftover in tmp.iterdir():
                if leftover.is_file():
                    leftover.unlink()
                    removed += 1
        if removed:
            log.warning(
                "removed %d unfinished deliveries from tmp/ (a crash interrupted them; none was acknowledged)", removed
            )
        return removed
