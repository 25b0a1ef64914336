"""Connections to the scanners: "host:port" or a unix socket path, with timeouts and a small pool.

A pooled connection may have been closed by the scanner while it sat idle (clamd's IdleTimeout,
an HTTP keep-alive limit); a request that fails on a reused connection before any answer came is
therefore retried once on a fresh one. A fresh connection that fails means the scanner is down.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import BinaryIO, Final

from mailwarden.config import parse_hostport
from mailwarden.spool import Spool

CHUNK: Final = 64 * 1024


class ScannerError(Exception):
    """The scanner could not be reached or gave no usable answer (a temporary condition)."""


@dataclass
class Connection:
    reader: asyncio.StreamReader
    writer: asyncio.StreamWriter
    reused: bool = False

    def close(self) -> None:
        self.writer.close()


Opener = Callable[[Connection], Awaitable[None]]


class Pool:
    def __init__(self, address: str, *, size: int, connect_timeout: float, on_open: Opener | None = None) -> None:
        self.address = address
        self.size = size
        self.connect_timeout = connect_timeout
        self.on_open = on_open
        self._idle: list[Connection] = []

    async def connect(self) -> Connection:
        try:
            async with asyncio.timeout(self.connect_timeout):
                if self.address.startswith("/"):
                    reader, writer = await asyncio.open_unix_connection(self.address, limit=1024 * 1024)
                else:
                    host, port = parse_hostport(self.address)
                    reader, writer = await asyncio.open_connection(host, port, limit=1024 * 1024)
                connection = Connection(reader, writer)
                if self.on_open is not None:
                    await self.on_open(connection)
                return connection
        except TimeoutError:
            raise ScannerError(f"no connection to {self.address} within {self.connect_timeout:g}s") from None
        except OSError as exc:
            raise ScannerError(f"cannot connect to {self.address}: {exc.strerror or exc}") from None

    async def acquire(self) -> Connection:
        while self._idle:
            connection = self._idle.pop()
            if not connection.reader.at_eof() and not connection.writer.is_closing():
                connection.reused = True
                return connection
            connection.close()
        return await self.connect()

    def release(self, connection: Connection, *, reusable: bool) -> None:
        if reusable and len(self._idle) < self.size and not connection.writer.is_closing():
            self._idle.append(connection)
        else:
            connection.close()

    def close(self) -> None:
        while self._idle:
            self._idle.pop().close()


def chunks(source: bytes | BinaryIO, size: int = CHUNK) -> Iterator[bytes | memoryview]:
    """The message in pieces: slices of an in-memory message, reads of a spool file."""
    if isinstance(source, bytes):
        view = memoryview(source)
        for start in range(0, len(view), size):
            yield view[start : start + size]
        return
    while piece := source.read(size):
        yield piece


Framing = Callable[[Iterable[bytes | memoryview]], Iterable[bytes | memoryview]]


async def send_message(writer: asyncio.StreamWriter, head: bytes, spool: Spool, framing: Framing | None = None) -> None:
    """`head`, then the message from the spool chunk by chunk (optionally framed), never all in memory."""
    writer.write(head)
    source = spool.content() if spool.in_memory else spool.open()
    try:
        pieces = chunks(source)
        for piece in framing(pieces) if framing is not None else pieces:
            writer.write(piece)
            if writer.transport.get_write_buffer_size() > 4 * CHUNK:
                await writer.drain()
        await writer.drain()
    finally:
        if not isinstance(source, bytes):
            source.close()
