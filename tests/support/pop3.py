"""POP3 clients for the tests: poplib from a chosen loopback source address (a "device")."""

from __future__ import annotations

import poplib
import smtplib
import socket
import time
from collections.abc import Callable
from typing import Any


class Device(poplib.POP3):
    """A POP3 client connecting from `source` (e.g. 127.0.0.5), so the server sees a distinct client address."""

    def __init__(self, port: int, source: str = "127.0.0.1", host: str = "127.0.0.1", timeout: float = 30.0) -> None:
        self.source = source
        super().__init__(host, port, timeout=timeout)

    def _create_socket(self, timeout: float) -> socket.socket:
        return socket.create_connection((self.host, self.port), timeout, source_address=(self.source, 0))


class RawPop3:
    """A line-level POP3 connection for bad input: send exactly these bytes, read exactly the replies."""

    def __init__(self, port: int, source: str = "127.0.0.1", timeout: float = 30.0) -> None:
        self.sock = socket.create_connection(("127.0.0.1", port), timeout, source_address=(source, 0))
        self.file = self.sock.makefile("rb")
        self.greeting = self.line()

    def line(self) -> bytes:
        return self.file.readline().rstrip(b"\r\n")

    def send(self, data: bytes) -> None:
        self.sock.sendall(data)

    def command(self, line: bytes) -> bytes:
        self.send(line + b"\r\n")
        return self.line()

    def multiline(self) -> list[bytes]:
        lines = []
        while (line := self.line()) != b".":
            lines.append(line)
        return lines

    def login(self, user: str, password: str = "secret") -> bytes:
        assert self.command(b"USER " + user.encode()).startswith(b"+OK")
        return self.command(b"PASS " + password.encode())

    def rest(self) -> bytes:
        """Everything the server sends until it closes the connection."""
        return self.file.read()

    def close(self) -> None:
        self.file.close()
        self.sock.close()


def message(n: int, recipient: str = "bob@example.test", body: bytes = b"Hello.\r\n") -> bytes:
    return (
        f"From: Alice <alice@sender.test>\r\nTo: {recipient}\r\nSubject: message {n}\r\n"
        f"Message-ID: <m{n}@sender.test>\r\n\r\n"
    ).encode() + body


def send(smtp_port: int, recipient: str, data: bytes) -> str:
    """Deliver one message through the gateway by SMTP; returns the ref of its 250 reply."""
    with smtplib.SMTP("127.0.0.1", smtp_port, timeout=60) as client:
        client.ehlo("client.sender.test")
        client.mail("alice@sender.test")
        code, text = client.rcpt(recipient)
        assert code == 250, text
        code, text = client.data(data)
    assert code == 250, text
    return text.decode().rpartition("ref=")[2].split()[0]


def wait_events(
    events: Callable[[], list[dict[str, Any]]], match: Callable[[dict[str, Any]], bool], count: int = 1
) -> list[dict[str, Any]]:
    """The events `match` selects, once there are `count` (the store writes in batches)."""
    deadline = time.monotonic() + 30
    while True:
        found = [e for e in events() if match(e)]
        if len(found) >= count or time.monotonic() > deadline:
            return found
        time.sleep(0.1)
