"""Postfix's side of the milter protocol, byte for byte, for tests that send exact (also broken) packets.

`MilterClient` speaks as Postfix 3.7 does: OPTNEG offering every action and option, each
stage's macros before its command, header values with their leading space, the body in CRLF.
It honours what the filter negotiated (stages marked "no reply" are not waited for).
"""

from __future__ import annotations

import socket
import struct
from dataclasses import dataclass

HEAD = struct.Struct("!I")
ALL_ACTIONS = 0x1FF
ALL_OPTIONS = 0x1FFFFF
NO_REPLY = {"C": 0x1000, "H": 0x2000, "M": 0x4000, "R": 0x8000, "T": 0x10000, "N": 0x40000, "B": 0x80000, "L": 0x80}
FINAL = "cartyd"
CHUNK = 65535  # Postfix's body chunks are at most this long  # replies that end a stage (continue, accept, reject, tempfail, reply code, discard)


def packet(command: str, data: bytes = b"") -> bytes:
    return HEAD.pack(len(data) + 1) + command.encode() + data


def cstrings(*values: str) -> bytes:
    return b"".join(value.encode() + b"\0" for value in values)


def macros(stage: str, **values: str) -> bytes:
    """A MACRO packet; `client_addr="1.2.3.4"` becomes `{client_addr}`, `i="QID"` stays `i`."""
    flat = [x for name, value in values.items() for x in (name if len(name) == 1 else "{" + name + "}", value)]
    return packet("D", stage.encode() + cstrings(*flat))


@dataclass
class Reply:
    command: str
    data: bytes

    @property
    def text(self) -> str:
        return self.data.rstrip(b"\0").decode()


class Closed(Exception):
    """The filter closed the connection."""


class MilterClient:
    def __init__(self, port: int, timeout: float = 30) -> None:
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=timeout)
        self.options = 0
        self.negotiated: tuple[int, int, int] | None = None

    def __enter__(self) -> MilterClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.sock.close()

    def send(self, data: bytes) -> None:
        self.sock.sendall(data)

    def _exactly(self, size: int) -> bytes:
        data = b""
        while len(data) < size:
            chunk = self.sock.recv(size - len(data))
            if not chunk:
                raise Closed(f"closed after {len(data)} of {size} bytes")
            data += chunk
        return data

    def read(self) -> Reply:
        (length,) = HEAD.unpack(self._exactly(4))
        data = self._exactly(length)
        return Reply(chr(data[0]), data[1:])

    def negotiate(self) -> Reply:
        self.send(packet("O", struct.pack("!III", 6, ALL_ACTIONS, ALL_OPTIONS)))
        reply = self.read()
        version, actions, options = struct.unpack_from("!III", reply.data)
        self.negotiated, self.options = (version, actions, options), options
        return reply

    def step(self, command: str, data: bytes = b"", before: bytes = b"") -> list[Reply]:
        """Send a stage's macros and command; the replies up to the one that ends it (none if it needs none)."""
        self.send(before + packet(command, data))
        if self.options & NO_REPLY.get(command, 0):
            return []
        replies = [self.read()]
        while replies[-1].command not in FINAL:
            replies.append(self.read())
        return replies

    def closed_by_filter(self, timeout: float = 10) -> bool:
        """True when the filter closes the connection within `timeout` seconds (whatever it sent first)."""
        self.sock.settimeout(timeout)
        try:
            while self.sock.recv(65536):
                pass
        except TimeoutError:
            return False
        except ConnectionError:
            return True
        return True

    def session(
        self,
        *,
        client: str = "127.0.0.1",
        sender: str = "alice@sender.test",
        recipient: str = "bob@example.test",
        queue_id: str = "4F1A2B3C4D",
        headers: tuple[tuple[str, str], ...] = (("From", " alice@sender.test"), ("Subject", " test")),
        body: bytes = b"Hello.\r\n",
    ) -> list[Reply]:
        """A whole transaction as Postfix sends it; the replies to the end of the message."""
        self.negotiate()
        self.step(
            "C",
            cstrings("[" + client + "]") + b"4" + struct.pack("!H", 40000) + cstrings(client),
            macros("C", client_addr=client, client_name="unknown", daemon_name="mx", j="mta.example.test"),
        )
        self.step("H", cstrings("client.sender.test"), macros("H"))
        self.step("M", cstrings(f"<{sender}>"), macros("M", mail_addr=sender))
        self.step("R", cstrings(f"<{recipient}>"), macros("R", rcpt_addr=recipient))
        self.step("T", b"", macros("T", i=queue_id))
        for name, value in headers:
            self.step("L", cstrings(name, value), macros("L", i=queue_id))
        self.step("N", b"", macros("N", i=queue_id))
        for start in range(0, len(body), CHUNK):  # as Postfix cuts it
            self.step("B", body[start : start + CHUNK], macros("B", i=queue_id))
        return self.step("E", b"", macros("E", i=queue_id))
