"""Durable Maildir delivery, shared by the gateway (writing) and the POP3 server (reading).

Layout: ROOT/DOMAIN/LOCALPART/ is a mailbox's Maildir (cur, new, tmp); other folders are
Maildir++ subfolders (ROOT/DOMAIN/LOCALPART/.Junk/). A delivery writes the message once, as an
unnamed file in tmp/ (O_TMPFILE; a named one where the file system has no such thing), fsyncs
it, hard-links it into new/ of every recipient, fsyncs those directories and only then returns -
so "250" is only ever said for mail that is on disk. On any error every link made so far is
removed again: nothing is left half-delivered. `deliver_many` does this for a group of messages
at once, so that they share their fsyncs (the gateway's delivery threads, `deliver/writer.py`,
which journal a group between its fsyncs and its links: `deliver/journal.py`).

Readers (the POP3 server) see a message by its unique name (`uid`, the file name without the
":2,FLAGS" info part), which never changes: it is what the gateway's `deliver` event records and
what POP3's UIDL shows. The first reader moves new/ to cur/ (as the Maildir convention asks);
a message is then found by its uid wherever it is, even after another program renamed it to
change its flags. `lock` gives one reader at a time exclusive use of a mailbox (an flock, so it
also holds against other processes).
"""

from __future__ import annotations

import contextlib
import errno
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
from typing import Final, Protocol

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


class Sink(Protocol):
    """Where `Message.write` puts the message: the new file, written through without buffering."""

    def write(self, data: bytes | memoryview, /) -> object: ...


class _FileSink:
    """A file descriptor as a `Sink`: each write one system call (or more for a partial write); counts the bytes."""

    __slots__ = ("fd", "size")

    def __init__(self, fd: int) -> None:
        self.fd = fd
        self.size = 0

    def write(self, data: bytes | memoryview, /) -> int:
        view = memoryview(data).cast("B")
        while view:
            view = view[os.write(self.fd, view) :]
        self.size += len(data)
        return len(data)


@dataclass(frozen=True)
class Message:
    """One message to deliver: its recipients' folders and how to write it (into an open file).

    `name`, when given, is the unique name chosen ahead (`Maildirs.plan`), so that the
    delivery's events could be made before it; the written size must match its `,S=`.
    `write` may be called twice (a folder removed behind our back is created again).
    """

    targets: Sequence[Target]
    write: Callable[[Sink], None]
    name: str | None = None


@dataclass
class _Job:
    """One message on its way into one or more Maildirs (see `Maildirs.deliver_many`)."""

    message: Message
    dirs: list[Path] = field(default_factory=list)
    fd: int | None = None  # the new file, unnamed (O_TMPFILE) or at `provisional` in tmp/
    provisional: Path | None = None
    size: int = 0
    name: str = ""
    linked: list[Path] = field(default_factory=list)
    error: MaildirError | None = None

    def outcome(self) -> list[Delivered] | MaildirError:
        if self.error is not None:
            return self.error
        targets = self.message.targets
        return [Delivered(t.mailbox, t.folder, p, self.name) for t, p in zip(targets, self.linked, strict=True)]


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
        # New files are made unnamed (O_TMPFILE) and linked into new/ through /proc: no tmp/ entry to
        # create and remove, and nothing left behind by a crash. Named files in tmp/ where that is missing.
        self._unnamed = hasattr(os, "O_TMPFILE") and Path("/proc/self/fd").is_dir()

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

    def plan(self, targets: Sequence[Target], size: int) -> list[Delivered]:
        """The copies that delivering `size` bytes to `targets` will make, named before anything is written.

        Raises MaildirError for an unsafe mailbox or folder name. Pass the name on (`Message.name`).
        """
        name = self.unique_name(size)
        return [
            Delivered(t.mailbox, t.folder, self.folder_dir(t.mailbox, t.folder) / "new" / name, name) for t in targets
        ]

    def deliver(self, targets: Sequence[Target], write: Callable[[Sink], None]) -> list[Delivered]:
        """Write one message for all `targets` durably; blocking. Raises MaildirError."""
        if not targets:
            return []
        (outcome,) = self.deliver_many([Message(targets, write)])
        if isinstance(outcome, MaildirError):
            raise outcome
        return outcome

    def deliver_many(
        self, messages: Sequence[Message], before_link: Callable[[Sequence[Message]], None] | None = None
    ) -> list[list[Delivered] | MaildirError]:
        """Write several messages durably at once (group commit); blocking. One outcome per message.

        All files are written first and then fsynced, all links made and then each new/
        directory fsynced once: on a journaling file system the first fsync commits the journal
        for the whole group, so the group costs about two journal commits instead of two per
        message. A message that fails is taken back completely; the others are not affected.
        `before_link` is told which messages are on disk and about to be linked (the delivery
        journal); if it raises, none of them is linked.
        """
        if not all(message.targets for message in messages):
            raise ValueError("deliver_many: every message needs at least one target")
        jobs = [_Job(message) for message in messages]
        for job in jobs:
            self._run_step(job, self._write)
        for job in jobs:
            self._run_step(job, self._sync)
        ready = [job for job in jobs if job.error is None]
        if before_link is not None and ready:
            try:
                before_link([job.message for job in ready])
            except Exception as exc:
                for job in ready:
                    self._fail(job, exc)
        new_dirs: dict[Path, int] = {}
        try:
            for job in jobs:
                self._run_step(job, lambda job: self._link(job, new_dirs))
            for directory, fd in new_dirs.items():
                try:
                    os.fsync(fd)
                except OSError as exc:
                    for job in jobs:
                        if job.error is None and any(d / "new" == directory for d in job.dirs):
                            self._fail(job, exc)
        finally:
            for fd in new_dirs.values():
                os.close(fd)
            for job in jobs:
                self._close(job)
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
        """Take a message back completely: its links, its file; remember why."""
        for path in job.linked:
            with contextlib.suppress(OSError):
                path.unlink()
        self._close(job)
        if isinstance(exc, MaildirError):
            job.error = exc
        elif isinstance(exc, OSError):
            job.error = MaildirError(exc.errno, f"delivery failed: {exc.strerror or exc}")
        else:
            job.error = MaildirError(f"delivery failed: {type(exc).__name__}: {exc}")

    @staticmethod
    def _close(job: _Job) -> None:
        """The file is linked or given up: close it; a tmp/ name is only scaffolding (its removal need not be durable)."""
        if job.fd is not None:
            with contextlib.suppress(OSError):
                os.close(job.fd)
            job.fd = None
        if job.provisional is not None:
            with contextlib.suppress(OSError):
                job.provisional.unlink()
            job.provisional = None

    def _write(self, job: _Job) -> None:
        try:
            self._create_and_write(job)
        except FileNotFoundError:  # a cached folder was removed behind our back: create it again
            self._close(job)
            self._ensured.clear()
            self._create_and_write(job)

    def _create_and_write(self, job: _Job) -> None:
        job.dirs = [self.ensure(t.mailbox, t.folder) for t in job.message.targets]
        tmp = job.dirs[0] / "tmp"
        if self._unnamed:
            try:
                job.fd = os.open(tmp, os.O_WRONLY | os.O_TMPFILE | os.O_CLOEXEC, 0o600)
            except OSError as exc:
                if exc.errno not in (errno.EOPNOTSUPP, errno.EISDIR, errno.EINVAL):
                    raise
                log.info("%s cannot hold unnamed files (O_TMPFILE): using named files in tmp/", tmp)
                self._unnamed = False
        if job.fd is None:
            job.provisional = tmp / f"{time.time_ns()}.P{os.getpid()}Q{next(self._counter)}.{self._host}"
            job.fd = os.open(job.provisional, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
        sink = _FileSink(job.fd)
        job.message.write(sink)
        job.size = sink.size

    @staticmethod
    def _sync(job: _Job) -> None:
        assert job.fd is not None
        os.fsync(job.fd)

    def _link(self, job: _Job, new_dirs: dict[Path, int]) -> None:
        """Give the (fsynced) file its name in every new/ directory; `new_dirs` keeps their descriptors for the fsync."""
        planned = job.message.name
        if planned is not None and not planned.endswith(f",S={job.size}"):
            raise MaildirError(f"wrote {job.size} bytes, but the planned name {planned} says otherwise")
        job.name = planned or self.unique_name(job.size)
        source = str(job.provisional) if job.provisional is not None else f"/proc/self/fd/{job.fd}"
        for directory in job.dirs:
            new = directory / "new"
            if new not in new_dirs:
                new_dirs[new] = os.open(new, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
            # linkat() with the directory's descriptor; following the /proc link names an unnamed file
            os.link(source, job.name, dst_dir_fd=new_dirs[new], follow_symlinks=True)
            job.linked.append(new / job.name)

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
            if not domain.is_dir() or domain.name.startswith("."):  # not a domain: the delivery journal
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
