"""Durable Maildir delivery, shared by the gateway (writing) and the POP3 server (reading).

Layout: ROOT/DOMAIN/LOCALPART/ is a mailbox's Maildir (cur, new, tmp); other folders are
Maildir++ subfolders (ROOT/DOMAIN/LOCALPART/.Junk/). A delivery writes the message once into
tmp/, fsyncs it, hard-links it into new/ of every recipient, fsyncs those directories and only
then returns - so "250" is only ever said for mail that is on disk. On any error every link
made so far is removed again: nothing is left half-delivered.
"""

from __future__ import annotations

import itertools
import logging
import os
import socket
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

log = logging.getLogger(__name__)

INBOX = "INBOX"
SUBDIRS = ("cur", "new", "tmp")


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
        """Take back a delivery (when its evidence could not be stored)."""
        for copy in delivered:
            copy.path.unlink(missing_ok=True)

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
