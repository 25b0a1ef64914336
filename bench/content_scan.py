"""Messages per second through the gateway with clamd and rspamd on, against the scanners driven directly.

    .venv/bin/python -m bench.content_scan [--small 400] [--large 60] [--concurrency 8]   (from the repository root)

Starts a private clamd (test signatures) and rspamd (network modules off) and a real
`mailwarden serve` that uses both (plus its attachment/macro inspection). For 10 kB and 1 MB
messages (text plus one attachment), it measures:

- direct: each message sent to clamd (INSTREAM) and rspamd (POST /checkv2) concurrently, as the
  gateway does, over raw protocol clients in a loop - the scanners' own cost;
- gateway: the same messages over SMTP (one transaction per message, `concurrency` connections
  each sending its share, by a raw client with PIPELINING and the messages dot-stuffed beforehand,
  as lean as the direct side's clients), i.e. scanners plus SMTP, spooling, MIME/attachment
  inspection, the fsynced Maildir delivery and the event store.

and prints msgs/s for both and the gateway's overhead ((direct rate / gateway rate) - 1). All
processes share this machine's cores, so throughput moves with everything else running; the CPU
columns are steadier: the scanners' CPU time per message (clamd and rspamd, direct run) and the
gateway's own CPU time per message (the mailwarden process and its workers, gateway run; the
scanners' share of that run is not in it) and their ratio.
"""

from __future__ import annotations

import argparse
import asyncio
import random
import shutil
import statistics
import struct
import sys
import tempfile
import time
from email.message import EmailMessage
from pathlib import Path

from tests.support.mailwarden import Mailwarden  # the same private servers as the tests
from tests.support.scanners import Clamd, Rspamd

from bench.processes import tree_cpu


def make_messages(count: int, size: int, seed: int) -> list[bytes]:
    rng = random.Random(seed)
    messages = []
    for number in range(count):
        mail = EmailMessage()
        mail["From"] = "Alice <alice@sender.test>"
        mail["To"] = "bob@example.test"
        mail["Subject"] = f"Report {number}"
        mail["Message-ID"] = f"<bench-{seed}-{number}@sender.test>"
        mail["Date"] = "Sat, 28 Nov 2026 09:00:00 +0000"
        mail.set_content("Hello Bob,\n\nthe report is attached.\n\nAlice\n" * 5)
        attachment = rng.randbytes(max(size * 3 // 4 - 600, 100))
        mail.add_attachment(attachment, maintype="application", subtype="pdf", filename=f"report-{number}.pdf")
        messages.append(mail.as_bytes().replace(b"\n", b"\r\n"))
    return messages


async def clamd_instream(socket_path: str, message: bytes) -> bytes:
    reader, writer = await asyncio.open_unix_connection(socket_path)
    writer.write(b"zINSTREAM\0")
    for start in range(0, len(message), 65536):
        piece = message[start : start + 65536]
        writer.write(struct.pack("!L", len(piece)) + piece)
    writer.write(b"\0\0\0\0")
    await writer.drain()
    answer = await reader.readuntil(b"\0")
    writer.close()
    return answer


async def rspamd_check(port: int, message: bytes) -> bytes:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    head = (
        f"POST /checkv2 HTTP/1.1\r\nHost: rspamd\r\nConnection: close\r\nContent-Length: {len(message)}\r\n"
        "IP: 127.0.0.1\r\nHelo: client.sender.test\r\nFrom: alice@sender.test\r\nRcpt: bob@example.test\r\n\r\n"
    )
    writer.write(head.encode() + message)
    await writer.drain()
    answer = await reader.read()
    writer.close()
    return answer


async def direct(clamd: Clamd, rspamd: Rspamd, messages: list[bytes], concurrency: int) -> float:
    queue = list(messages)

    async def worker() -> None:
        while queue:
            message = queue.pop()
            found, scored = await asyncio.gather(
                clamd_instream(str(clamd.socket), message), rspamd_check(rspamd.port, message)
            )
            assert b"OK" in found and b'"score"' in scored, (found, scored[:200])

    started = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return len(messages) / (time.perf_counter() - started)


def smtp_data(message: bytes) -> bytes:
    """The DATA payload of a message: dot-stuffed, ended by <CRLF>.<CRLF> (done before the clock runs)."""
    stuffed = (b"." if message.startswith(b".") else b"") + message.replace(b"\r\n.", b"\r\n..")
    return stuffed + (b"" if stuffed.endswith(b"\r\n") else b"\r\n") + b".\r\n"


async def smtp_reply(reader: asyncio.StreamReader) -> bytes:
    line = await reader.readline()
    while line[3:4] == b"-":
        line = await reader.readline()
    return line


async def through_gateway(port: int, messages: list[bytes], concurrency: int) -> float:
    """One transaction per message over `concurrency` connections, by a client as lean as the direct one
    (PIPELINING, messages encoded beforehand): what is measured is the gateway, not an SMTP library."""
    queue = [smtp_data(message) for message in messages]
    envelope = b"MAIL FROM:<alice@sender.test>\r\nRCPT TO:<bob@example.test>\r\nDATA\r\n"

    async def worker() -> None:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        await smtp_reply(reader)
        writer.write(b"EHLO client.sender.test\r\n")
        await smtp_reply(reader)
        while queue:
            data = queue.pop()
            writer.write(envelope)
            replies = [await smtp_reply(reader) for _ in range(3)]
            assert [r[:3] for r in replies] == [b"250", b"250", b"354"], replies
            writer.write(data)
            reply = await smtp_reply(reader)
            assert reply.startswith(b"250 2.0.0"), reply
        writer.write(b"QUIT\r\n")
        await smtp_reply(reader)
        writer.close()

    started = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return len(messages) / (time.perf_counter() - started)


def measure(
    clamd: Clamd, rspamd: Rspamd, gateway: Mailwarden, size: int, count: int, concurrency: int, round_: int
) -> tuple[float, float, float, float]:
    """One round, the two sides one after the other: (direct msgs/s, gateway msgs/s, CPU ms/msg of each)."""
    # Each side gets its own messages of the same size: clamd caches the verdict of content it has seen.
    assert clamd.process is not None and rspamd.process is not None and gateway.process is not None
    scanners = [clamd.process.pid, rspamd.process.pid]
    before = sum(tree_cpu(pid) for pid in scanners)
    direct_rate = asyncio.run(direct(clamd, rspamd, make_messages(count, size, seed=10 + round_), concurrency))
    scan_ms = (sum(tree_cpu(pid) for pid in scanners) - before) * 1000 / count
    before = tree_cpu(gateway.process.pid)
    messages = make_messages(count, size, seed=20 + round_)
    gateway_rate = asyncio.run(through_gateway(gateway.smtp_port, messages, concurrency))
    gateway_ms = (tree_cpu(gateway.process.pid) - before) * 1000 / count
    return direct_rate, gateway_rate, scan_ms, gateway_ms


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--small", type=int, default=400, help="10 kB messages per run")
    parser.add_argument("--large", type=int, default=60, help="1 MB messages per run")
    parser.add_argument("--concurrency", type=int, default=8, help="parallel connections/scans")
    parser.add_argument("--rounds", type=int, default=3, help="alternating rounds; the medians are shown")
    args = parser.parse_args()
    root = Path(tempfile.mkdtemp(prefix="mailwarden-bench-scan-"))
    clamd = Clamd(root / "clamd").start()
    rspamd = Rspamd(root / "rspamd").start()
    gateway = Mailwarden(
        root / "mw",
        {
            "scan.clamd": {"address": str(clamd.socket)},
            "scan.spam": {"engine": "rspamd", "address": rspamd.address},
            "log": {"level": "warning"},
            "scan.auth": {"dkim": False, "dmarc": False},  # no DNS server here; the scanners are measured
        },
    )
    try:
        gateway.add_user("bob@example.test")
        gateway.start()
        print(f"clamd + rspamd, {args.concurrency} concurrent, median of {args.rounds} alternating rounds")
        print(
            f"{'size':>6} {'count':>6} {'direct':>10} {'gateway':>10} {'overhead':>9}"
            f" {'scanner CPU':>12} {'gateway CPU':>12} {'ratio':>8}"
        )
        print(f"{'':>6} {'':>6} {'msgs/s':>10} {'msgs/s':>10} {'':>9} {'ms/msg':>12} {'ms/msg':>12}")
        for label, size, count in (("10 kB", 10_000, args.small), ("1 MB", 1_000_000, args.large)):
            asyncio.run(direct(clamd, rspamd, make_messages(10, size, seed=1), args.concurrency))
            asyncio.run(through_gateway(gateway.smtp_port, make_messages(10, size, seed=4), args.concurrency))
            rows = [
                measure(clamd, rspamd, gateway, size, count, args.concurrency, round_) for round_ in range(args.rounds)
            ]
            direct_rate, gateway_rate, scan_ms, gateway_ms = (
                statistics.median(column) for column in zip(*rows, strict=True)
            )
            overhead = direct_rate / gateway_rate - 1
            print(
                f"{label:>6} {count:>6} {direct_rate:>10.1f} {gateway_rate:>10.1f} {overhead:>+8.0%}"
                f" {scan_ms:>12.2f} {gateway_ms:>12.2f} {gateway_ms / scan_ms:>8.0%}"
            )
    finally:
        gateway.stop()
        rspamd.stop()
        clamd.stop()
        shutil.rmtree(root, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
