"""Dot-stuffing: stored message bytes -> the multi-line data of SMTP/LMTP DATA and POP3 RETR/TOP.

Both protocols end the data with a line holding a single "." and double a "." that starts a line
(RFC 5321 4.5.2, RFC 1939 3). Line ends become CRLF. The encoder works on chunks of any size, so a
large message never has to be in memory at once.
"""

from __future__ import annotations

from typing import Final

MAX_PENDING: Final = 1024 * 1024  # longest stretch of a line held back while waiting for its end


class DotStuffer:
    """Stored bytes -> multi-line data: CRLF line ends, a leading "." doubled, "." at the end."""

    def __init__(self) -> None:
        self._pending = b""
        self._line_start = True

    def feed(self, data: bytes) -> bytes:
        data = self._pending + data
        cut = data.rfind(b"\n") + 1
        if cut == 0 and len(data) >= MAX_PENDING:  # a very long line: pass its middle through
            cut = len(data) - 1 if data.endswith(b"\r") else len(data)
        self._pending = data[cut:]
        return self._convert(data[:cut])

    def finish(self) -> bytes:
        out = self._convert(self._pending)
        self._pending = b""
        if not self._line_start:
            out += b"\r\n"
        return out + b".\r\n"

    def _convert(self, block: bytes) -> bytes:
        if not block:
            return b""
        dot = b"." if self._line_start and block.startswith(b".") else b""
        self._line_start = block.endswith(b"\n")
        if block.count(b"\n") == block.count(b"\r\n"):  # already CRLF (what the gateway stores): one pass
            return dot + block.replace(b"\r\n.", b"\r\n..")
        text = block.replace(b"\r\n", b"\n").replace(b"\n.", b"\n..")
        return dot + text.replace(b"\n", b"\r\n")
