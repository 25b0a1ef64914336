"""CPU per message of mailwarden as a milter, without Postfix: its packets replayed, the server's CPU time counted.

    python -m bench.milter_cpu                                   # 5 rounds of 3,000 sessions
    python -m bench.milter_cpu --compare-src /tmp/before/src     # and another version, alternating

milter_throughput.py measures what Postfix feels; on a machine shared with other work its rates
swing with the load. This one isolates our side: a client plays Postfix 3.7's half of the
conversation for 20 sessions at a time (the same packets, macros and 10 kB message that
smtp-source makes Postfix send: negotiation, connect, HELO, MAIL and RCPT with their macros, the
header fields, the body, the end of the message, quit), waits where Postfix waits, and counts
the user + system time of `mailwarden serve` (all its processes and threads) per session. CPU
time is what a loaded machine cannot give to Postfix, so it is the figure that moves the ratio.
With --compare-src the same runs alternate with the server taken from another source tree.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import struct
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.support.milter import ALL_ACTIONS, ALL_OPTIONS, FINAL, HEAD, NO_REPLY, cstrings, macros, packet  # noqa: E402

from bench.milter_throughput import milter  # noqa: E402
from bench.smtp_throughput import MESSAGE_BYTES, RECIPIENT, SENDER, SESSIONS, cpu_seconds, tree  # noqa: E402

HEADERS = (  # as smtp-source writes them (Postfix keeps its own Received field to itself)
    ("From", " <alice@sender.test>"),
    ("To", " <bob@example.test>"),
    ("Date", " Mon, 7 Dec 2026 08:00:00 +0000"),
    ("Message-Id", " <bench@sender.test>"),
    ("Subject", " bench"),
)
BODY = (b"La de da de da 1.\r\n" * (MESSAGE_BYTES // 19 + 1))[:MESSAGE_BYTES]


def session_packets(queue_id: str) -> list[tuple[str, bytes]]:
    """(command, bytes with its macros) of one session after the negotiation, in Postfix's order."""
    client = "127.0.0.1"
    steps = [
        (
            "C",
            macros("C", client_addr=client, client_name="localhost", daemon_name="smtpd")
            + packet("C", cstrings("localhost") + b"4" + struct.pack("!H", 40000) + cstrings(client)),
        ),
        ("H", macros("H") + packet("H", cstrings("localhost"))),
        ("M", macros("M", mail_addr=SENDER) + packet("M", cstrings(f"<{SENDER}>"))),
        ("R", macros("R", rcpt_addr=RECIPIENT) + packet("R", cstrings(f"<{RECIPIENT}>"))),
        ("T", macros("T", i=queue_id) + packet("T")),
    ]
    steps += [("L", macros("L", i=queue_id) + packet("L", cstrings(name, value))) for name, value in HEADERS]
    steps += [
        ("N", macros("N", i=queue_id) + packet("N")),
        ("B", macros("B", i=queue_id) + packet("B", BODY)),
        ("E", macros("E", i=queue_id) + packet("E")),
    ]
    return steps


async def read_reply(reader: asyncio.StreamReader) -> str:
    (length,) = HEAD.unpack(await reader.readexactly(4))
    return chr((await reader.readexactly(length))[0])


async def one_session(port: int, number: int) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(packet("O", struct.pack("!III", 6, ALL_ACTIONS, ALL_OPTIONS)))
    (length,) = HEAD.unpack(await reader.readexactly(4))
    _, _, options = struct.unpack_from("!III", await reader.readexactly(length), 1)
    pending = b""
    for command, data in session_packets(f"BENCH{number:06d}"):
        pending += data
        if options & NO_REPLY.get(command, 0):  # as Postfix: written together with the next that waits
            continue
        writer.write(pending)
        pending = b""
        while (reply := await read_reply(reader)) not in FINAL:
            pass
        if reply != "c":
            raise RuntimeError(f"session {number}: {command} answered {reply!r}")
    writer.write(packet("Q"))
    await writer.drain()
    writer.close()
    await writer.wait_closed()


async def replay(port: int, sessions: int) -> float:
    """Sessions per second, SESSIONS at a time."""
    numbers = iter(range(sessions))

    async def worker() -> None:
        for number in numbers:
            await one_session(port, number)

    started = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(SESSIONS)))
    return sessions / (time.perf_counter() - started)


def run(workdir: Path, sessions: int, src: Path | None) -> tuple[float, float]:
    """(sessions/s, CPU ms per session of every mailwarden process) for one fresh server."""
    previous = os.environ.get("PYTHONPATH")
    if src is not None:
        os.environ["PYTHONPATH"] = str(src)
    try:
        with milter(workdir) as (instance, port):
            asyncio.run(replay(port, 300))  # warm up
            processes = tree(instance.pid)
            before = cpu_seconds(processes)
            rate = asyncio.run(replay(port, sessions))
            used = cpu_seconds(processes) - before
    finally:
        if previous is None:
            os.environ.pop("PYTHONPATH", None)
        else:
            os.environ["PYTHONPATH"] = previous
    return rate, used * 1000 / sessions


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--sessions", type=int, default=3000)
    parser.add_argument("--compare-src", type=Path, help="another tree's src/ to run alternately")
    args = parser.parse_args()
    versions: dict[str, Path | None] = {"this tree": None}
    if args.compare_src:
        versions[str(args.compare_src)] = args.compare_src.resolve()
    cpu: dict[str, list[float]] = {name: [] for name in versions}
    with tempfile.TemporaryDirectory(prefix="mw-milter-cpu-") as tmp:
        for number in range(args.rounds):
            names = list(versions)
            names = names[number % len(names) :] + names[: number % len(names)]
            for name in names:
                rate, per_session = run(
                    Path(tmp) / f"{number}-{len(cpu[name])}-{name[-3:]}", args.sessions, versions[name]
                )
                cpu[name].append(per_session)
                print(
                    f"round {number + 1} {name}: {rate:.0f} sessions/s, {per_session:.2f} ms CPU per session; "
                    f"load {os.getloadavg()[0]:.2f}",
                    flush=True,
                )
    for name, values in cpu.items():
        print(
            f"{name}: median {statistics.median(values):.2f} ms CPU per session (rounds {min(values):.2f}-{max(values):.2f})"
        )


if __name__ == "__main__":
    main()
