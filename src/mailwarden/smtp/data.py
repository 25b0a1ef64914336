"""Decoding the DATA stream: end-of-data, dot-unstuffing, long lines, bare CR/LF.

SMTP smuggling guard: only <CR><LF>.<CR><LF> ends the message (never <LF>.<LF>, <LF>.<CR><LF> or
<CR>.<CR>), so one message is never split into two. Bare LF or CR inside the message are
normalized to CRLF afterwards, or counted so that the message can be refused - this happens on
the decoded content, after end-of-data detection, so normalizing can never create an end marker.
`LineChecks` is that part on its own: BDAT chunks (RFC 3030) have no end marker and no stuffing,
but their content gets the same line checks as DATA's.

Works on large chunks with bytes.find and regular expressions rather than line by line, so a
20 MB message costs a few milliseconds of CPU, not a second.
"""

from __future__ import annotations

import re
from typing import Final

_END: Final = b"\r\n.\r\n"
_BARE: Final = re.compile(rb"\r(?!\n)|(?<!\r)\n")


class LineChecks:
    """Message content in, the same content out with bare CR/LF normalized (or only counted), long lines noted."""

    def __init__(self, max_line_length: int, normalize_bare_newlines: bool) -> None:
        self._normalize = normalize_bare_newlines
        self._max_run = max_line_length + 1  # a line's bytes before LF: its text and the CR
        self._line_len = 0  # bytes of the current line so far, across chunks
        self._held_cr = False  # a CR ended the last piece: bare or not is told by the next byte
        self.line_too_long = False
        self.bare_newlines = 0

    def feed(self, data: bytes) -> bytes:
        if self._held_cr:
            data = b"\r" + data
            self._held_cr = False
        if data.endswith(b"\r"):
            data = data[:-1]
            self._held_cr = True
        return self._inspect(data)

    def finish(self) -> bytes:
        """The end of the content: a CR still held is a bare one."""
        if not self._held_cr:
            return b""
        self._held_cr = False
        self.bare_newlines += 1
        self._track_line_length(b"\r")
        return b"\r\n" if self._normalize else b"\r"

    def _inspect(self, data: bytes) -> bytes:
        # `feed` holds back a trailing CR until the next byte, so a bare CR or LF can be judged
        # within `data` alone.
        if not data:
            return data
        self._track_line_length(data)
        pairs = data.count(b"\r\n")
        if data.count(b"\n") != pairs or data.count(b"\r") != pairs:  # three C scans, no regex: the common case
            fixed = _BARE.sub(b"\r\n", data)
            self.bare_newlines += len(fixed) - len(data)
            if self._normalize:
                data = fixed
        return data

    def _track_line_length(self, data: bytes) -> None:
        """A line longer than the limit (not counting its CRLF) sets `line_too_long`."""
        if self.line_too_long:
            return
        last = data.rfind(b"\n")
        if last < 0:
            self._line_len += len(data)
        else:
            first = data.find(b"\n")
            if self._line_len + first > self._max_run or (
                last - first > self._max_run and max(map(len, data[first + 1 : last].split(b"\n"))) > self._max_run
            ):
                self.line_too_long = True
                return
            self._line_len = len(data) - last - 1
        if self._line_len > self._max_run:
            self.line_too_long = True


class DataDecoder:
    """Feed raw bytes as they arrive; get message bytes out until `done`."""

    def __init__(self, max_line_length: int, normalize_bare_newlines: bool) -> None:
        # Pretend a CRLF came just before the content, so that a leading "." line is handled
        # like any other; those two bytes are never emitted.
        self._pending = b"\r\n"
        self._skip = 2
        self._lines = LineChecks(max_line_length, normalize_bare_newlines)
        self.done = False
        self.leftover = b""  # bytes after the end marker (pipelined commands)

    @property
    def line_too_long(self) -> bool:
        return self._lines.line_too_long

    @property
    def bare_newlines(self) -> int:
        return self._lines.bare_newlines

    def feed(self, chunk: bytes) -> bytes:
        """Decode `chunk`; return the message bytes it completes. Sets `done` at the end marker."""
        if self.done:
            self.leftover += chunk
            return b""
        buf = self._pending + chunk
        out: list[bytes] = []
        pos = 0
        while True:
            i = buf.find(b"\r\n.", pos)
            if i < 0:
                keep = 2 if buf.endswith(b"\r\n") else (1 if buf.endswith(b"\r") else 0)
                out.append(buf[pos : len(buf) - keep])
                self._pending = buf[len(buf) - keep :]
                break
            if len(buf) < i + 5 and _END.startswith(buf[i:]):
                out.append(buf[pos:i])  # maybe the end marker: wait for more bytes
                self._pending = buf[i:]
                break
            if buf[i : i + 5] == _END:
                out.append(buf[pos : i + 2])  # the content ends with its last CRLF
                self.leftover = buf[i + 5 :]
                self._pending = b""
                self.done = True
                break
            out.append(buf[pos : i + 2])  # "\r\n." starts a line: drop the stuffed dot
            pos = i + 3
        data = b"".join(out)
        if self._skip:
            skipped = min(self._skip, len(data))
            data = data[skipped:]
            self._skip -= skipped
        return self._lines.feed(data)
