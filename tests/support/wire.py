"""A raw SMTP connection for protocol tests: send exact bytes (bad ones too), read whole replies."""

from __future__ import annotations

import re
import socket
import time
from dataclasses import dataclass


@dataclass(frozen=True)
class Reply:
    code: int
    lines: list[str]  # the text of each line, after "250-" / "250 "

    @property
    def text(self) -> str:
        """All lines joined with a blank, code included: what a test matches against."""
        return f"{self.code} " + " ".join(self.lines)

    def matches(self, pattern: str) -> bool:
        return re.search(pattern, self.text) is not None


class Closed(Exception):
    """The server closed the connection."""


class Wire:
    def __init__(self, port: int, *, host: str = "127.0.0.1", source: str | None = None, timeout: float = 30) -> None:
        self.sock = socket.create_connection(
            (host, port), timeout=timeout, source_address=(source, 0) if source else None
        )
        self._buffer = b""

    def __enter__(self) -> Wire:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def send(self, data: bytes | str) -> None:
        self.sock.sendall(data.encode() if isinstance(data, str) else data)

    def raw_line(self) -> bytes:
        """The next line as it came, with its line end."""
        while b"\n" not in self._buffer:
            chunk = self.sock.recv(65536)
            if not chunk:
                raise Closed(f"connection closed; unread: {self._buffer!r}")
            self._buffer += chunk
        line, _, self._buffer = self._buffer.partition(b"\n")
        return line + b"\n"

    def _line(self) -> bytes:
        return self.raw_line()[:-1].rstrip(b"\r")

    def pending(self) -> bytes:
        """What the server sent that no reply has read yet."""
        return self._buffer

    def reply(self) -> Reply:
        lines: list[str] = []
        while True:
            line = self._line().decode("utf-8", "replace")
            if not re.match(r"^\d{3}[ -]", line):
                raise AssertionError(f"not an SMTP reply line: {line!r}")
            lines.append(line[4:])
            if line[3] == " ":
                return Reply(int(line[:3]), lines)

    def command(self, line: bytes | str) -> Reply:
        """Send one command line (CRLF added) and read its reply."""
        self.send((line.encode() if isinstance(line, str) else line) + b"\r\n")
        return self.reply()

    def greet(self, helo: str = "client.sender.test") -> Reply:
        """Read the greeting and say EHLO; returns the EHLO reply."""
        greeting = self.reply()
        assert greeting.code == 220, greeting
        return self.command(f"EHLO {helo}")

    def closed_by_server(self, timeout: float = 30) -> bool:
        """True when the server closes the connection within `timeout` seconds (after any unread replies)."""
        self.sock.settimeout(timeout)
        deadline = time.monotonic() + timeout
        try:
            while time.monotonic() < deadline:
                chunk = self.sock.recv(65536)
                if not chunk:
                    return True
                self._buffer += chunk
        except TimeoutError:
            return False
        except ConnectionResetError:
            return True
        return False

    def close(self) -> None:
        self.sock.close()
