"""Spam scoring: rspamd (HTTP /checkv2, the default) or SpamAssassin's spamd (SPAMC/1.5 SYMBOLS).

Both get the message streamed from the spool and return one `SpamResult` (score, the scanner's
own threshold, symbols strongest first); the thresholds that decide (reject / tag) are ours, in
the config, so both engines are judged alike. rspamd also gets the envelope as HTTP headers
(client IP, HELO, MAIL FROM, each RCPT, the client's verified hostname, our name, the ref as
Queue-Id), because many of its rules look at the SMTP dialogue rather than the message.
Any failure to get a well-formed answer within the timeout is a `ScannerError`.
"""

from __future__ import annotations

import asyncio
import json
import re
from dataclasses import dataclass, field
from typing import Any, Final, Protocol

from mailwarden.scan.net import Connection, Pool, ScannerError, send_message
from mailwarden.spool import Spool
from mailwarden.text import ascii_printable

_SPAMD_STATUS: Final = re.compile(r"^SPAMD/\d+\.\d+ (\d+) (\S+)")
_SPAMD_SCORE: Final = re.compile(r"^Spam: *(\w+) *; *(-?[\d.]+) */ *(-?[\d.]+)", re.I | re.M)


@dataclass(frozen=True)
class Envelope:
    client_ip: str
    helo: str | None
    sender: str
    recipients: tuple[str, ...]
    client_name: str | None
    queue_id: str
    our_hostname: str


@dataclass(frozen=True)
class SpamResult:
    engine: str
    score: float
    required: float  # the scanner's own threshold, for the record
    symbols: tuple[tuple[str, float | None], ...] = field(default_factory=tuple)  # strongest first
    action: str | None = None  # rspamd's suggested action

    def top(self, count: int = 5) -> str:
        shown = [name if value is None else f"{name} {value:g}" for name, value in self.symbols[:count]]
        return ", ".join(shown) or "no symbols"

    def detail(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "engine": self.engine,
            "score": self.score,
            "required": self.required,
            "symbols": {name: value for name, value in self.symbols[:50]},
        }
        if self.action is not None:
            out["action"] = self.action
        return out


class SpamScanner(Protocol):
    engine: str

    async def check(self, spool: Spool, envelope: Envelope) -> SpamResult: ...

    def close(self) -> None: ...


def _header_value(value: str) -> str:
    return ascii_printable(value, 500)


class RspamdClient:
    engine = "rspamd"

    def __init__(self, address: str, *, timeout: float, pool_size: int = 4) -> None:
        self.address = address
        self.timeout = timeout
        self.pool = Pool(address, size=pool_size, connect_timeout=min(timeout, 5.0))

    async def check(self, spool: Spool, envelope: Envelope) -> SpamResult:
        headers = [
            ("Host", "rspamd"),
            ("Content-Length", str(spool.size)),
            ("IP", envelope.client_ip),
            ("From", envelope.sender),
            ("Queue-Id", envelope.queue_id),
            ("MTA-Name", envelope.our_hostname),
            ("Hostname", envelope.client_name or "unknown"),
        ]
        if envelope.helo:
            headers.append(("Helo", envelope.helo))
        headers.extend(("Rcpt", rcpt) for rcpt in envelope.recipients)
        head = "POST /checkv2 HTTP/1.1\r\n" + "".join(f"{k}: {_header_value(v)}\r\n" for k, v in headers) + "\r\n"
        try:
            async with asyncio.timeout(self.timeout):
                for attempt in (1, 2):
                    connection = await self.pool.acquire()
                    try:
                        await send_message(connection.writer, head.encode("ascii"), spool)
                        status, keep_alive, body = await _read_http(connection)
                    except (ConnectionError, asyncio.IncompleteReadError, EOFError) as exc:
                        connection.close()
                        if connection.reused and attempt == 1:
                            continue
                        raise ScannerError(f"rspamd closed the connection ({exc})") from None
                    except BaseException:
                        connection.close()
                        raise
                    self.pool.release(connection, reusable=keep_alive)
                    if status != 200:
                        raise ScannerError(f"rspamd answered HTTP {status}: {body[:200]!r}")
                    return self._parse(body)
        except TimeoutError:
            raise ScannerError(f"rspamd did not answer within {self.timeout:g}s") from None
        raise AssertionError("unreachable")

    def _parse(self, body: bytes) -> SpamResult:
        try:
            answer = json.loads(body)
            symbols = answer.get("symbols") or {}
            ranked = sorted(
                ((str(name), float(s.get("score", 0.0))) for name, s in symbols.items()),
                key=lambda item: (-abs(item[1]), item[0]),
            )
            return SpamResult(
                "rspamd",
                float(answer["score"]),
                float(answer.get("required_score", 0.0)),
                tuple((name, value) for name, value in ranked),
                str(answer.get("action")) if answer.get("action") is not None else None,
            )
        except (ValueError, KeyError, TypeError, AttributeError) as exc:
            raise ScannerError(f"rspamd sent an answer that is not the expected JSON ({exc})") from None

    def close(self) -> None:
        self.pool.close()


async def _read_http(connection: Connection) -> tuple[int, bool, bytes]:
    reader = connection.reader
    status_line = await reader.readuntil(b"\r\n")
    parts = status_line.decode("latin-1").split(" ", 2)
    if len(parts) < 2 or not parts[0].startswith("HTTP/1.") or not parts[1].isdigit():
        raise ScannerError(f"not an HTTP answer: {status_line[:100]!r}")
    headers: dict[str, str] = {}
    while (line := await reader.readuntil(b"\r\n")) != b"\r\n":
        name, _, value = line.decode("latin-1").partition(":")
        headers[name.strip().lower()] = value.strip()
    keep_alive = headers.get("connection", "keep-alive").lower() != "close" and parts[0] == "HTTP/1.1"
    if headers.get("transfer-encoding", "").lower() == "chunked":
        body = b""
        while size := int((await reader.readuntil(b"\r\n")).split(b";")[0], 16):
            body += await reader.readexactly(size)
            await reader.readexactly(2)
        await reader.readuntil(b"\r\n")
    elif "content-length" in headers:
        body = await reader.readexactly(int(headers["content-length"]))
    else:
        body, keep_alive = await reader.read(), False
    return int(parts[1]), keep_alive, body


class SpamdClient:
    """SpamAssassin's spamd: one request per connection (the SPAMC protocol has no keep-alive)."""

    engine = "spamassassin"

    def __init__(self, address: str, *, timeout: float) -> None:
        self.address = address
        self.timeout = timeout
        self.pool = Pool(address, size=0, connect_timeout=min(timeout, 5.0))

    async def check(self, spool: Spool, envelope: Envelope) -> SpamResult:
        head = f"SYMBOLS SPAMC/1.5\r\nContent-length: {spool.size}\r\n\r\n".encode("ascii")
        try:
            async with asyncio.timeout(self.timeout):
                connection = await self.pool.connect()
                try:
                    await send_message(connection.writer, head, spool)
                    if connection.writer.can_write_eof():
                        connection.writer.write_eof()
                    answer = await connection.reader.read(1024 * 1024)
                    while more := await connection.reader.read(1024 * 1024):
                        answer += more
                finally:
                    connection.close()
        except TimeoutError:
            raise ScannerError(f"spamd did not answer within {self.timeout:g}s") from None
        except ConnectionError as exc:
            raise ScannerError(f"spamd closed the connection ({exc})") from None
        return self.parse(answer.decode("utf-8", "replace"))

    @staticmethod
    def parse(answer: str) -> SpamResult:
        head, _, body = answer.partition("\r\n\r\n")
        status = _SPAMD_STATUS.match(head)
        if status is None:
            raise ScannerError(f"spamd sent no SPAMD status line: {answer[:200]!r}")
        if status.group(1) != "0":
            raise ScannerError(f"spamd reported an error: {head.splitlines()[0][:200]}")
        score = _SPAMD_SCORE.search(head)
        if score is None:
            raise ScannerError("spamd's answer has no Spam: header")
        names = [name.strip() for name in body.strip().split(",") if name.strip()]
        return SpamResult("spamassassin", float(score.group(2)), float(score.group(3)), tuple((n, None) for n in names))

    def close(self) -> None:
        self.pool.close()
