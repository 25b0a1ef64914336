"""The PROXY protocol header (HAProxy's proxy-protocol.txt, v1 text and v2 binary) read from a byte buffer.

`parse` looks at what has arrived so far and says: wait for more (None), or here is the client's
address (and how many bytes the header took), or why the header is unusable. The problems are
named as aiosmtpd's parser named them, so replies and events stay what they were.
"""

from __future__ import annotations

import ipaddress
import re
import struct
from dataclasses import dataclass
from typing import Final

V1_SIGNATURE: Final = b"PROXY"
V2_SIGNATURE: Final = b"\r\n\r\n\x00\r\nQUIT\n"
V1_MAX: Final = 107  # the longest v1 line, CRLF included
_ADDRESS_CHARS: Final = re.compile(r"^[0-9a-fA-F.:]+$")
_PORT: Final = re.compile(r"^[1-9]\d{0,4}|0$")
_V2_ADDRESSES: Final = {0x11: "!4s4sHH", 0x12: "!4s4sHH", 0x21: "!16s16sHH", 0x22: "!16s16sHH"}


@dataclass(frozen=True)
class Proxied:
    """A usable header: the client's address, and the bytes the header took from the buffer."""

    client_ip: str
    client_port: int
    length: int


@dataclass(frozen=True)
class Unusable:
    problem: str


def parse(buffer: bytes | bytearray) -> Proxied | Unusable | None:
    """The header at the start of `buffer`; None while more bytes are needed."""
    head = bytes(buffer[:5])
    if len(head) < 5:
        return None
    if head == V1_SIGNATURE:
        return _v1(buffer)
    if head == V2_SIGNATURE[:5]:
        return _v2(buffer)
    return Unusable("invalid PROXY header (PROXY unrecognized signature)")


def _invalid(problem: str) -> Unusable:
    return Unusable(f"invalid PROXY header ({problem})")


def _v1(buffer: bytes | bytearray) -> Proxied | Unusable | None:
    end = buffer.find(b"\n")
    if end < 0:
        return _invalid("PROXYv1 header too long") if len(buffer) > V1_MAX else None
    line = bytes(buffer[: end + 1])
    if len(line) > V1_MAX:
        return _invalid("PROXYv1 header too long")
    if not line.endswith(b"\r\n"):
        return _invalid("PROXYv1 malformed")
    parts = line[5:-2].split(b" ")
    if parts[0] != b"" or len(parts) < 2:
        return _invalid("PROXYv1 wrong signature")
    protocol, fields = parts[1], [p.decode("latin-1") for p in parts[2:]]
    if protocol == b"UNKNOWN":
        return _invalid("no source address")
    version = 4 if protocol.endswith(b"4") else 6 if protocol.endswith(b"6") else 0
    if not version:
        return _invalid("PROXYv1 unrecognized family")
    if not protocol.startswith(b"TCP"):
        return _invalid("PROXYv1 unrecognized protocol")
    try:
        if len(fields) < 2 or not all(_ADDRESS_CHARS.match(f) for f in fields[:2]):
            raise ValueError
        source, destination = ipaddress.ip_address(fields[0]), ipaddress.ip_address(fields[1])
    except ValueError:
        return _invalid("PROXYv1 address malformed")
    if not source.version == destination.version == version:
        return _invalid(f"PROXYv1 address not IPv{version}")
    if len(fields) < 4 or not all(_PORT.match(f) for f in fields[2:4]):
        return _invalid("PROXYv1 port malformed")
    source_port, destination_port = int(fields[2]), int(fields[3])
    if source_port > 65535:
        return _invalid("PROXYv1 src port out of bounds")
    if destination_port > 65535:
        return _invalid("PROXYv1 dst port out of bounds")
    if len(fields) > 4:
        return _invalid("PROXYv1 unrecognized extraneous data")
    return Proxied(str(source), source_port, len(line))


def _v2(buffer: bytes | bytearray) -> Proxied | Unusable | None:
    if len(buffer) < 16:
        return None
    if bytes(buffer[:12]) != V2_SIGNATURE:
        return _invalid("PROXYv2 wrong signature")
    version_command, family_protocol, length = struct.unpack("!BBH", buffer[12:16])
    if version_command & 0xF0 != 0x20:
        return _invalid("PROXYv2 illegal version")
    if version_command & 0x0F not in (0, 1):
        return _invalid("PROXYv2 unsupported command")
    if family_protocol >> 4 not in (0, 1, 2, 3):
        return _invalid("PROXYv2 unsupported family")
    if family_protocol & 0x0F not in (0, 1, 2):
        return _invalid("PROXYv2 unsupported protocol")
    if len(buffer) < 16 + length:
        return None
    layout = _V2_ADDRESSES.get(family_protocol)
    if layout is None:  # UNIX or unspecified (a LOCAL health check): no address to use
        return _invalid("no source address")
    size = struct.calcsize(layout)
    if length < size:
        return _invalid("PROXYv2 truncated address")
    source, _destination, source_port, _destination_port = struct.unpack(layout, buffer[16 : 16 + size])
    return Proxied(str(ipaddress.ip_address(source)), source_port, 16 + length)
