"""The delivery journal: what was about to be linked into a Maildir, so a crash never hides a delivery.

A message is linked into its Maildirs before its events are committed (deliver/maildir.py,
deliver/writer.py); a crash between the two leaves a file in a mailbox without the events that
say how it got there. Before a delivery thread links a group, it writes the group's planned
`deliver` events (each names its Maildir copy: mailbox, folder, unique name) durably here; once
their commit is answered they are dropped from the thread's record again. On start, before any
mail is accepted, `reconcile` looks for the copies the journal names, and records each one that
is in a mailbox without its `deliver` event as `delivered.unconfirmed`: delivered, the sender got
no reply, it may arrive twice. The cost on start is a store query per journaled message, not a
walk over the mail store.

Each delivery thread keeps its own two record files and writes them in turn, each time the whole
set of its deliveries not yet settled (a snapshot), checksummed. A write torn by a power cut
belongs to a group that was never linked, and the other file still holds everything linked
before it. Files are overwritten in place and never shrink, so a write usually changes no file
size and its `fdatasync` needs no metadata commit.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import threading
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

from mailwarden.deliver.maildir import Maildirs
from mailwarden.events import FIELDS, Event, now_us, us_to_iso
from mailwarden.store import EventQuery, Store

log = logging.getLogger(__name__)

JOURNAL_DIR: Final = ".mailwarden-journal"  # in the Maildir root; no domain name starts with a dot
UNCONFIRMED: Final = "delivered.unconfirmed"
_MAGIC: Final = b"mailwarden-journal-1"
_SLOTS: Final = ("a", "b")
_REFS_LOGGED: Final = 20


def _encode(events: Iterable[Event]) -> bytes:
    """A record: a header line with the payload's length and SHA-256, then the events as JSON."""
    rows = [{name: getattr(event, name) for name in FIELDS} for event in events]
    payload = json.dumps(rows, separators=(",", ":"), ensure_ascii=False).encode()
    return b"%s %d %s\n" % (_MAGIC, len(payload), hashlib.sha256(payload).hexdigest().encode()) + payload


def _decode(data: bytes) -> list[Event] | None:
    """The events of a record; None for an empty, torn or foreign one."""
    header, _, rest = data.partition(b"\n")
    parts = header.split(b" ")
    if len(parts) != 3 or parts[0] != _MAGIC or not parts[1].isdigit():
        return None
    payload = rest[: int(parts[1])]
    if len(payload) != int(parts[1]) or hashlib.sha256(payload).hexdigest().encode() != parts[2]:
        return None
    rows: list[dict[str, Any]] = json.loads(payload)
    return [Event(**{name: row[name] for name in FIELDS if name in row}) for row in rows]


def _uid(event: Event) -> str | None:
    uid = event.detail.get("uid")
    return uid if isinstance(uid, str) else None


class Journal:
    """One delivery thread's record of its deliveries whose events are not committed yet.

    `intend` is called by that thread only; `settle` from anywhere.
    """

    def __init__(self, directory: Path, name: str) -> None:
        self.directory = directory
        self._paths = [directory / f"{name}.{slot}" for slot in _SLOTS]
        self._fds: list[int] = []
        self._turn = 0
        self._lock = threading.Lock()
        self._unsettled: dict[str, list[Event]] = {}  # Maildir unique name -> its deliver events

    def intend(self, events: Iterable[Event]) -> None:
        """Record deliveries about to be linked (their `deliver` events) durably; blocking, one fdatasync.

        Raises OSError: the deliveries must then not be linked.
        """
        with self._lock:
            for event in events:
                uid = _uid(event)
                if event.kind == "deliver" and uid is not None:
                    self._unsettled.setdefault(uid, []).append(event)
            record = _encode([event for events in self._unsettled.values() for event in events])
        fd = self._slot()
        view = memoryview(record)
        offset = 0
        while offset < len(view):
            offset += os.pwrite(fd, view[offset:], offset)
        os.fdatasync(fd)

    def settle(self, uid: str) -> None:
        """The delivery `uid` is committed with its events, or taken back: the next record leaves it out."""
        with self._lock:
            self._unsettled.pop(uid, None)

    def close(self) -> None:
        for fd in self._fds:
            os.close(fd)
        self._fds = []

    def _slot(self) -> int:
        """The file to write next (they take turns); created durably on first use."""
        if not self._fds:
            self.directory.mkdir(parents=True, exist_ok=True)
            self._fds = [os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600) for path in self._paths]
            for directory in (self.directory, self.directory.parent):
                fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
                try:
                    os.fsync(fd)
                finally:
                    os.close(fd)
        fd = self._fds[self._turn]
        self._turn = 1 - self._turn
        return fd


def journaled(directory: Path, owner: str = "") -> list[Event]:
    """Every `deliver` event the journal files hold (from every thread and both of its files), once each.

    With `owner`, only the files whose names start with it (one SMTP worker's)."""
    found: dict[tuple[str, str, str], Event] = {}
    for path in sorted(directory.glob(f"{owner}*")) if directory.is_dir() else []:
        for event in _decode(path.read_bytes()) or []:
            found.setdefault(_copy(event), event)
    return list(found.values())


@dataclass
class Reconciliation:
    """What `reconcile` found: the deliveries the journal named, and those it had to record."""

    journaled: int = 0
    recorded: list[Event] = field(default_factory=list)


def reconcile(maildirs: Maildirs, store: Store, directory: Path, owner: str = "") -> Reconciliation:
    """At start, before any delivery: record every journaled copy that is in a mailbox without its event.

    Each gets its planned `deliver` event with the reason `delivered.unconfirmed` (its time is
    the delivery's; `detail.recorded_at` says when it was recorded). Committed before the journal
    is emptied, so a crash here only repeats the work. Raises StoreError when the store cannot
    take them (the journal is kept for the next start). With `owner`, only the journal files whose
    names start with it: an SMTP worker's, before its successor starts (the others deliver on).
    """
    planned = journaled(directory, owner)
    result = Reconciliation(journaled=len(planned))
    by_ref: dict[str | None, list[Event]] = {}
    for event in planned:
        by_ref.setdefault(event.ref, []).append(event)
    recorded_at = us_to_iso(now_us())
    for ref, events in by_ref.items():
        known = {_copy(e) for e in store.query_events(EventQuery(ref=ref, kinds=("deliver",)))} if ref else set()
        for event in events:
            copy = _copy(event)
            if copy in known or not _in_mailbox(maildirs, *copy):
                continue
            detail = {**event.detail, "unconfirmed": True, "recorded_at": recorded_at}
            result.recorded.append(event.replace(reason=UNCONFIRMED, detail=detail, id=None))
    if result.recorded:
        store.append_many(result.recorded)
        store.flush()
        log.warning(
            "recorded %d deliveries found in mailboxes without their events (%s): the gateway stopped between "
            "storing them and confirming them, so their senders got no reply and may send them again",
            len(result.recorded),
            ", ".join(sorted({str(e.ref) for e in result.recorded})[:_REFS_LOGGED]),
        )
    for path in directory.glob(f"{owner}*") if directory.is_dir() else []:
        os.truncate(path, 0)
    return result


def _in_mailbox(maildirs: Maildirs, mailbox: str, folder: str, uid: str) -> bool:
    """Whether the copy is there: in new/ where it was linked, or moved on by a reader since (cur/, flags)."""
    if not (mailbox and folder and uid):
        return False
    if (maildirs.folder_dir(mailbox, folder) / "new" / uid).exists():
        return True
    return maildirs.locate(mailbox, uid, folder) is not None


def _copy(event: Event) -> tuple[str, str, str]:
    """(mailbox, folder, Maildir unique name) of the copy a `deliver` event records."""
    detail = event.detail
    return (str(detail.get("mailbox") or ""), str(detail.get("folder") or ""), str(detail.get("uid") or ""))
