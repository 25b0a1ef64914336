"""A syslog receiver, so rsyslog or syslog-ng can forward mail logs to mailwarden.

Understands RFC 5424 (`<PRI>1 TIMESTAMP HOST APP PROCID MSGID [SD] MSG`) and RFC 3164 / the
traditional form (`<PRI>Mmm dd HH:MM:SS HOST TAG: MSG`), over UDP (one message per datagram) and
TCP (RFC 6587: octet counting `LEN SP MSG`, or one message per line). A message becomes one log
line: a line feed inside it is written as `#012` (as rsyslog does), so a sender cannot make one
message look like two. Messages longer than `max_line` bytes are cut.
"""

from __future__ import annotations

import asyncio
import logging
import re
from collections.abc import Callable
from typing import Any, Final

from mailwarden.listening import shown

log = logging.getLogger(__name__)

Deliver = Callable[[str, str], None]  # (origin, line)

_PRI: Final = re.compile(r"<(\d{1,3})>")
_RFC5424: Final = re.compile(r"1 (\S+) (\S+) (\S+) (\S+) (\S+) ")
_SD_ELEMENT: Final = re.compile(r'\[(?:[^\]"\\]|"(?:[^"\\]|\\.)*"|\\.)*\]')
_TCP_IDLE_S: Final = 300.0


def to_line(message: str) -> str:
    """A received syslog message as a log line in the shapes `framing.py` reads."""
    message = message.rstrip("\r\n\x00").replace("\n", "#012")
    found = _PRI.match(message)
    if found is not None:
        message = message[found.end() :]
    header = _RFC5424.match(message)
    if header is None:
        return message  # RFC 3164: already `Mmm dd HH:MM:SS host tag: msg`
    stamp, host, app, procid, _ = header.groups()
    rest = message[header.end() :]
    if rest.startswith("-"):
        rest = rest[1:]
    else:
        while (element := _SD_ELEMENT.match(rest)) is not None:
            rest = rest[element.end() :]
    rest = rest.lstrip(" ").removeprefix("\ufeff").lstrip(" ")  # rsyslog's %msg% keeps the space after the tag
    tag = "" if app == "-" else app + ("" if procid == "-" else f"[{procid}]") + ": "
    if stamp == "-":
        return f"{host} {tag}{rest}"
    return f"{stamp} {host if host != '-' else 'localhost'} {tag}{rest}"


class _Datagrams(asyncio.DatagramProtocol):
    def __init__(self, deliver: Deliver, max_line: int) -> None:
        self.deliver = deliver
        self.max_line = max_line

    def datagram_received(self, data: bytes, addr: tuple[str | Any, int]) -> None:
        text = data[: self.max_line].decode("utf-8", "backslashreplace")
        self.deliver(f"syslog-udp:{addr[0]}", to_line(text))


async def _serve_stream(
    reader: asyncio.StreamReader, writer: asyncio.StreamWriter, deliver: Deliver, max_line: int
) -> None:
    peer = writer.get_extra_info("peername")
    origin = f"syslog-tcp:{peer[0] if peer else '?'}"
    try:
        while True:
            first = await asyncio.wait_for(reader.read(1), _TCP_IDLE_S)
            if not first:
                return
            if first.isdigit():  # octet counting: LEN SP MSG
                digits = first + await asyncio.wait_for(reader.readuntil(b" "), _TCP_IDLE_S)
                length = int(digits[:-1]) if digits[:-1].isdigit() else 0
                data = await asyncio.wait_for(reader.readexactly(length), _TCP_IDLE_S)
            else:  # non-transparent framing: up to the line feed
                data = first + await asyncio.wait_for(reader.readuntil(b"\n"), _TCP_IDLE_S)
            deliver(origin, to_line(data[:max_line].decode("utf-8", "backslashreplace")))
    except (asyncio.IncompleteReadError, asyncio.LimitOverrunError, TimeoutError, ConnectionError, ValueError):
        return
    except asyncio.CancelledError:  # the receiver is stopping; the peer reconnects to the next one
        return
    finally:
        writer.close()


class SyslogReceiver:
    """Listens on the configured addresses and hands each message, as a line, to `deliver`."""

    def __init__(self, deliver: Deliver, *, max_line: int = 65_536) -> None:
        self.deliver = deliver
        self.max_line = max_line
        self._servers: list[asyncio.base_events.Server] = []
        self._transports: list[asyncio.DatagramTransport] = []
        self.bound: list[str] = []

    async def start(self, addresses: list[tuple[str, int]], transports: list[str]) -> list[str]:
        loop = asyncio.get_running_loop()
        for host, port in addresses:
            if "tcp" in transports:
                server = await asyncio.start_server(
                    lambda r, w: _serve_stream(r, w, self.deliver, self.max_line),
                    host,
                    port,
                    limit=self.max_line + 64,
                )
                self._servers.append(server)
                self.bound.extend(f"tcp:{shown(s)}" for s in server.sockets)
            if "udp" in transports:
                transport, _ = await loop.create_datagram_endpoint(
                    lambda: _Datagrams(self.deliver, self.max_line), local_addr=(host, port)
                )
                self._transports.append(transport)
                name = transport.get_extra_info("sockname")
                self.bound.append(f"udp:{name[0]}:{name[1]}")
        return self.bound

    async def stop(self) -> None:
        for transport in self._transports:
            transport.close()
        for server in self._servers:
            server.close()
            await server.wait_closed()
