"""Events from several SMTP worker processes into one SQLite store: a writer per worker, or one writer for all.

    python -m bench.event_writers                      # 2 workers, 3 rounds of each, 10 s each
    python -m bench.event_writers --workers 4 --seconds 20

Each worker process runs `--sessions` concurrent sessions on its event loop, each sending messages
one after the other as the gateway records them: five events queued (connect, helo, mail, rcpt,
data), then the delivery's two (deliver, accept) committed and waited for (`Store.durable`, the
250), then the disconnect. Same events, same store, two ways to write them:
  each     every worker opens the store with its own writer thread (SQLite's write lock taken in
           turn, an fsync per commit of each worker),
  service  the workers send their events to one writer in the parent (store/remote.py, what the
           supervisor does): all workers' commits in one transaction.
Prints messages/s, events/s and the CPU of workers and writer per message (user+system), the
median of the rounds, alternating the two ways.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import resource
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from mailwarden.events import Event  # noqa: E402
from mailwarden.store import open_store_url  # noqa: E402
from mailwarden.store.remote import EventClient, EventService  # noqa: E402


def _events(worker: int, session: int, number: int) -> tuple[list[Event], list[Event], Event]:
    ref = f"W{worker}S{session:03d}N{number:07d}"[:12]
    common = {
        "source": "gateway",
        "node": "mx1",
        "session": ref,
        "ref": ref,
        "client_ip": "192.0.2.7",
        "helo": "c.test",
    }
    queued = [
        Event(kind="connect", detail={"port": 40000 + session}, **common),
        Event(kind="helo", detail={"esmtp": True}, **common),
        Event(kind="mail", sender="alice@sender.test", **common),
        Event(
            kind="rcpt", sender="alice@sender.test", recipient="bob@example.test", detail={"mailbox": "bob"}, **common
        ),
        Event(kind="data", sender="alice@sender.test", size=10240, message_id=f"<{ref}@s.test>", **common),
    ]
    committed = [
        Event(
            kind="deliver",
            sender="alice@sender.test",
            recipient="bob@example.test",
            reason="delivered",
            size=10_500,
            detail={"mailbox": "bob@example.test", "folder": "INBOX", "uid": f"1.M1P1Q{number}.mx"},
            **common,
        ),
        Event(kind="accept", sender="alice@sender.test", smtp_code=250, enhanced_code="2.0.0", **common),
    ]
    return queued, committed, Event(kind="disconnect", detail={"commands": {"mail": 1}}, **common)


def run_worker(store_path: str, mode: str, fd: int, worker: int, sessions: int, seconds: float) -> None:
    """One worker process: print the messages it got committed."""
    writer = EventClient(socket.socket(fileno=fd), 0.05) if mode == "service" else None
    store = open_store_url(f"sqlite:///{store_path}", writer=writer)

    async def session(number: int, deadline: float, done: list[int]) -> None:
        count = 0
        while time.monotonic() < deadline:
            queued, committed, last = _events(worker, number, count)
            store.append_many(queued)
            await store.durable(committed)
            store.append(last)
            count += 1
        done.append(count)

    async def main() -> int:
        done: list[int] = []
        deadline = time.monotonic() + seconds
        await asyncio.gather(*(session(n, deadline, done) for n in range(sessions)))
        return sum(done)

    messages = asyncio.run(main())
    store.close()
    print(messages, flush=True)


def one_round(mode: str, workers: int, sessions: int, seconds: float, directory: Path) -> tuple[float, float]:
    """(messages/s, CPU ms per message of workers and writer together)."""
    path = directory / f"{mode}-{time.monotonic_ns()}.db"
    open_store_url(f"sqlite:///{path}").close()  # the schema, before the workers race to make it
    service_store = open_store_url(f"sqlite:///{path}") if mode == "service" else None
    service = EventService(service_store) if service_store is not None else None
    before_self = resource.getrusage(resource.RUSAGE_SELF)
    before_children = resource.getrusage(resource.RUSAGE_CHILDREN)
    processes, links = [], []
    started = time.perf_counter()
    for number in range(workers):
        ours, theirs = socket.socketpair()
        if service is not None:
            links.append(service.serve(ours, f"worker {number}"))
        else:
            ours.close()
        arguments = [str(path), mode, str(theirs.fileno()), str(number), str(sessions), str(seconds)]
        processes.append(
            subprocess.Popen(
                [sys.executable, __file__, "--run-worker", *arguments],
                pass_fds=[theirs.fileno()],
                stdout=subprocess.PIPE,
                text=True,
            )
        )
        theirs.close()
    messages = sum(int(process.communicate()[0]) for process in processes)
    elapsed = time.perf_counter() - started
    for link in links:
        link.join()
    if service_store is not None:
        service_store.close()
    after_self = resource.getrusage(resource.RUSAGE_SELF)
    after_children = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = sum(
        getattr(after, name) - getattr(before, name)
        for after, before in ((after_children, before_children), (after_self, before_self))
        for name in ("ru_utime", "ru_stime")
    )
    # The workers' start (imports, opening the store) is in their CPU too, the same for both ways.
    return messages / elapsed, cpu * 1000 / max(messages, 1)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--sessions", type=int, default=10, help="concurrent sessions per worker")
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--run-worker", nargs=6, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.run_worker:
        path, mode, fd, worker, sessions, seconds = args.run_worker
        run_worker(path, mode, int(fd), int(worker), int(sessions), float(seconds))
        return 0
    print(f"machine: {os.cpu_count()} cores, load {os.getloadavg()[0]:.1f}", flush=True)
    results: dict[str, list[tuple[float, float]]] = {"each": [], "service": []}
    with tempfile.TemporaryDirectory(prefix="mw-bench-") as tmp:
        for number in range(args.rounds):
            for mode in ("each", "service") if number % 2 == 0 else ("service", "each"):
                results[mode].append(one_round(mode, args.workers, args.sessions, args.seconds, Path(tmp)))
            print(
                f"round {number + 1}: "
                + ", ".join(f"{m} {r[-1][0]:.0f} msg/s {r[-1][1]:.2f} ms CPU/msg" for m, r in results.items()),
                flush=True,
            )
    print(f"{args.workers} workers x {args.sessions} sessions, {args.seconds:g} s, median of {args.rounds} rounds:")
    for mode, runs in results.items():
        rates, cpus = [r for r, _ in runs], [c for _, c in runs]
        print(
            f"  {mode:8} {statistics.median(rates):7.0f} msg/s ({min(rates):.0f}-{max(rates):.0f}), "
            f"{statistics.median(rates) * 8:7.0f} events/s, CPU {statistics.median(cpus):.2f} ms per message"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
