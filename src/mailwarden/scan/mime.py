"""A bounded MIME walker: finds the leaf parts of a message without building a message tree.

Why not `email.message_from_bytes`: it copies the whole message into Python objects, recurses
once per nesting level (thousands of nested multiparts end in RecursionError) and has no limits.
This walker works on a bytes-like buffer (the spool file mapped into memory), locates boundaries
with `bytes.find`, parses only each part's header block with the stdlib, stops descending at
`max_depth` and counting at `max_parts`, and decodes a body only when asked. Broken input never
raises: a missing boundary ends the part at the end of its parent, broken base64 decodes as far as
it is decodable, and what could not be looked at is reported in `Walk.problems`.
"""

from __future__ import annotations

import binascii
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from email.message import Message
from email.parser import BytesHeaderParser
from email.policy import compat32
from typing import Final, Protocol

MAX_HEADER: Final = 64 * 1024  # a part's header block beyond this is cut (and noted)
_BLANK_LINE: Final = re.compile(rb"\r?\n\r?\n")
_NOT_BASE64: Final = re.compile(rb"[^A-Za-z0-9+/]")


class Buffer(Protocol):
    """bytes or an mmap: what the walker needs of the message buffer."""

    def find(self, sub: bytes, start: int = ..., end: int = ...) -> int: ...

    def __getitem__(self, index: slice) -> bytes: ...

    def __len__(self) -> int: ...


@dataclass(frozen=True)
class Leaf:
    """A part that is not itself a container: where its body lies and what its header says."""

    content_type: str
    filename: str | None
    encoding: str
    start: int
    end: int
    depth: int

    @property
    def encoded_size(self) -> int:
        return self.end - self.start


@dataclass
class Walk:
    buffer: Buffer
    max_depth: int
    max_parts: int
    parts: int = 0
    problems: list[str] = field(default_factory=list)
    exceeded: str | None = None  # the first structure limit that was hit: parts beyond it were not seen

    def note(self, problem: str) -> None:
        if problem not in self.problems:
            self.problems.append(problem)

    def limit_hit(self, problem: str) -> None:
        self.exceeded = self.exceeded or problem
        self.note(problem)

    def leaves(self) -> Iterator[Leaf]:
        yield from self._entity(0, len(self.buffer), 0)

    def _entity(self, start: int, end: int, depth: int) -> Iterator[Leaf]:
        self.parts += 1
        if self.parts > self.max_parts:
            self.limit_hit(f"more than {self.max_parts} MIME parts")
            return
        header, body_start = self._header(start, end)
        content_type = header.get_content_type()
        if depth >= self.max_depth and (content_type.startswith("multipart/") or content_type == "message/rfc822"):
            self.limit_hit(f"MIME parts nested deeper than {self.max_depth} levels")
            return
        if content_type.startswith("multipart/"):
            boundary = header.get_param("boundary")
            if isinstance(boundary, str) and 0 < len(boundary) <= 200:
                yield from self._multipart(boundary.encode("utf-8", "replace"), body_start, end, depth)
                return
            self.note("multipart without a usable boundary")
        elif content_type == "message/rfc822" and _encoding(header) in ("7bit", "8bit", "binary"):
            yield from self._entity(body_start, end, depth + 1)
            return
        yield Leaf(content_type, _filename(header), _encoding(header), body_start, end, depth)

    def _header(self, start: int, end: int) -> tuple[Message, int]:
        buffer = self.buffer
        if buffer[start : start + 1] == b"\n" or buffer[start : start + 2] == b"\r\n":
            return Message(), start + (1 if buffer[start : start + 1] == b"\n" else 2)
        limit = min(end, start + MAX_HEADER)
        head = buffer[start:limit]
        match = _BLANK_LINE.search(head)
        if match is None:
            if limit < end:
                self.note("a part's header is longer than 64 KiB")
            header_bytes, body_start = head, limit
        else:
            header_bytes, body_start = head[: match.start()], start + match.end()
        return BytesHeaderParser(policy=compat32).parsebytes(header_bytes), body_start

    def _multipart(self, boundary: bytes, start: int, end: int, depth: int) -> Iterator[Leaf]:
        previous: int | None = None  # where the current part's content starts
        closed = False
        for line_start, line_end, closing in self._delimiters(boundary, start, end):
            if previous is not None:
                yield from self._entity(previous, _before_newline(self.buffer, previous, line_start), depth + 1)
                if self.parts > self.max_parts:
                    return
            previous = line_end
            if closing:
                closed = True
                break
        if previous is None:
            self.note("multipart body without any boundary line")
            return
        if not closed and previous < end:
            self.note("multipart without its closing boundary")
            yield from self._entity(previous, end, depth + 1)

    def _delimiters(self, boundary: bytes, start: int, end: int) -> Iterator[tuple[int, int, bool]]:
        buffer = self.buffer
        marker = b"--" + boundary
        position = start
        while True:
            found = buffer.find(marker, position, end)
            if found < 0:
                return
            position = found + len(marker)
            if found != start and buffer[found - 1 : found] != b"\n":
                continue
            newline = buffer.find(b"\n", position, end)
            line_end = end if newline < 0 else newline + 1
            rest = buffer[position : min(line_end, position + 200)]
            closing = rest.startswith(b"--")
            if rest[2:].strip() if closing else rest.strip():
                continue  # a longer boundary that merely starts with ours
            yield found, line_end, closing


def _before_newline(buffer: Buffer, start: int, delimiter: int) -> int:
    """The CRLF before a boundary line belongs to the boundary (RFC 2046 5.1.1)."""
    if delimiter - 2 >= start and buffer[delimiter - 2 : delimiter] == b"\r\n":
        return delimiter - 2
    if delimiter - 1 >= start and buffer[delimiter - 1 : delimiter] == b"\n":
        return delimiter - 1
    return delimiter


def _encoding(header: Message) -> str:
    value = header.get("Content-Transfer-Encoding")
    return str(value).strip().lower() if value is not None else "7bit"


def _filename(header: Message) -> str | None:
    try:
        name = header.get_filename() or header.get_param("name")
    except (ValueError, LookupError, TypeError):
        return None
    if isinstance(name, tuple):  # an undecodable RFC 2231 value: (charset, language, text)
        name = name[2]
    return name.strip() if isinstance(name, str) and name.strip() else None


def might_carry_files(head: bytes) -> bool:
    """False for a plain text message without a file name: nothing for the file inspection to see."""
    match = _BLANK_LINE.search(head)
    header = BytesHeaderParser(policy=compat32).parsebytes(head[: match.start()] if match else head)
    return not header.get_content_type().startswith("text/") or _filename(header) is not None


def decode(buffer: Buffer, leaf: Leaf, limit: int) -> tuple[bytes, str | None]:
    """The leaf's body with its transfer encoding undone, at most `limit` bytes; plus a problem, if any.

    When `limit` is far below the part's size only its head is decoded: base64 cut mid-line is
    then not a problem of the sender's.
    """
    end = min(leaf.end, leaf.start + limit * 3 // 2)  # base64 with line breaks is about 1.37 times longer
    raw = buffer[leaf.start : end]
    if leaf.encoding == "base64" and end < leaf.end:
        head = raw[: raw.rfind(b"\n") + 1] or raw  # whole lines: almost always whole quanta too
        try:
            return binascii.a2b_base64(head)[:limit], None
        except binascii.Error:
            cleaned = _NOT_BASE64.sub(b"", head)
            return binascii.a2b_base64(cleaned[: len(cleaned) - len(cleaned) % 4])[:limit], None
    if leaf.encoding == "base64":
        try:
            return binascii.a2b_base64(raw)[:limit], None
        except binascii.Error:
            cleaned = _NOT_BASE64.sub(b"", raw)
            cleaned = cleaned[: len(cleaned) - len(cleaned) % 4]
            try:
                return binascii.a2b_base64(cleaned)[:limit], "broken base64 (decoded as far as possible)"
            except binascii.Error:
                return b"", "undecodable base64"
    if leaf.encoding == "quoted-printable":
        return binascii.a2b_qp(raw)[:limit], None
    return raw[:limit], None
