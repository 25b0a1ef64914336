"""The scanner protocols against fake scanners that misbehave: every failure is a ScannerError, never a result.

Also DMARC record parsing and alignment, and the Authentication-Results entries for DKIM and DMARC.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from pathlib import Path

import pytest

from mailwarden import authresults
from mailwarden.checks.content import ContentPolicy, parse_setting
from mailwarden.config import Config
from mailwarden.scan.clamd import ClamdClient, StreamTooLong, parse
from mailwarden.scan.dmarc import aligned, from_domain, organizational_domain, parse_record
from mailwarden.scan.net import ScannerError
from mailwarden.scan.spam import Envelope, RspamdClient, SpamdClient
from mailwarden.spool import Spool

ENVELOPE = Envelope("192.0.2.1", "client.test", "a@sender.test", ("b@example.test",), None, "REF1", "mx.test")
Handler = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]


def spool(tmp_path: Path, data: bytes = b"Subject: x\r\n\r\nhello\r\n", memory: int = 1 << 20) -> Spool:
    result = Spool(tmp_path, memory, 1 << 30)
    result.write(data)
    result.finish()
    return result


async def serve(handler: Handler) -> tuple[asyncio.AbstractServer, str]:
    server = await asyncio.start_server(handler, "127.0.0.1", 0)
    return server, f"127.0.0.1:{server.sockets[0].getsockname()[1]}"


# ---------------------------------------------------------------------------- clamd
def test_clamd_answers_are_parsed_with_and_without_session_numbers() -> None:
    assert parse("stream: OK").virus is None
    assert parse("3: stream: Win.Test.EICAR_HDB-1 FOUND").virus == "Win.Test.EICAR_HDB-1"
    with pytest.raises(StreamTooLong):
        parse("1: INSTREAM size limit exceeded. ERROR")
    for garbage in ("", "stream: ERROR", "UNKNOWN COMMAND", "stream: FOUND"):
        with pytest.raises(ScannerError):
            parse(garbage)


def test_clamd_reading_and_answering_garbage_is_a_scanner_error(tmp_path: Path) -> None:
    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.read(100)
        writer.write(b"lol\0")
        await writer.drain()
        writer.close()

    async def run() -> None:
        server, address = await serve(handler)
        async with server:
            with pytest.raises(ScannerError, match="unexpected answer"):
                await ClamdClient(address, timeout=5, max_stream=1 << 20).scan(spool(tmp_path))

    asyncio.run(run())


def test_clamd_closing_mid_stream_is_a_scanner_error(tmp_path: Path) -> None:
    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.read(1000)
        writer.transport.abort()

    async def run() -> None:
        server, address = await serve(handler)
        async with server:
            client = ClamdClient(address, timeout=5, max_stream=1 << 30)
            with pytest.raises(ScannerError):
                await client.scan(spool(tmp_path, b"x" * (8 << 20), memory=65536))

    asyncio.run(run())


def test_clamd_silent_past_the_timeout_and_clamd_down_are_scanner_errors(tmp_path: Path) -> None:
    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await asyncio.sleep(30)

    async def run() -> None:
        server, address = await serve(handler)
        async with server:
            with pytest.raises(ScannerError, match=r"did not answer within 0\.3s"):
                await ClamdClient(address, timeout=0.3, max_stream=1 << 20).scan(spool(tmp_path))
        with pytest.raises(ScannerError, match="cannot connect"):
            await ClamdClient(address, timeout=2, max_stream=1 << 20).scan(spool(tmp_path))

    asyncio.run(run())


def test_messages_over_clamds_stream_limit_are_not_sent(tmp_path: Path) -> None:
    client = ClamdClient("127.0.0.1:9", timeout=1, max_stream=10)
    with pytest.raises(StreamTooLong):
        asyncio.run(client.scan(spool(tmp_path)))


# ---------------------------------------------------------------------------- spamd
def test_spamd_answers_are_parsed_and_errors_refused() -> None:
    result = SpamdClient.parse("SPAMD/1.1 0 EX_OK\r\nContent-length: 9\r\nSpam: True ; 1000.0 / 5.0\r\n\r\nGTUBE,A_B")
    assert (result.score, result.required, result.top()) == (1000.0, 5.0, "GTUBE, A_B")
    for bad in ("", "HTTP/1.1 200 OK\r\n\r\n", "SPAMD/1.1 76 EX_PROTOCOL\r\n\r\n", "SPAMD/1.1 0 EX_OK\r\n\r\nX"):
        with pytest.raises(ScannerError):
            SpamdClient.parse(bad)


# ---------------------------------------------------------------------------- rspamd
def test_rspamd_gets_the_envelope_as_headers_and_its_json_is_read(tmp_path: Path) -> None:
    seen: list[bytes] = []

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        head = await reader.readuntil(b"\r\n\r\n")
        seen.append(head)
        length = int(head.split(b"Content-Length: ")[1].split(b"\r\n")[0])
        await reader.readexactly(length)
        body = b'{"score": 7.5, "required_score": 15, "action": "add header", "symbols": {"A": {"score": 1}, "B": {"score": 6.5}}}'
        writer.write(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n")
        writer.write(b"%x\r\n%s\r\n0\r\n\r\n" % (len(body), body))
        await writer.drain()
        writer.close()

    async def run() -> None:
        server, address = await serve(handler)
        async with server:
            result = await RspamdClient(address, timeout=5).check(spool(tmp_path), ENVELOPE)
        assert result.score == 7.5
        assert result.top() == "B 6.5, A 1"

    asyncio.run(run())
    assert b"IP: 192.0.2.1\r\n" in seen[0] and b"Rcpt: b@example.test\r\n" in seen[0]
    assert b"Queue-Id: REF1\r\n" in seen[0] and b"Helo: client.test\r\n" in seen[0]


@pytest.mark.parametrize(
    "answer",
    [
        b"HTTP/1.1 500 Internal Server Error\r\nContent-Length: 2\r\n\r\nno",
        b"HTTP/1.1 200 OK\r\nContent-Length: 8\r\n\r\nnot json",
        b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\n{}",
        b"garbage\r\n\r\n",
        b"",
    ],
)
def test_rspamd_errors_and_garbage_are_scanner_errors(tmp_path: Path, answer: bytes) -> None:
    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        writer.write(answer)
        await writer.drain()
        writer.close()

    async def run() -> None:
        server, address = await serve(handler)
        async with server:
            with pytest.raises(ScannerError):
                await RspamdClient(address, timeout=5).check(spool(tmp_path), ENVELOPE)

    asyncio.run(run())


def test_stranger_envelope_values_cannot_inject_http_headers(tmp_path: Path) -> None:
    seen: list[bytes] = []

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        seen.append(await reader.readuntil(b"\r\n\r\n"))
        writer.close()

    async def run() -> None:
        server, address = await serve(handler)
        envelope = Envelope("192.0.2.1", "evil\r\nSettings: {}", "a@b", ("c@d",), None, "R", "mx")
        async with server:
            with pytest.raises(ScannerError):
                await RspamdClient(address, timeout=5).check(spool(tmp_path), envelope)

    asyncio.run(run())
    assert b"\r\nSettings:" not in seen[0]


# ---------------------------------------------------------------------------- DMARC and Authentication-Results
def test_dmarc_records_are_parsed_strictly() -> None:
    record = parse_record("v=DMARC1; p=reject; sp=none; adkim=s; pct=50", "example.com")
    assert record is not None
    assert (record.policy, record.subdomain_policy, record.adkim, record.aspf, record.pct) == (
        "reject",
        "none",
        "s",
        "r",
        50,
    )
    assert parse_record("v=DMARC1; p=bogus", "x") is None
    assert parse_record("v=spf1 -all", "x") is None
    assert parse_record("v=DMARC1; p=none; pct=abc", "x").pct == 100  # type: ignore[union-attr]


@pytest.mark.parametrize("pct", ["²", "٣", "9" * 5000])
def test_a_dmarc_pct_that_is_no_number_counts_as_100_not_a_failed_content_check(pct: str) -> None:
    """The domain owner writes the record: `pct=²` passed str.isdigit and int() raised, and every
    message from the domain was refused 451 (a failed content check) with a traceback."""
    record = parse_record(f"v=DMARC1; p=reject; pct={pct}", "x")
    assert record is not None and record.pct == 100


def test_alignment_uses_the_organizational_domain_unless_strict() -> None:
    assert organizational_domain("mail.example.co.uk") == "example.co.uk"
    assert aligned("news.example.com", "example.com", "r")
    assert not aligned("news.example.com", "example.com", "s")
    assert not aligned("example.co.uk", "other.co.uk", "r")


def test_from_domain_needs_exactly_one_address() -> None:
    assert from_domain([("From", "Alice <alice@Example.COM>")]) == "example.com"
    assert from_domain([("From", "a@x.test, b@y.test")]) is None
    assert from_domain([("From", "a@x.test"), ("From", "b@y.test")]) is None
    assert from_domain([("From", "undisclosed")]) is None


def test_dkim_and_dmarc_entries_in_authentication_results() -> None:
    results = {
        "dkim": [{"result": "fail", "domain": "ex.test", "selector": "s1", "reason": "body hash mismatch"}],
        "dmarc": {"result": "fail", "domain": "ex.test", "policy": "reject", "reason": "SPF fail"},
    }
    header = authresults.header("mx.test", results)
    assert header is not None
    assert "dkim=fail (body hash mismatch) header.d=ex.test header.s=s1" in header
    assert "dmarc=fail (p=reject; SPF fail) header.from=ex.test" in header
    assert "dkim=none" in (authresults.header("mx.test", {"dkim": []}) or "")


# ---------------------------------------------------------------------------- per-mailbox policy
def test_mailbox_settings_are_validated_and_make_the_content_policy() -> None:
    assert parse_setting("spam_reject", "off") is False
    assert parse_setting("macros", "tag") == "tag"
    for name, value in (("spam_reject", "maybe"), ("macros", "allow"), ("colour", "blue")):
        with pytest.raises(ValueError):
            parse_setting(name, value)
    config = Config()
    assert ContentPolicy.of(config, {}) == ContentPolicy(spam_reject=True, macros="reject")
    assert ContentPolicy.of(config, {"spam_reject": False}) != ContentPolicy.of(config, {})
