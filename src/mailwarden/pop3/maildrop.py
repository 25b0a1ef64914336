"""One POP3 session's view of a mailbox: the messages as of login, deletion marks, and the wire form.

RFC 1939 numbers the messages of the maildrop from 1 as they were at login; a DELE only marks a
message, and the marks are applied in the UPDATE state (QUIT) - a session that ends any other way
deletes nothing. The Maildir itself is read and changed through `deliver/maildir.py`, the same code
the gateway delivers with. Blocking file work is done here in plain functions; the session runs
them in a worker thread.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import BinaryIO, Final

from mailwarden import refs
from mailwarden.deliver.maildir import Maildirs, Stored
from mailwarden.headers import first, header_fields, message_id

CHUNK: Final = 1024 * 1024  # bytes read and sent at a time
HEAD_BYTES: Final = 64 * 1024  # enough for any sane header block
REF_HEADER: Final = "X-Mailwarden-Ref"


@dataclass(frozen=True)
class Identity:
    """What ties a stored message to its delivery: its Message-ID and the gateway's ref."""

    message_id: str | None
    ref: str | None


def identity_of(head: bytes) -> Identity:
    """The Message-ID and delivery ref from a message's first bytes.

    The gateway puts X-Mailwarden-Ref above the sender's header, so the first such field is ours;
    one further down would be the sender's own (and is never reached first).
    """
    fields = header_fields(head[:HEAD_BYTES])
    ref = first(fields, REF_HEADER)
    ref = ref.strip() if ref is not None else None
    return Identity(message_id(fields), ref if ref is not None and refs.is_ref(ref) else None)


@dataclass
class Entry:
    number: int
    stored: Stored
    deleted: bool = False
    retrieved: bool = False
    identity: Identity | None = None


@dataclass
class Maildrop:
    mailbox: str
    entries: list[Entry] = field(default_factory=list)

    @classmethod
    def load(cls, maildirs: Maildirs, mailbox: str) -> Maildrop:
        """The INBOX as of now (blocking)."""
        messages = maildirs.messages(mailbox)
        return cls(mailbox, [Entry(n, stored) for n, stored in enumerate(messages, start=1)])

    def entry(self, number: int) -> Entry | None:
        if 1 <= number <= len(self.entries):
            return self.entries[number - 1]
        return None

    def visible(self) -> list[Entry]:
        return [e for e in self.entries if not e.deleted]

    def stat(self) -> tuple[int, int]:
        visible = self.visible()
        return len(visible), sum(e.stored.size for e in visible)

    def marked(self) -> list[Entry]:
        return [e for e in self.entries if e.deleted]

    def reset(self) -> None:
        for entry in self.entries:
            entry.deleted = False


def uidl_of(uid: str) -> str:
    """The UIDL of a message: its Maildir unique name when RFC 1939 allows it (1-70 of 0x21-0x7E)."""
    if 0 < len(uid) <= 70 and all(0x21 <= ord(c) <= 0x7E for c in uid):
        return uid
    return hashlib.sha256(uid.encode("utf-8", "surrogateescape")).hexdigest()[:64]


def read_head(maildirs: Maildirs, mailbox: str, entry: Entry) -> bytes | None:
    """The first bytes of a message (for its identity), or None if it is gone (blocking)."""
    opened = open_message(maildirs, mailbox, entry)
    if opened is None:
        return None
    with opened:
        return opened.read(HEAD_BYTES)


def open_message(maildirs: Maildirs, mailbox: str, entry: Entry) -> BinaryIO | None:
    """Open a message where it is now; None if another program removed it (blocking)."""
    for _ in range(2):
        try:
            return open(entry.stored.path, "rb")
        except FileNotFoundError:
            moved = maildirs.locate(mailbox, entry.stored.uid)
            if moved is None:
                return None
            entry.stored = Stored(entry.stored.uid, moved, entry.stored.size)
    return None


def top_lines(handle: BinaryIO, body_lines: int) -> Iterator[bytes]:
    """The header block, the empty line and the first `body_lines` lines of the body (RFC 1939 TOP)."""
    in_header = True
    sent = 0
    for line in handle:
        if in_header:
            yield line
            if line in (b"\n", b"\r\n"):
                in_header = False
            continue
        if sent >= body_lines:
            return
        yield line
        sent += 1
