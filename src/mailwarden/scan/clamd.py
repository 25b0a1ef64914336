"""ClamAV's clamd: the INSTREAM command, streamed from the spool in 64 KiB chunks.

Connections run in clamd's session mode (IDSESSION), so a pooled connection serves many scans;
replies then carry the request number ("1: stream: OK"). clamd refuses streams longer than its
StreamMaxLength ("INSTREAM size limit exceeded. ERROR") and ends the session; a message longer
than the configured `max_stream` is therefore not sent at all, and the caller decides (tempfail
or accept unscanned). Everything else that goes wrong - refused connection, a reset in the middle
of a stream, a timeout, an unparsable answer - is a `ScannerError`, never a clean result.
"""

from __future__ import annotations

import asyncio
import re
import socket
import struct
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Final

from mailwarden.config import parse_hostport
from mailwarden.scan.net import Connection, Pool, ScannerError, chunks, send_message
from mailwarden.spool import Spool

_REPLY: Final = re.compile(r"^(?:\d+: )?(?:stream|instream\(\S+\)): (?:(.+) FOUND|OK)$")
_TOO_LONG: Final = "size limit exceeded"


class StreamTooLong(ScannerError):
    """The message is longer than clamd's StreamMaxLength."""


@dataclass(frozen=True)
class ClamdResult:
    virus: str | None  # the signature name when something was found
    reply: str  # clamd's answer, for the event


def frames(pieces: Iterable[bytes | memoryview]) -> Iterable[bytes | memoryview]:
    """INSTREAM framing: each chunk behind its 4-byte big-endian length, then a zero length."""
    for piece in pieces:
        yield struct.pack("!L", len(piece))
        yield piece
    yield b"\0\0\0\0"


def parse(reply: str) -> ClamdResult:
    if _TOO_LONG in reply:
        raise StreamTooLong(reply)
    match = _REPLY.match(reply)
    if match is None:
        raise ScannerError(f"unexpected answer from clamd: {reply[:200]!r}")
    return ClamdResult(match.group(1), reply)


async def _start_session(connection: Connection) -> None:
    connection.writer.write(b"zIDSESSION\0")
    await connection.writer.drain()


class ClamdClient:
    def __init__(self, address: str, *, timeout: float, max_stream: int, pool_size: int = 4) -> None:
        self.address = address
        self.timeout = timeout
        self.max_stream = max_stream
        self.pool = Pool(address, size=pool_size, connect_timeout=min(timeout, 5.0), on_open=_start_session)

    async def scan(self, spool: Spool) -> ClamdResult:
        if spool.size > self.max_stream:
            raise StreamTooLong(f"{spool.size} bytes exceed clamd's stream limit of {self.max_stream} bytes")
        try:
            async with asyncio.timeout(self.timeout):
                for attempt in (1, 2):
                    connection = await self.pool.acquire()
                    try:
                        result = await self._instream(connection, spool)
                    except (ConnectionError, asyncio.IncompleteReadError, EOFError) as exc:
                        connection.close()
                        if connection.reused and attempt == 1:
                            continue  # the idle session was closed by clamd: once more, on a fresh one
                        raise ScannerError(f"clamd closed the connection during the scan ({exc})") from None
                    except BaseException:
                        connection.close()
                        raise
                    self.pool.release(connection, reusable=True)
                    return result
        except TimeoutError:
            raise ScannerError(f"clamd did not answer within {self.timeout:g}s") from None
        raise AssertionError("unreachable")

    async def _instream(self, connection: Connection, spool: Spool) -> ClamdResult:
        await send_message(connection.writer, b"zINSTREAM\0", spool, frames)
        answer = await connection.reader.readuntil(b"\0")
        return parse(answer[:-1].decode("utf-8", "replace").strip())

    def close(self) -> None:
        self.pool.close()


def scan_bytes(address: str, data: bytes, timeout: float) -> ClamdResult:
    """A blocking one-shot INSTREAM, for the worker processes that pinpoint an infected attachment."""
    if address.startswith("/"):
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(timeout)
        target: str | tuple[str, int] = address
    else:
        sock = socket.socket(socket.AF_INET6 if ":" in parse_hostport(address)[0] else socket.AF_INET)
        sock.settimeout(timeout)
        target = parse_hostport(address)
    with sock:
        try:
            sock.connect(target)
            sock.sendall(b"zINSTREAM\0")
            for frame in frames(chunks(data)):
                sock.sendall(frame)
            answer = b""
            while not answer.endswith(b"\0"):
                piece = sock.recv(4096)
                if not piece:
                    break
                answer += piece
        except OSError as exc:
            raise ScannerError(f"clamd at {address}: {exc}") from None
    return parse(answer.rstrip(b"\0").decode("utf-8", "replace").strip())
