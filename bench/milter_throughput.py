"""What mailwarden as a milter costs Postfix: its throughput into the queue with and without us, same run.

    python bench/milter_throughput.py                 # 5 alternating rounds of 5,000 messages each way
    python bench/milter_throughput.py --rounds 3 --messages 2000

Postfix's smtp-source sends 10 kB messages over 20 sessions (one message per connection, as
smtp_throughput.py does) to a private Postfix that only receives into its queue (its queue
manager is off: smtpd, cleanup, fsync of the queue file). Once as it is, once with
`smtpd_milters` pointing at `mailwarden serve` over TCP on loopback with the test base config's
checks (recipients, size, content) and no scanners configured - so the figure is what the
milter protocol, the session handling, spooling, the content check's own file inspection and
our events cost, not clamd's or rspamd's time. Every message must reach the queue (counted),
and with the milter every one must have our accept event. The two runs alternate (which comes
first rotates), each with a fresh Postfix and mailwarden; the ratio is per round, its median
and spread are printed with the load average. Target (issue 15): with/without >= 0.7.

A third run per round puts the milter protocol's own cost beside it: the same Postfix with a
null milter (our protocol layer negotiating as our milter does, but no checks and no events;
it adds the same two header fields). Its ratio is the ceiling for any milter at that moment, since Postfix's
milter machinery (a connection per session, the round trips, cleanup applying header changes)
costs Postfix itself.

A fourth run per round does the same with a null milter in C (bench/null_milter.c on Sendmail's
libmilter, built with `cc` at the start; Debian's libmilter-dev, which the test setup installs):
what Postfix's milter machinery costs Postfix when the milter itself costs next to nothing. When
that ratio stays below 0.7 too, no milter in any language reaches the target on this machine.
"""

from __future__ import annotations

import argparse
import os
import resource
import shutil
import sqlite3
import statistics
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "src"))

from tests.support.mailwarden import Mailwarden  # noqa: E402
from tests.support.net import free_port  # noqa: E402
from tests.support.postfix import Postfix, running_postfix  # noqa: E402

from bench.processes import serve_forever, serving  # noqa: E402
from bench.smtp_throughput import (  # noqa: E402
    MESSAGE_BYTES,
    MESSAGES,
    RECIPIENT,
    SESSIONS,
    cpu_seconds,
    smtp_source,
    tree,
)

WARM_UP = 300


@dataclass
class Leg:
    """One run's msg/s and CPU milliseconds per message of Postfix (master and every daemon), smtp-source and the milter."""

    rate: float
    postfix_ms: float
    source_ms: float
    milter_ms: float = 0.0
    milter_queued_ms: float = 0.0  # how long the milter's threads were ready to run but waited for a core


def queued_seconds(pids: list[int]) -> float:
    """Time the threads of these processes spent runnable on a run queue, waiting for a core (schedstat)."""
    total = 0
    for pid in pids:
        for task in Path(f"/proc/{pid}/task").iterdir():
            try:
                total += int((task / "schedstat").read_text().split()[1])
            except (FileNotFoundError, ProcessLookupError):
                continue
    return total / 1e9


def measured(instance: Postfix, milter_pid: int | None, messages: int) -> Leg:
    """smtp-source's rate into `instance` and what each side spent on it, in CPU time (robust under load)."""
    postfix_pids = tree(instance.process.pid) if instance.process else []
    milter_pids = tree(milter_pid) if milter_pid else []
    before = (cpu_seconds(postfix_pids), _children_cpu(), cpu_seconds(milter_pids), queued_seconds(milter_pids))
    rate = smtp_source(instance.smtp_port, messages)
    # Postfix's daemons that ended meanwhile are in their master's cutime/cstime; the live ones in their own.
    after = (
        cpu_seconds(tree(instance.process.pid) if instance.process else []),
        _children_cpu(),
        cpu_seconds(milter_pids),
        queued_seconds(milter_pids),
    )
    per_message = [(b - a) * 1000 / messages for a, b in zip(before, after, strict=True)]
    return Leg(rate, *per_message)


def _children_cpu() -> float:
    """User + system time of this process's children that ended (smtp-source)."""
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


@contextmanager
def milter(root: Path) -> Iterator[tuple[Mailwarden, int]]:
    port = free_port()
    overrides: dict[str, dict[str, object]] = {
        "smtp": {"max_connections": 5000, "max_connections_per_ip": 5000},
        "milter": {"listen": [f"127.0.0.1:{port}"]},
        "tls": {"enabled": False},
        "log": {"level": "warning"},
        # No DNS in this benchmark (bench/network_checks.py measures it): DKIM and DMARC need it.
        "scan.auth": {"dkim": False, "dmarc": False},
    }
    instance = Mailwarden(root, overrides)
    instance.add_user(RECIPIENT)
    instance.start()
    try:
        yield instance, port
    finally:
        instance.stop()


@contextmanager
def postfix(milter_port: int | None) -> Iterator[Postfix]:
    settings = {
        "master_service_disable": "qmgr.unix",  # receive into the queue, deliver nothing
        "in_flow_delay": "0",
        "smtpd_client_connection_count_limit": "0",
        "smtpd_client_connection_rate_limit": "0",
    }
    if milter_port is not None:
        settings |= {
            "smtpd_milters": f"inet:127.0.0.1:{milter_port}",
            "milter_default_action": "tempfail",
            "milter_protocol": "6",
        }
    with running_postfix(settings=settings) as instance:
        yield instance


def queued(instance: Postfix) -> int:
    return sum(1 for path in (instance.queue / "incoming").rglob("*") if path.is_file())


def serve_null(port: int) -> None:
    """A milter that negotiates as ours does (the same macros, the same stages without reply) and decides nothing."""
    import asyncio

    from mailwarden.mta import milter_protocol as wire
    from mailwarden.mta.milter import ACTIONS, MACROS, NO_REPLY, OPTIONS

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        options = 0
        packets = wire.PacketReader(reader, 1 << 20)
        try:
            while True:
                command, data = await packets.next()
                if command == wire.NEGOTIATE:
                    offer = wire.negotiation(data)
                    options = OPTIONS & offer.options
                    writer.write(wire.negotiation_reply(ACTIONS & offer.actions, options, MACROS))
                elif command == wire.END_OF_MESSAGE:
                    fields = [
                        wire.insert_header(0, "Authentication-Results", " mx; none"),
                        wire.insert_header(1, "X-Mailwarden-Ref", " 1C3Z00000000"),
                    ]
                    writer.write(b"".join(fields) + wire.packet(wire.CONTINUE))
                elif command == wire.QUIT:
                    return
                elif command not in (wire.MACRO, wire.ABORT) and not options & NO_REPLY.get(command, 0):
                    writer.write(wire.packet(wire.CONTINUE))
                await writer.drain()
        except (wire.ProtocolError, asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()

    serve_forever(lambda: asyncio.start_server(handle, "127.0.0.1", port, backlog=1024))


def null_milter(program: Path | None = None) -> AbstractContextManager[tuple[int, int]]:
    """A null milter on a free port, (port, pid): ours in Python, or the C one built at `program`."""
    if program is not None:
        return serving(lambda port: [str(program), f"inet:{port}@127.0.0.1"])
    return serving(lambda port: [sys.executable, __file__, "--serve-null", str(port)])


def build_c_null_milter(directory: Path) -> Path | None:
    """bench/null_milter.c built with `cc` against libmilter; None (said why) when it cannot be built here."""
    program = directory / "null_milter"
    compiler = shutil.which("cc")
    if compiler is None:
        print("no C null milter: no `cc` on this machine", flush=True)
        return None
    built = subprocess.run(
        [compiler, "-O2", "-o", str(program), str(ROOT / "bench" / "null_milter.c"), "-lmilter", "-pthread"],
        capture_output=True,
        text=True,
        check=False,
    )
    if built.returncode != 0:
        print(f"no C null milter (install libmilter-dev): {built.stderr.strip()[:300]}", flush=True)
        return None
    return program


def run_null(messages: int, program: Path | None = None) -> Leg:
    """Postfix with a null milter: ours in Python, or the C one when `program` is given."""
    with null_milter(program) as (port, pid), postfix(port) as filtered:
        smtp_source(filtered.smtp_port, WARM_UP)
        leg = measured(filtered, pid, messages)
        found = queued(filtered)
    if found != WARM_UP + messages:
        raise RuntimeError(f"with the null milter: {found} queued of {WARM_UP + messages}")
    return leg


def run(workdir: Path, messages: int, with_milter: bool) -> Leg:
    if not with_milter:
        with postfix(None) as plain:
            smtp_source(plain.smtp_port, WARM_UP)
            leg = measured(plain, None, messages)
            found = queued(plain)
        if found != WARM_UP + messages:
            raise RuntimeError(f"Postfix queued {found} of {WARM_UP + messages}")
        return leg
    with milter(workdir) as (instance, port), postfix(port) as filtered:
        smtp_source(filtered.smtp_port, WARM_UP)
        leg = measured(filtered, instance.pid, messages)
        found = queued(filtered)
    accepts = accept_events(instance.root / "var" / "mailwarden.db")  # after stop: all are committed
    if found != WARM_UP + messages or accepts != WARM_UP + messages:
        raise RuntimeError(f"with the milter: {found} queued, {accepts} accept events, of {WARM_UP + messages}")
    return leg


def accept_events(store: Path) -> int:
    with sqlite3.connect(store) as db:
        (count,) = db.execute("SELECT count(*) FROM events WHERE kind = 'accept' AND source = 'milter'").fetchone()
    return int(count)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--messages", type=int, default=MESSAGES)
    parser.add_argument("--serve-null", type=int, metavar="PORT", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve_null:
        serve_null(args.serve_null)
        return
    print(
        f"smtp-source: {args.messages} messages of {MESSAGE_BYTES} bytes over {SESSIONS} sessions; "
        f"load {' '.join(f'{x:.2f}' for x in os.getloadavg())}",
        flush=True,
    )
    legs: dict[str, list[Leg]] = {"postfix": [], "mailwarden": [], "null": [], "C null": []}
    with tempfile.TemporaryDirectory(prefix="mw-milter-bench-") as tmp:
        program = build_c_null_milter(Path(tmp))
        if program is None:
            del legs["C null"]
        for number in range(args.rounds):
            names = list(legs)
            for name in names[number % len(names) :] + names[: number % len(names)]:
                if name == "null":
                    legs[name].append(run_null(args.messages))
                elif name == "C null":
                    legs[name].append(run_null(args.messages, program))
                else:
                    legs[name].append(run(Path(tmp) / f"round-{number}", args.messages, name == "mailwarden"))
            plain = legs["postfix"][-1]
            print(
                f"round {number + 1}: postfix {plain.rate:.0f} msg/s, "
                + ", ".join(
                    f"+ {name} milter {legs[name][-1].rate:.0f} (ratio {legs[name][-1].rate / plain.rate:.2f})"
                    for name in legs
                    if name != "postfix"
                )
                + f"; load {os.getloadavg()[0]:.2f}",
                flush=True,
            )
            for name, runs in legs.items():
                leg = runs[-1]
                label = "postfix alone" if name == "postfix" else f"with {name} milter"
                print(
                    f"    CPU ms/msg {label:23} postfix {leg.postfix_ms:.2f}  smtp-source {leg.source_ms:.2f}  "
                    f"milter {leg.milter_ms:.2f}  all {_total(leg):.2f}; the milter waited for a core "
                    f"{leg.milter_queued_ms:.2f}",
                    flush=True,
                )
    for name in (name for name in legs if name != "postfix"):
        ratios = [f.rate / p.rate for f, p in zip(legs[name], legs["postfix"], strict=True)]
        cpu_ratios = [_total(p) / _total(f) for f, p in zip(legs[name], legs["postfix"], strict=True)]
        print(
            f"median with {name}: {statistics.median(leg.rate for leg in legs[name]):.0f} msg/s against "
            f"{statistics.median(leg.rate for leg in legs['postfix']):.0f}, ratio {statistics.median(ratios):.2f} "
            f"(rounds {min(ratios):.2f}-{max(ratios):.2f}; target >= 0.7); CPU ms/msg: milter "
            f"{statistics.median(leg.milter_ms for leg in legs[name]):.2f}, postfix "
            f"{statistics.median(leg.postfix_ms for leg in legs[name]):.2f} (alone "
            f"{statistics.median(leg.postfix_ms for leg in legs['postfix']):.2f}); CPU ratio alone/with "
            f"{statistics.median(cpu_ratios):.2f} (what the rates' ratio tends to on a saturated machine)"
        )


def _total(leg: Leg) -> float:
    return leg.postfix_ms + leg.source_ms + leg.milter_ms


if __name__ == "__main__":
    main()
