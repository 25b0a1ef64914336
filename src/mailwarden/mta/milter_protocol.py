"""The milter protocol (Sendmail 8's libmilter wire format, version 6), as Postfix 3.x speaks it.

A packet is a 32-bit length (network order, counting the command byte), one command byte and
the command's data; strings in it end with a NUL. Postfix opens one connection per SMTP
session, negotiates (`OPTNEG`), sends each stage's macros (`MACRO`) before the stage's command
and waits for a reply to every command we did not mark as needing none. This module only
decodes and encodes; `mta/milter.py` runs the conversation.

What Postfix relays is stranger text (HELO names, addresses, headers, the body): every decoder
checks lengths and terminators and raises `ProtocolError` with what was wrong, never an
IndexError, and never reads more than `max_packet` bytes for one packet.
"""

from __future__ import annotations

import asyncio
import struct
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Final

VERSION: Final = 6

# Commands from the MTA (SMFIC_*).
ABORT: Final = ord("A")
BODY: Final = ord("B")
CONNECT: Final = ord("C")
MACRO: Final = ord("D")
END_OF_MESSAGE: Final = ord("E")
HELO: Final = ord("H")
QUIT_NEW_CONNECTION: Final = ord("K")
HEADER: Final = ord("L")
MAIL: Final = ord("M")
END_OF_HEADERS: Final = ord("N")
NEGOTIATE: Final = ord("O")
QUIT: Final = ord("Q")
RCPT: Final = ord("R")
DATA: Final = ord("T")
UNKNOWN: Final = ord("U")
COMMANDS: Final = frozenset(
    {ABORT, BODY, CONNECT, MACRO, END_OF_MESSAGE, HELO, QUIT_NEW_CONNECTION, HEADER, MAIL, END_OF_HEADERS}
    | {NEGOTIATE, QUIT, RCPT, DATA, UNKNOWN}
)

# Replies and message changes from the filter (SMFIR_*).
CONTINUE: Final = b"c"
ACCEPT: Final = b"a"
TEMPFAIL: Final = b"t"
REPLYCODE: Final = b"y"
ADD_HEADER: Final = b"h"
INSERT_HEADER: Final = b"i"
CHANGE_HEADER: Final = b"m"
NEGOTIATE_REPLY: Final = b"O"

# Actions the filter may take (SMFIF_*), offered by the MTA and asked for in our OPTNEG.
ADD_HEADERS: Final = 0x01
CHANGE_HEADERS: Final = 0x10
SET_SYMBOL_LIST: Final = 0x100

# Protocol options (SMFIP_*): "no reply needed" for a stage, and headers with their leading space.
NR_CONNECT: Final = 0x1000
NR_HELO: Final = 0x2000
NR_MAIL: Final = 0x4000
NR_DATA: Final = 0x10000
NR_UNKNOWN: Final = 0x20000
NR_END_OF_HEADERS: Final = 0x40000
NR_BODY: Final = 0x80000
NR_HEADER: Final = 0x80
NO_UNKNOWN: Final = 0x100
HEADER_LEADING_SPACE: Final = 0x100000

# Stages whose macros the filter may name in its OPTNEG (SMFIM_*), by the command they come with.
MACRO_STAGES: Final[Mapping[int, int]] = {
    CONNECT: 0,
    HELO: 1,
    MAIL: 2,
    RCPT: 3,
    DATA: 4,
    END_OF_MESSAGE: 5,
    END_OF_HEADERS: 6,
}

HEAD: Final = struct.Struct("!I")
NEGOTIATION: Final = struct.Struct("!III")
PORT: Final = struct.Struct("!H")
CHUNK_LIMIT: Final = 65535  # Postfix and Sendmail send body chunks of at most this (MILTER_CHUNK_SIZE)


class ProtocolError(Exception):
    """The peer broke the protocol; the message says how. The connection must be closed."""


@dataclass(frozen=True, slots=True)
class Negotiation:
    version: int
    actions: int
    options: int


@dataclass(frozen=True, slots=True)
class ConnectInfo:
    hostname: str  # Postfix: the verified client name, or "[address]" / "unknown"
    family: str  # "4", "6", "L" (unix socket) or "U" (unknown)
    port: int
    address: str


class PacketReader:
    """The packets of a connection, cut out of whole reads of the stream.

    Postfix writes a stage's macros with its command, and the header fields and body chunks of a
    message, in one go: one read yields a dozen packets, and a packet already read costs no
    await. A packet longer than `max_packet` (or its command's entry in `limits`) is refused as
    soon as its length is read, before its data, so a length of 2 GB costs nothing; the rest of a
    packet longer than what was read is read exactly, so no more than one read of 64 KiB is
    buffered beyond the packet.
    """

    def __init__(self, reader: asyncio.StreamReader, max_packet: int, limits: Mapping[int, int] | None = None) -> None:
        self._reader = reader
        self._max_packet = max_packet
        self._limits = dict(limits or {})
        self._buffer = b""
        self._at = 0  # where the next packet starts in the buffer

    async def next(self) -> tuple[int, bytes]:
        """The next packet as (command, data); `IncompleteReadError` when the peer closed in between."""
        while len(self._buffer) - self._at < HEAD.size + 1:
            await self._fill()
        (length,) = HEAD.unpack_from(self._buffer, self._at)
        command = self._buffer[self._at + HEAD.size]
        if length == 0:
            raise ProtocolError("a packet of length 0 (it must hold at least its command byte)")
        if command not in COMMANDS:
            raise ProtocolError(f"unknown command {printable_byte(command)}")
        limit = self._limits.get(command, self._max_packet)
        if length > limit:
            raise ProtocolError(f"a {printable_byte(command)} packet of {length} bytes, more than the {limit} allowed")
        start = self._at + HEAD.size + 1
        missing = start + length - 1 - len(self._buffer)
        if missing > 0:  # the rest of a long packet (a body chunk) is read as such, in one piece
            data = self._buffer[start:] + await self._reader.readexactly(missing)
            self._buffer, self._at = b"", 0
            return command, data
        self._at = start + length - 1
        return command, self._buffer[start : self._at]

    async def _fill(self) -> None:
        """Read what has arrived (at least a byte) behind the unread rest of the buffer."""
        more = await self._reader.read(1 << 16)
        rest = self._buffer[self._at :]
        if not more:
            raise asyncio.IncompleteReadError(rest, HEAD.size + 1)
        self._buffer = rest + more
        self._at = 0


def printable_byte(value: int) -> str:
    return repr(chr(value)) if 0x20 < value < 0x7F else f"0x{value:02x}"


def strings(data: bytes, count: int | None = None) -> list[str]:
    """The NUL-terminated strings of `data` (exactly `count` when given), as text."""
    if data[-1:] != b"\0":
        raise ProtocolError("a string without its terminating NUL")
    parts = data[:-1].split(b"\0")
    if count is not None and len(parts) != count:
        raise ProtocolError(f"{len(parts)} strings where {count} belong")
    return [part.decode("utf-8", "replace") for part in parts]


def negotiation(data: bytes) -> Negotiation:
    if len(data) < NEGOTIATION.size:
        raise ProtocolError(f"an OPTNEG of {len(data)} bytes (it needs {NEGOTIATION.size})")
    return Negotiation(*NEGOTIATION.unpack_from(data))


def macros(data: bytes) -> tuple[int, dict[str, str]]:
    """(the command they belong to, {name: value}); names as Postfix sends them, `{client_addr}` or `i`."""
    if not data:
        raise ProtocolError("a MACRO packet without the command it belongs to")
    if len(data) == 1:
        return data[0], {}
    pairs = strings(data[1:])
    if len(pairs) % 2:
        raise ProtocolError("a MACRO packet with a name but no value")
    return data[0], dict(zip(pairs[::2], pairs[1::2], strict=True))


def connect_info(data: bytes) -> ConnectInfo:
    end = data.find(b"\0")
    if end < 0 or end + 1 >= len(data):
        raise ProtocolError("a CONNECT without host name and address family")
    hostname = data[:end].decode("utf-8", "replace")
    family = chr(data[end + 1])
    rest = data[end + 2 :]
    if family == "U":
        return ConnectInfo(hostname, family, 0, "")
    if family not in "46L" or len(rest) < PORT.size + 1:
        raise ProtocolError(f"a CONNECT with address family {family!r} and {len(rest)} bytes of address")
    (port,) = PORT.unpack_from(rest)
    (address,) = strings(rest[PORT.size :], 1)
    return ConnectInfo(hostname, family, port, address)


def header(data: bytes) -> tuple[str, bytes]:
    """(name, value) of a HEADER; the value's bytes as Postfix sends them (folded lines joined by LF)."""
    end = data.find(b"\0")
    if end <= 0 or not data.endswith(b"\0") or data.count(b"\0") != 2:
        raise ProtocolError("a HEADER that is not a name and a value, each ending with NUL")
    return data[:end].decode("utf-8", "replace"), data[end + 1 : -1]


# ---------------------------------------------------------------------------- encoding
def packet(command: bytes, data: bytes = b"") -> bytes:
    return HEAD.pack(len(data) + 1) + command + data


def negotiation_reply(actions: int, options: int, wanted: Mapping[int, str]) -> bytes:
    """Our OPTNEG: what we will do, which stages need no reply, and the macros we want per stage."""
    data = NEGOTIATION.pack(VERSION, actions, options)
    for command, names in wanted.items():
        data += HEAD.pack(MACRO_STAGES[command]) + names.encode() + b"\0"
    return packet(NEGOTIATE_REPLY, data)


def reply_code(reply: str) -> bytes:
    """SMFIR_REPLYCODE: an SMTP reply ("550 5.7.1 text", continuation lines joined by CRLF) Postfix sends as it is.

    Postfix reads the text the way Sendmail does, as a format string: a `%` must be doubled.
    """
    text = reply.replace("%", "%%").encode("utf-8", "replace").replace(b"\0", b"")
    return packet(REPLYCODE, text + b"\0")


def insert_header(index: int, name: str, value: str) -> bytes:
    """SMFIR_INSHEADER: a header field at `index` (0 = on top); folded lines joined by LF, as Postfix keeps them."""
    return packet(INSERT_HEADER, HEAD.pack(index) + _header_data(name, value))


def change_header(index: int, name: str, value: str) -> bytes:
    """SMFIR_CHGHEADER: the `index`-th (from 1) field called `name` gets `value`; an empty value removes it."""
    return packet(CHANGE_HEADER, HEAD.pack(index) + _header_data(name, value))


def _header_data(name: str, value: str) -> bytes:
    return name.encode() + b"\0" + value.replace("\r\n", "\n").encode("utf-8", "replace").replace(b"\0", b"") + b"\0"
