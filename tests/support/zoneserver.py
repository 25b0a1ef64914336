"""A small authoritative DNS server (UDP and TCP) for zones that change per test case.

For the openspf RFC 7208 suite, whose zones include answers a real server cannot be told to give:
"TIMEOUT" (no answer at all), a fresh zone for every scenario. It speaks real DNS on loopback, so
the code under test uses its real resolver; it runs in a thread with its own event loop.

A zone maps a lower-case name to a list of (type, value) records, or to records plus the marker
"TIMEOUT" (queries for types not listed get no answer). Names not in the zone are NXDOMAIN;
names starting with "error." time out. A CNAME is followed one level, as in the suite's harness.
"""

from __future__ import annotations

import asyncio
import struct
import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import dns.flags
import dns.message
import dns.name
import dns.rcode
import dns.rdata
import dns.rdataclass
import dns.rdatatype
import dns.rrset

Record = tuple[str, Any]
Zone = dict[str, list[Record | str]]


def _name(text: str) -> dns.name.Name:
    """A name from its labels as they are (spaces, '%' and the like included)."""
    return dns.name.Name([label.encode() for label in text.rstrip(".").split(".")] + [b""])


def _rdata(rtype: str, value: Any) -> dns.rdata.Rdata:
    if rtype == "TXT":
        strings = [value] if isinstance(value, str) else list(value)
        chunks: list[bytes] = []
        for text in strings:
            raw = text.encode("utf-8")
            chunks.extend(raw[i : i + 255] for i in range(0, len(raw), 255)) if raw else chunks.append(b"")
        quoted = " ".join('"' + "".join(f"\\{b:03d}" for b in chunk) + '"' for chunk in chunks) or '""'
        return dns.rdata.from_text(dns.rdataclass.IN, dns.rdatatype.TXT, quoted)
    if rtype == "MX":
        preference, exchange = value
        return dns.rdata.from_text(dns.rdataclass.IN, dns.rdatatype.MX, f"{preference} {exchange}.")
    if rtype in ("PTR", "CNAME"):
        return dns.rdata.from_text(dns.rdataclass.IN, dns.rdatatype.from_text(rtype), f"{value}.")
    return dns.rdata.from_text(dns.rdataclass.IN, dns.rdatatype.from_text(rtype), str(value))


class ZoneServer:
    def __init__(self) -> None:
        self.zone: Zone = {}
        self.port = 0
        self._loop = asyncio.new_event_loop()
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._run, name="zoneserver", daemon=True)

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    # ------------------------------------------------------------------ answers
    def answer(self, wire: bytes) -> bytes | None:
        """The response to a query, or None to stay silent (a timeout)."""
        query = dns.message.from_wire(wire)
        response = dns.message.make_response(query)
        response.flags |= dns.flags.AA
        question = query.question[0]
        qname = ".".join(label.decode("utf-8", "replace") for label in question.name.labels if label)
        qtype = dns.rdatatype.to_text(question.rdtype)
        found = self._records(qname, qtype)
        if found is None:
            return None
        rcode, records = found
        response.set_rcode(rcode)
        for owner, rtype, value in records:
            rrset = dns.rrset.RRset(_name(owner), dns.rdataclass.IN, dns.rdatatype.from_text(rtype))
            rrset.add(_rdata(rtype, value), ttl=0)
            response.answer.append(rrset)
        return response.to_wire(max_size=65535)

    def _records(self, name: str, qtype: str) -> tuple[int, list[tuple[str, str, Any]]] | None:
        key = name.lower().rstrip(".")
        if key.startswith("error."):
            return None
        entries = self.zone.get(key)
        if entries is None:
            return dns.rcode.NXDOMAIN, []
        records: list[tuple[str, str, Any]] = []
        timeout = False
        for entry in entries:
            if entry == "TIMEOUT":
                timeout = True
                continue
            rtype, value = entry
            if rtype == qtype:
                records.append((name, rtype, value))
            elif rtype == "CNAME" and qtype != "CNAME":
                records.append((name, "CNAME", value))
                target = self._records(str(value), qtype)
                if target is not None:
                    records.extend((owner, t, v) for owner, t, v in target[1] if t != "CNAME")
        if timeout and not any(rtype == qtype for _, rtype, _ in records):
            return None
        return dns.rcode.NOERROR, records

    # ------------------------------------------------------------------ transport
    def _run(self) -> None:
        asyncio.set_event_loop(self._loop)
        self._loop.run_until_complete(self._serve())
        self._ready.set()
        self._loop.run_forever()

    async def _serve(self) -> None:
        server = self

        class Udp(asyncio.DatagramProtocol):
            def connection_made(self, transport: asyncio.BaseTransport) -> None:
                self.transport = transport

            def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
                response = server.answer(data)
                if response is None:
                    return
                if len(response) > 1232:  # truncate: the client asks again over TCP
                    query = dns.message.from_wire(data)
                    short = dns.message.make_response(query)
                    short.flags |= dns.flags.TC
                    response = short.to_wire()
                self.transport.sendto(response, addr)  # type: ignore[attr-defined]

        async def tcp(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            try:
                while True:
                    (length,) = struct.unpack("!H", await reader.readexactly(2))
                    response = server.answer(await reader.readexactly(length))
                    if response is not None:
                        writer.write(struct.pack("!H", len(response)) + response)
                        await writer.drain()
            except (asyncio.IncompleteReadError, ConnectionError):
                pass
            finally:
                writer.close()

        tcp_server = await asyncio.start_server(tcp, "127.0.0.1", 0)
        self.port = tcp_server.sockets[0].getsockname()[1]
        await self._loop.create_datagram_endpoint(Udp, local_addr=("127.0.0.1", self.port))

    def start(self) -> None:
        self._thread.start()
        if not self._ready.wait(30):
            raise TimeoutError("zone server did not start")

    def stop(self) -> None:
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)


@contextmanager
def zone_server(zone: Zone | None = None) -> Iterator[ZoneServer]:
    server = ZoneServer()
    server.zone = zone or {}
    server.start()
    try:
        yield server
    finally:
        server.stop()


def suite_zone(zonedata: dict[str, Sequence[Any]]) -> Zone:
    """The openspf suite's zonedata as a Zone: SPF records become TXT unless the name has TXT itself."""
    zone: Zone = {}
    for name, items in zonedata.items():
        entries: list[Record | str] = []
        spf: list[Record] = []
        has_txt = False
        for item in items:
            if item == "TIMEOUT":
                entries.append("TIMEOUT")
                continue
            ((rtype, value),) = item.items()
            if rtype == "TXT":
                has_txt = True
                if value != "NONE":
                    entries.append(("TXT", value))
            elif rtype == "SPF":
                if value != "NONE":
                    spf.append(("TXT", value))
            else:
                entries.append((rtype, value))
        if not has_txt:
            entries.extend(spf)
        zone[name.lower().rstrip(".")] = entries
    return zone
