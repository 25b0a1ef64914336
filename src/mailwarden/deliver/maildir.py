"""Durable Maildir delivery, shared by the gateway (writing) and the POP3 server (reading).

Layout: ROOT/DOMAIN/LOCALPART/ is a mailbox's Maildir (cur, new, tmp); other folders are
Maildir++ subfolders (ROOT/DOMAIN/LOCALPART/.Junk/). A delivery writes the message once into
tmp/, fsyncs it, hard-links it into new/ of every recipient, fsyncs those directories and only
then returns - so "250" is only ever said for mail that is on disk. On any error every link
made so far is removed again: nothing is left half-delivered.

Readers (the POP3 server) see a message by its unique name (`uid`, the file name without the
":2,FLAGS" info part), which never changes: it is what the gateway's `deliver` event records and
what POP3's UIDL shows. The first reader moves new/ to cur/ (as the Maildir convention asks);
a message is then found by its uid wherever it is, even after another program renamed it to
change its flags. `lock` gives one reader at a time exclusive use of a mailbox (an flock, so it
also holds against other processes).
"""

from __future__ import annotations

import fcntl
import itertools
import logging
import os
import re
import socket
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
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
        for sub in SUBDIRS:
            (directory / sub).mkdir(parents=True, exist_ok=True)
        if folder != INBOX:
            (directory / "maildirfolder").touch(exist_ok=True)
        return directory

    def unique_name(self, size: int) -> str:
        now = time.time()
        seconds = int(now)
        micros = int((now - seconds) * 1_000_000)
        return f"{seconds}.M{micros}P{os.getpid()}Q{next(self._counter)}.{self._host},S={size}"

    def deliver(self, targets: Sequence[Target], write: Callable[[BinaryIO], None]) -> list[Delivered]:
        """Write one message for all `targets` durably; blocking (run it in a worker thread)."""
        if not targets:
            return []
        dirs = [self.ensure(t.mailbox, t.folder) for t in targets]
        tmp_dir = dirs[0] / "tmp"
        provisional = tmp_dir / f"{time.time_ns()}.P{os.getpid()}Q{next(self._counter)}.{self._host}"
        linked: list[Path] = []
        try:
            with open(provisional, "xb") as handle:
                write(handle)
                handle.flush()
                os.fsync(handle.fileno())
                size = handle.tell()
            name = self.unique_name(size)
            for directory in dirs:
                final = directory / "new" / name
                os.link(provisional, final)
                linked.append(final)
            for directory in {d / "new" for d in dirs}:
                _fsync_dir(directory)
            provisional.unlink()
            _fsync_dir(tmp_dir)
        except OSError as exc:
            for path in linked:
                path.unlink(missing_ok=True)
            provisional.unlink(missing_ok=True)
            raise MaildirError(exc.errno, f"delivery failed: {exc.strerror or exc}") from exc
        return [Delivered(t.mailbox, t.folder, path, name) for t, path in zip(targets, linked, strict=True)]

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
