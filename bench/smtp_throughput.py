"""SMTP throughput, CPU and memory of the gateway, with its peers measured side by side in the same run.

    python bench/smtp_throughput.py                 # everything (about 8 minutes)
    python bench/smtp_throughput.py --only throughput --rounds 1
    python bench/smtp_throughput.py --compare-src /tmp/before/src --rounds 5   # (a) against another version
    python bench/smtp_throughput.py --compare-metrics --rounds 4   # (a) with [metrics] listen set and without

Throughput: Postfix's smtp-source (20 sessions, 10 kB messages, 5,000 messages, one message per
connection as smtp-source does by default) against
  (a) mailwarden serve with workers = 2 and (a1) with workers = 1, the default checks of the test
      base config that need no DNS (recipients, size, content): SQLite store, Maildir delivery,
      fsync before 250, a DNS server that answers NXDOMAIN (the DMARC lookup is cached),
  (b) a bare aiosmtpd 1.4.6 server whose handler does nothing (a reference only; mailwarden no
      longer uses it: `pip install -r bench/requirements.txt`),
  (c) a private Postfix accepting into its queue (its queue manager is switched off, so it
      does nothing but receive: smtpd, cleanup, fsync of the queue file) - and (c') Postfix
      doing mailwarden's whole job: receive, then deliver into a Maildir (virtual(8)), timed
      until the last message is delivered (run once, after the rounds),
  (d) the floor of any Python receiver on this machine: uvloop, one asyncio.Protocol that speaks
      just the dialogue smtp-source needs, and each message written, fsynced and renamed into a
      Maildir's new/ (in a thread, as mailwarden's delivery) before its 250 - no checks, no
      events, no evidence. What (a) costs above it is what mailwarden's own work costs.
  (e) the floor with the evidence: (d), plus the eight events mailwarden records for each such
      message, committed by mailwarden's SQLite store (group commit, in the same process) before
      the 250 - what any receiver of this design costs before its first check.
The same event loop (uvloop when installed) runs (a) and (b). The median of --rounds runs counts.
CPU per message: user + system time of every mailwarden process (supervisor, workers and their
children) during the run, divided by the messages; for (c) the same of Postfix's master and all its
daemons (smtpd, cleanup, ...; those that ended meanwhile count through the master).
Memory: peak RSS (VmHWM) of all mailwarden processes together (workers = 2) with 1,000 idle
connections, and with 50 clients sending a 20 MB message each at the same time.
Targets (issue 16): (a) >= 100 % of (c), (a) >= 160 % of (a1), CPU <= 1.0 ms per message,
RSS < 300 MB in both memory runs.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import resource
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import cast

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.support.mailwarden import Mailwarden  # noqa: E402
from tests.support.net import free_port  # noqa: E402
from tests.support.postfix import Postfix, running_postfix  # noqa: E402
from tests.support.zoneserver import zone_server  # noqa: E402

from bench.processes import serve_forever, serving  # noqa: E402

SESSIONS = 20
MESSAGES = 5000
MESSAGE_BYTES = 10 * 1024
SENDER = "alice@sender.test"
RECIPIENT = "bob@example.test"


# ---------------------------------------------------------------------------- the peers
def serve_bare_aiosmtpd(port: int) -> None:
    """(b): aiosmtpd 1.4.6 with a handler that accepts everything and keeps nothing."""
    from aiosmtpd.smtp import SMTP

    class NoOp:
        async def handle_DATA(self, server: object, session: object, envelope: object) -> str:
            return "250 2.0.0 OK"

    serve_forever(
        lambda: asyncio.get_running_loop().create_server(lambda: SMTP(NoOp()), "127.0.0.1", port, backlog=1024)
    )


def serve_floor(port: int, maildir: Path, evidence: Path | None = None) -> None:
    """(d): the least a Python receiver does for a message it keeps - the dialogue, then the message
    fsynced into a Maildir before the 250 - so that (a)'s CPU can be split into the floor and ours.
    (e), with `evidence` (an SQLite store's path): the same, plus the eight events mailwarden records
    for such a message (connect, helo, mail, rcpt, data, deliver, accept, disconnect, with the fields
    and details a real run gives them), group-committed by mailwarden's own store in this process
    before the 250 - the least the design's evidence adds, with no check, no limit and no second process."""
    import uuid
    from concurrent.futures import ThreadPoolExecutor

    from mailwarden.events import Event
    from mailwarden.refs import RefGenerator
    from mailwarden.store.sqlite import SqliteStore

    for sub in ("tmp", "new"):
        (maildir / sub).mkdir(parents=True, exist_ok=True)
    delivery = ThreadPoolExecutor(2)  # mailwarden's delivery threads: two
    store = SqliteStore(evidence) if evidence is not None else None
    refs = RefGenerator("bench-floor")

    def deliver(message: bytes) -> str:
        name = uuid.uuid4().hex
        fd = os.open(maildir / "tmp" / name, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            os.write(fd, message)
            os.fsync(fd)
        finally:
            os.close(fd)
        (maildir / "tmp" / name).rename(maildir / "new" / name)
        return name

    replies = {
        b"EHLO": b"250-floor\r\n250-PIPELINING\r\n250 SIZE 52428800\r\n",
        b"HELO": b"250 floor\r\n",
        b"MAIL": b"250 2.1.0 Ok\r\n",
        b"RCPT": b"250 2.1.5 Ok\r\n",
        b"RSET": b"250 2.0.0 Ok\r\n",
        b"NOOP": b"250 2.0.0 Ok\r\n",
    }

    class Floor(asyncio.Protocol):
        def connection_made(self, transport: asyncio.BaseTransport) -> None:
            self.transport = cast(asyncio.Transport, transport)  # uvloop's is not a subclass
            self.buffer = b""
            self.in_data = False
            if store is not None:  # (e) only: (d) stays the least a receiver does
                self.ref = refs.new()
                self.fields: dict[str, object] = {"session": self.ref, "ref": self.ref, "client_ip": "127.0.0.1"}
                self.record("connect", port=transport.get_extra_info("peername")[1])
            self.transport.write(b"220 floor ESMTP\r\n")

        def record(self, kind: str, more: dict[str, object] | None = None, **detail: object) -> None:
            assert store is not None
            fields = {**self.fields, **(more or {})}
            store.append(Event(kind, "gateway", "bench-floor", detail=detail, **fields))  # type: ignore[arg-type]

        def note(self, verb: bytes, argument: str) -> None:
            """(e): the event of a command, with what it tells."""
            if verb in (b"EHLO", b"HELO"):
                self.fields["helo"] = argument
                self.record("helo", esmtp=verb == b"EHLO")
            elif verb == b"MAIL":
                self.fields["sender"], self.fields["message_key"] = argument.partition(":")[2].strip("<>"), self.ref
                self.record("mail", options=[], checks=[{"check": "size", "ms": 0.1, "result": "pass"}])
            elif verb == b"RCPT":
                self.fields["recipient"] = recipient = argument.partition(":")[2].strip("<>")
                self.record(
                    "rcpt", mailbox=recipient, checks=[{"check": "recipients", "ms": 0.3, "result": "resolved"}]
                )

        async def keep(self, message: bytes) -> None:
            """(e): the message and its events kept before the 250."""
            assert store is not None
            recipient = self.fields.pop("recipient", None)
            size: dict[str, object] = {"size": len(message)}
            self.record("data", size, checks=[{"check": "content", "ms": 0.5, "result": "pass"}])
            name = await asyncio.get_running_loop().run_in_executor(delivery, deliver, message)
            self.record("deliver", {**size, "recipient": recipient, "reason": "delivered"}, folder="INBOX", uid=name)
            accepted = {"smtp_code": 250, "enhanced_code": "2.0.0", "reply": f"250 2.0.0 Ok ref={self.ref}"}
            self.record("accept", {**size, **accepted, "reason": "delivered"}, recipients=[recipient])
            await store.durable()
            self.transport.write(b"250 2.0.0 Ok: kept\r\n")

        def data_received(self, data: bytes) -> None:
            self.buffer += data
            while True:
                if self.in_data:
                    end = self.buffer.find(b"\r\n.\r\n")
                    if end < 0:
                        return
                    message, self.buffer, self.in_data = self.buffer[: end + 2], self.buffer[end + 5 :], False
                    if store is not None:
                        self.keeping = asyncio.ensure_future(self.keep(message))
                        continue
                    done = asyncio.get_running_loop().run_in_executor(delivery, deliver, message)
                    done.add_done_callback(lambda _: self.transport.write(b"250 2.0.0 Ok: kept\r\n"))
                    continue
                end = self.buffer.find(b"\r\n")
                if end < 0:
                    return
                line, self.buffer = self.buffer[:end], self.buffer[end + 2 :]
                verb = line[:4].upper()
                if verb == b"DATA":
                    self.in_data = True
                    self.transport.write(b"354 End data with <CR><LF>.<CR><LF>\r\n")
                elif verb == b"QUIT":
                    self.transport.write(b"221 2.0.0 Bye\r\n")
                    self.transport.close()
                    return
                else:
                    if store is not None:
                        self.note(verb, line[5:].decode("ascii", "replace"))
                    self.transport.write(replies.get(verb, b"502 5.5.2 Not here\r\n"))

        def connection_lost(self, exc: Exception | None) -> None:
            if store is not None:
                self.fields.pop("message_key", None)
                self.record("disconnect", commands={"ehlo": 1, "mail": 1, "rcpt": 1, "data": 1, "quit": 1})

    serve_forever(lambda: asyncio.get_running_loop().create_server(Floor, "127.0.0.1", port, backlog=1024))


@contextmanager
def mailwarden(root: Path, workers: int = 2, extra: dict[str, dict[str, object]] | None = None) -> Iterator[Mailwarden]:
    """mailwarden serve on the test base config (checks: recipients, size, content), with room for the
    benchmark's connections, and a DNS server that answers: the content check's DMARC lookup of the
    sender's domain gets NXDOMAIN, which the resolver caches as in production. (The test base's
    unreachable server would make every lookup a failure, which is not cached: a bench artifact
    that cost about a tenth of the worker's time.)"""
    with zone_server() as dns:  # no zone: NXDOMAIN for every name
        overrides: dict[str, dict[str, object]] = {
            "smtp": {"max_connections": 5000, "max_connections_per_ip": 5000, "workers": workers},
            "tls": {"enabled": False},
            "log": {"level": "warning"},
            "dns": {"nameservers": [dns.address]},
            **(extra or {}),
        }
        instance = Mailwarden(root, overrides)
        instance.add_user(RECIPIENT)
        instance.start()
        try:
            yield instance
        finally:
            instance.stop()


@contextmanager
def postfix_queue_only() -> Iterator[Postfix]:
    settings = {
        "master_service_disable": "qmgr.unix",  # receive into the queue, deliver nothing
        "in_flow_delay": "0",  # without a queue manager, flow control would stall smtpd
        "smtpd_client_connection_count_limit": "0",
        "smtpd_client_connection_rate_limit": "0",
    }
    with running_postfix(settings=settings) as postfix:
        yield postfix


@contextmanager
def postfix_to_maildir() -> Iterator[Postfix]:
    """Postfix doing mailwarden's whole job: receive, queue, deliver into a Maildir (virtual(8))."""
    with running_postfix(local_domains=["example.test"]) as postfix:
        yield postfix


# ---------------------------------------------------------------------------- throughput
def smtp_source(port: int, messages: int = MESSAGES) -> float:
    """Messages per second that smtp-source gets through, and it must finish without error."""
    started = time.perf_counter()
    done = subprocess.run(
        [
            "smtp-source",
            "-s",
            str(SESSIONS),
            "-m",
            str(messages),
            "-l",
            str(MESSAGE_BYTES),
            "-f",
            SENDER,
            "-t",
            RECIPIENT,
            f"127.0.0.1:{port}",
        ],
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    elapsed = time.perf_counter() - started
    if done.returncode != 0:
        raise RuntimeError(f"smtp-source failed ({done.returncode}): {done.stdout}{done.stderr}")
    return messages / elapsed


def tree(pid: int) -> list[int]:
    """`pid` and every process below it."""
    found = [pid]
    try:
        tasks = list(Path(f"/proc/{pid}/task").iterdir())
    except FileNotFoundError:  # it ended meanwhile (a Postfix daemon done with its work)
        return found
    for task in tasks:
        try:
            children = (task / "children").read_text().split()
        except FileNotFoundError:
            continue
        for child in children:
            found.extend(tree(int(child)))
    return found


def cpu_seconds(pids: list[int]) -> float:
    """User + system time of these processes (and of their children that ended)."""
    ticks = os.sysconf("SC_CLK_TCK")
    total = 0
    for pid in pids:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
        except FileNotFoundError:
            continue
        total += sum(int(value) for value in fields[11:15])  # utime, stime, cutime, cstime
    return total / ticks


def mailwarden_rate(root: Path, workers: int, extra: dict[str, dict[str, object]] | None = None) -> tuple[float, float]:
    """(msg/s, CPU ms per message of all mailwarden processes)."""
    with mailwarden(root, workers, extra) as instance:
        smtp_source(instance.smtp_port, 500)  # warm up (first Maildir, first store pages)
        processes = tree(instance.pid)
        before = cpu_seconds(processes)
        rate = smtp_source(instance.smtp_port)
        used = cpu_seconds(processes) - before
        delivered = len(list((instance.maildir(RECIPIENT) / "new").iterdir()))
        if "metrics" in instance.sections:  # what one scrape saw (it must have counted every message)
            with urllib.request.urlopen(f"http://{instance.sections['metrics']['listen']}/metrics") as answer:
                counted = [
                    line
                    for line in answer.read().decode().splitlines()
                    if line.startswith("mailwarden_smtp_decisions_total")
                ]
            print(f"  scraped: {'; '.join(counted)}", flush=True)
    if delivered != MESSAGES + 500:
        raise RuntimeError(f"mailwarden delivered {delivered} of {MESSAGES + 500} messages")
    return rate, used * 1000 / MESSAGES


def compare(rounds: int, other_src: Path, workdir: Path) -> dict[str, list[float]]:
    """(a) from this tree and from `other_src` (PYTHONPATH for the server), alternating; msg/s per round."""
    sources = {"this": os.environ.get("PYTHONPATH"), "other": str(other_src)}
    results: dict[str, list[float]] = {name: [] for name in sources}
    for number in range(rounds):
        for name in list(sources)[number % 2 :] + list(sources)[: number % 2]:
            path = sources[name]
            if path is None:
                os.environ.pop("PYTHONPATH", None)
            else:
                os.environ["PYTHONPATH"] = path
            results[name].append(mailwarden_rate(workdir / f"mailwarden-{name}-{number}", 2)[0])
        print(f"round {number + 1}: " + ", ".join(f"{k} {v[-1]:.0f} msg/s" for k, v in results.items()), flush=True)
    if sources["this"] is None:
        os.environ.pop("PYTHONPATH", None)
    else:
        os.environ["PYTHONPATH"] = sources["this"]
    return results


def compare_metrics(rounds: int, workdir: Path) -> dict[str, list[tuple[float, float]]]:
    """(a) with /metrics on and off, alternating; (msg/s, CPU ms per message) per round."""
    variants: dict[str, dict[str, dict[str, object]]] = {
        "off": {},
        "on": {"metrics": {"listen": f"127.0.0.1:{free_port()}"}},
    }
    results: dict[str, list[tuple[float, float]]] = {name: [] for name in variants}
    for number in range(rounds):
        for name in list(variants)[number % 2 :] + list(variants)[: number % 2]:
            results[name].append(mailwarden_rate(workdir / f"mailwarden-{name}-{number}", 2, variants[name]))
        print(
            f"round {number + 1}: "
            + ", ".join(f"metrics {k} {v[-1][0]:.0f} msg/s {v[-1][1]:.2f} ms CPU/msg" for k, v in results.items()),
            flush=True,
        )
    return results


def throughput(rounds: int, workdir: Path) -> tuple[dict[str, list[float]], dict[str, list[float]]]:
    """msg/s of each server per round, and mailwarden's CPU ms per message; the order rotates from round to round,
    as the machine's load may drift."""
    cpu: dict[str, list[float]] = {
        name: [] for name in ("mailwarden", "mailwarden-1", "postfix", "floor", "floor+evidence")
    }

    def run_mailwarden(number: int, workers: int) -> float:
        name = "mailwarden" if workers == 2 else f"mailwarden-{workers}"
        rate, per_message = mailwarden_rate(workdir / f"{name}-{number}", workers)
        cpu[name].append(per_message)
        return rate

    def run_aiosmtpd(number: int) -> float:
        with serving(lambda port: [sys.executable, __file__, "--serve-bare", str(port)]) as (port, _):
            smtp_source(port, 500)
            return smtp_source(port)

    def run_floor(number: int, evidence: bool = False) -> float:
        name = "floor+evidence" if evidence else "floor"
        maildir = workdir / f"{name}-{number}"
        store = [str(workdir / f"{name}-{number}.db")] if evidence else []
        with serving(lambda port: [sys.executable, __file__, "--serve-floor", str(port), str(maildir), *store]) as (
            port,
            pid,
        ):
            smtp_source(port, 500)
            before = cpu_seconds([pid])
            rate = smtp_source(port)
            cpu[name].append((cpu_seconds([pid]) - before) * 1000 / MESSAGES)
        if len(list((maildir / "new").iterdir())) != MESSAGES + 500:
            raise RuntimeError(f"the {name} server did not keep every message")
        return rate

    def run_postfix(number: int) -> float:
        """(c), with the CPU of its master and every daemon (those that ended: in the master's cutime/cstime)."""
        with postfix_queue_only() as postfix:
            smtp_source(postfix.smtp_port, 500)
            assert postfix.process is not None
            before = cpu_seconds(tree(postfix.process.pid))
            rate = smtp_source(postfix.smtp_port)
            cpu["postfix"].append((cpu_seconds(tree(postfix.process.pid)) - before) * 1000 / MESSAGES)
            return rate

    def run_postfix_maildir(number: int) -> float:
        with postfix_to_maildir() as postfix:
            inbox = postfix.inbox / "new"
            started = time.perf_counter()
            smtp_source(postfix.smtp_port)
            while len(list(inbox.iterdir())) < MESSAGES:  # accepted is not enough: until all are delivered
                if time.perf_counter() - started > 600:
                    raise RuntimeError("Postfix did not deliver everything in 10 minutes")
                time.sleep(0.05)
            return MESSAGES / (time.perf_counter() - started)

    runners: dict[str, Callable[[int], float]] = {
        "mailwarden": lambda n: run_mailwarden(n, 2),
        "aiosmtpd": run_aiosmtpd,
        "postfix": run_postfix,
        "mailwarden-1": lambda n: run_mailwarden(n, 1),
        "floor": run_floor,
        "floor+evidence": lambda n: run_floor(n, evidence=True),
    }
    results: dict[str, list[float]] = {name: [] for name in runners}
    names = list(runners)
    for number in range(rounds):
        for name in names[number % len(names) :] + names[: number % len(names)]:
            results[name].append(runners[name](number))
        print(f"round {number + 1}: " + ", ".join(f"{k} {v[-1]:.0f} msg/s" for k, v in results.items()), flush=True)
    # Last and once: Postfix deletes its queue files after delivery, and on a file system without a
    # journal creating files is slow for minutes after many deletions; it would slow whatever came next.
    results["postfix-maildir"] = [run_postfix_maildir(0)]
    print(f"postfix into a Maildir: {results['postfix-maildir'][0]:.0f} msg/s", flush=True)
    return results, cpu


# ---------------------------------------------------------------------------- memory
def _status_mb(pid: int, field: str) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(f"{field}:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError(f"no {field}")


def peak_rss_mb(pid: int) -> float:
    """The peaks (VmHWM) of `pid` and every process below it, added up (no less than the peak of their sum)."""
    return sum(_status_mb(p, "VmHWM") for p in tree(pid))


def rss_mb(pid: int) -> float:
    return sum(_status_mb(p, "VmRSS") for p in tree(pid))


def idle_connections(count: int = 1000) -> tuple[float, float]:
    """Baseline RSS and peak RSS with `count` connections that said EHLO and then nothing."""
    with tempfile.TemporaryDirectory(prefix="mw-bench-") as tmp, mailwarden(Path(tmp)) as instance:
        pid = instance.pid
        baseline = rss_mb(pid)
        sockets: list[socket.socket] = []
        try:
            for _ in range(count):
                sock = socket.create_connection(("127.0.0.1", instance.smtp_port), timeout=60)
                sockets.append(sock)
                sock.recv(1024)
                sock.sendall(b"EHLO idle.example\r\n")
            for sock in sockets:
                reply = b""
                while not reply.endswith(b"CHUNKING\r\n"):
                    chunk = sock.recv(4096)
                    if not chunk:
                        raise RuntimeError("a connection was closed: raise the limits")
                    reply += chunk
            time.sleep(1)
            return baseline, peak_rss_mb(pid)
        finally:
            for sock in sockets:
                sock.close()


async def _send_big(port: int, size: int) -> str:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)

    async def reply() -> str:
        line = await reader.readline()
        while line[3:4] == b"-":
            line = await reader.readline()
        return line.decode()

    await reply()
    for command in (
        b"EHLO big.example",
        f"MAIL FROM:<{SENDER}> SIZE={size}".encode(),
        f"RCPT TO:<{RECIPIENT}>".encode(),
        b"DATA",
    ):
        writer.write(command + b"\r\n")
        await reply()
    line = b"x" * 76 + b"\r\n"
    block = b"Subject: big\r\n\r\n" + line * (1024 * 1024 // len(line))
    sent = 0
    while sent < size:
        writer.write(block)
        sent += len(block)
        await writer.drain()
    writer.write(b".\r\nQUIT\r\n")
    answer = await reply()
    writer.close()
    return answer


def big_messages(clients: int = 50, size: int = 20 * 1024 * 1024) -> tuple[float, float, int]:
    """Baseline RSS, peak RSS and accepted count with `clients` sending `size` bytes each at once."""
    with tempfile.TemporaryDirectory(prefix="mw-bench-") as tmp, mailwarden(Path(tmp)) as instance:
        pid = instance.pid
        baseline = rss_mb(pid)

        async def all_clients() -> list[str]:
            return await asyncio.gather(*(_send_big(instance.smtp_port, size) for _ in range(clients)))

        answers = asyncio.run(all_clients())
        accepted = sum(1 for a in answers if a.startswith("250"))
        return baseline, peak_rss_mb(pid), accepted


# ---------------------------------------------------------------------------- report
def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=3, help="throughput runs per server (median counts)")
    parser.add_argument("--only", choices=["throughput", "memory"], help="run only this part")
    parser.add_argument(
        "--compare-src",
        type=Path,
        metavar="DIR",
        help="only (a), from this tree and from DIR (the src/ of another version, e.g. unpacked with `git archive "
        "REV src`) in alternating rounds: msg/s of both and the median of the rounds' ratios",
    )
    parser.add_argument(
        "--compare-metrics",
        action="store_true",
        help="only (a), with [metrics] listen set and without, in alternating rounds: msg/s and CPU ms per message",
    )
    parser.add_argument("--serve-bare", type=int, metavar="PORT", help=argparse.SUPPRESS)
    parser.add_argument("--serve-floor", nargs="+", metavar="PORT MAILDIR [STORE]", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve_bare:
        serve_bare_aiosmtpd(args.serve_bare)
        return 0
    if args.serve_floor:
        port, maildir, *store = args.serve_floor
        serve_floor(int(port), Path(maildir), Path(store[0]) if store else None)
        return 0
    if args.compare_metrics:
        with tempfile.TemporaryDirectory(prefix="mw-bench-") as workdir:
            measured = compare_metrics(args.rounds, Path(workdir))
        on, off = measured["on"], measured["off"]
        ratios = [a[0] / b[0] for a, b in zip(on, off, strict=True)]
        print(
            f"smtp-source -s {SESSIONS} -m {MESSAGES} -l {MESSAGE_BYTES}, median of {args.rounds} rounds: "
            f"metrics on {statistics.median(r for r, _ in on):.0f} msg/s "
            f"{statistics.median(c for _, c in on):.3f} ms CPU/msg, "
            f"off {statistics.median(r for r, _ in off):.0f} msg/s {statistics.median(c for _, c in off):.3f} ms CPU/msg, "
            f"ratio on/off {statistics.median(ratios):.2f}"
        )
        return 0
    if args.compare_src:
        with tempfile.TemporaryDirectory(prefix="mw-bench-") as workdir:
            runs = compare(args.rounds, args.compare_src.resolve(), Path(workdir))
        ratios = [a / b for a, b in zip(runs["this"], runs["other"], strict=True)]
        print(
            f"smtp-source -s {SESSIONS} -m {MESSAGES} -l {MESSAGE_BYTES}, median of {args.rounds} rounds: "
            f"this {statistics.median(runs['this']):.0f} msg/s, {args.compare_src} "
            f"{statistics.median(runs['other']):.0f} msg/s, ratio {statistics.median(ratios):.2f}"
        )
        return 0
    for tool in ("smtp-source", "postfix"):
        if shutil.which(tool) is None and not Path(f"/usr/sbin/{tool}").exists():
            print(f"needs {tool} (Debian package postfix)", file=sys.stderr)
            return 2
    try:
        import aiosmtpd  # noqa: F401
    except ImportError:
        print(
            "needs aiosmtpd for the reference server: .venv/bin/pip install -r bench/requirements.txt", file=sys.stderr
        )
        return 2
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (max(soft, min(hard, 8192)), hard))  # inherited by the servers
    try:
        import uvloop  # noqa: F401

        loop = "uvloop"
    except ImportError:
        loop = "asyncio"
    print(f"machine: {os.cpu_count()} cores; event loop for (a) and (b): {loop}", flush=True)
    report: list[str] = []
    verdicts: list[tuple[str, bool]] = []
    if args.only in (None, "throughput"):
        # Files are removed only at the end: on ext4 without a journal, creating files right after
        # deleting thousands is slow (recently deleted inodes are skipped), which would punish the next server.
        # All servers keep their files under one directory, so that they allocate inodes alike.
        with tempfile.TemporaryDirectory(prefix="mw-bench-") as workdir:
            Path(workdir).chmod(0o755)  # Postfix's daemons (user postfix) must reach their directories
            tempfile.tempdir = workdir  # where the private Postfix makes its directory
            try:
                runs, cpu = throughput(args.rounds, Path(workdir))
            finally:
                tempfile.tempdir = None
        rates = {name: statistics.median(values) for name, values in runs.items()}

        def ratio(peer: str) -> float:
            """The median of the rounds' ratios: a pair from one round shares that round's load."""
            return statistics.median(a / b for a, b in zip(runs["mailwarden"], runs[peer], strict=True))

        def spread(name: str) -> str:
            return f"{min(runs[name]):.0f}-{max(runs[name]):.0f}"

        to_postfix, to_one, cpu_two = ratio("postfix"), ratio("mailwarden-1"), statistics.median(cpu["mailwarden"])
        report += [
            f"smtp-source -s {SESSIONS} -m {MESSAGES} -l {MESSAGE_BYTES}, median of {args.rounds} rounds (spread):",
            f"  (a)  mailwarden, workers = 2     {rates['mailwarden']:7.0f} msg/s ({spread('mailwarden')}), "
            f"CPU {cpu_two:.2f} ms/msg  (checks: recipients, size, content)",
            f"  (a1) mailwarden, workers = 1     {rates['mailwarden-1']:7.0f} msg/s ({spread('mailwarden-1')}), "
            f"CPU {statistics.median(cpu['mailwarden-1']):.2f} ms/msg",
            f"  (b)  bare aiosmtpd               {rates['aiosmtpd']:7.0f} msg/s ({spread('aiosmtpd')})",
            f"  (c)  Postfix, queue only         {rates['postfix']:7.0f} msg/s ({spread('postfix')}), "
            f"CPU {statistics.median(cpu['postfix']):.2f} ms/msg  (master and all its daemons)",
            f"  (c') Postfix, into a Maildir     {rates['postfix-maildir']:7.0f} msg/s  (once, last; until all are delivered)",
            f"  (d)  Python floor, fsynced       {rates['floor']:7.0f} msg/s ({spread('floor')}), "
            f"CPU {statistics.median(cpu['floor']):.2f} ms/msg  (dialogue and fsynced Maildir file only)",
            f"  (e)  Python floor with evidence  {rates['floor+evidence']:7.0f} msg/s ({spread('floor+evidence')}), "
            f"CPU {statistics.median(cpu['floor+evidence']):.2f} ms/msg  ((d) and the eight events committed before the 250)",
            "  ratios of (a), median of the rounds' ratios:",
            f"    to (c)   {to_postfix:4.0%}  (target >= 100 %)",
            f"    to (a1)  {to_one:4.0%}  (target >= 160 %)",
            f"    to (b)   {ratio('aiosmtpd'):4.0%}",
            f"    to (c')  {rates['mailwarden'] / rates['postfix-maildir']:4.0%}  (median of (a) to the one run of (c'))",
            f"    to (d)   {ratio('floor'):4.0%}",
            f"    to (e)   {ratio('floor+evidence'):4.0%}",
            f"  CPU of (a1) above the floor (d): {statistics.median(cpu['mailwarden-1']) - statistics.median(cpu['floor']):.2f} "
            "ms/msg (checks, events and their store, evidence, journal)",
        ]
        verdicts += [
            ("throughput vs Postfix", to_postfix >= 1.0),
            ("workers = 2 vs 1", to_one >= 1.6),
            ("CPU per message", cpu_two <= 1.0),
        ]
    if args.only in (None, "memory"):
        base_idle, peak_idle = idle_connections()
        base_big, peak_big, accepted = big_messages()
        report += [
            "peak RSS of all mailwarden processes together (VmHWM, workers = 2):",
            f"  1,000 idle connections:        {peak_idle:6.1f} MB (at start {base_idle:.1f} MB; target < 300 MB)",
            f"  50 concurrent 20 MB messages:  {peak_big:6.1f} MB (at start {base_big:.1f} MB; "
            f"{accepted} of 50 accepted; target < 300 MB)",
        ]
        verdicts += [("RSS idle", peak_idle < 300), ("RSS big", peak_big < 300 and accepted == 50)]
    print("\n".join(report))
    print("targets: " + ", ".join(f"{name} {'met' if ok else 'MISSED'}" for name, ok in verdicts))
    return 0


if __name__ == "__main__":
    sys.exit(main())
