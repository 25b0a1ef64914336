"""Events/s written to one PostgreSQL by two nodes at once (issue 14's target: 50,000 together).

    .venv/bin/python -m bench.postgres_write [--events 400000] [--url postgresql://...]

Without `--url` it starts a private PostgreSQL 15 as the tests do (tests/support/postgres.py:
initdb, fsync on, loopback). Each node is a process with a PostgresStore of its own (pool, writer thread) that
gets gateway-like messages (rcpt, accept, deliver per message, keys stamped, index kept) in bulk
batches of 5,000 events, as `mailwarden ingest` hands them over; the clock runs until both have
committed everything. The same events written by one node to SQLite are the reference. The CPU
per event of the nodes and of the private server (its ended backends included, from /proc) says
what the two cores can give at most, whatever else runs on the machine.
"""

from __future__ import annotations

import argparse
import multiprocessing
import resource
import tempfile
import time
from multiprocessing.queues import Queue
from multiprocessing.synchronize import Barrier
from pathlib import Path

from bench.processes import tree_cpu
from mailwarden.events import Event
from mailwarden.refs import RefGenerator
from mailwarden.store import Store
from mailwarden.store.postgres import PostgresStore
from mailwarden.store.sqlite import SqliteStore

BATCH = 5000
T0 = 1_764_979_200_000_000  # 2025-12-06 00:00:00 UTC


def node_events(node: str, total: int) -> list[Event]:
    """`total` events of messages to 1,000 mailboxes, 3 per message, a millisecond apart."""
    refs = RefGenerator(node, wait_for_fresh_second=False)
    events: list[Event] = []
    number = 0
    while len(events) < total:
        ref = refs.new()
        recipient = f"user{number % 1000}@example.test"
        at = T0 + number * 1000
        common = {"ref": ref, "message_key": ref, "session": ref, "recipient": recipient}
        client = f"192.0.2.{number % 250}"
        events.append(Event("rcpt", "gateway", node, at, client_ip=client, sender="ann@example.org", **common))
        events.append(Event("accept", "gateway", node, at + 1, smtp_code=250, size=2048, **common))
        events.append(Event("deliver", "gateway", node, at + 2, reason="delivered", **common))
        number += 1
    return events[:total]


def write(store: Store, events: list[Event]) -> None:
    for start in range(0, len(events), BATCH):
        store.append_bulk(events[start : start + BATCH])
    store.flush()


def node(url: str, name: str, total: int, ready: Barrier, done: Queue[float]) -> None:
    """One node in a process of its own, as on its own machine (threads would share one interpreter)."""
    store = PostgresStore(url)
    events = node_events(name, total)
    ready.wait(timeout=600)
    write(store, events)
    done.put(time.monotonic())
    store.close()


def two_nodes(url: str, total: int) -> float:
    processes = multiprocessing.get_context("fork")
    ready, done = processes.Barrier(3), processes.Queue()
    nodes = [processes.Process(target=node, args=(url, name, total // 2, ready, done)) for name in ("mx-a", "mx-b")]
    for process in nodes:
        process.start()
    ready.wait(timeout=600)  # both have their store open and their events made (a node that died: an error)
    started = time.monotonic()
    finished = max(done.get(timeout=600) for _ in nodes)
    for process in nodes:
        process.join()
    return total / (finished - started)


def children_cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def sqlite_reference(total: int) -> float:
    with tempfile.TemporaryDirectory() as directory:
        store = SqliteStore(Path(directory) / "bench.db")
        events = node_events("mx-a", total)
        started = time.monotonic()
        write(store, events)
        seconds = time.monotonic() - started
        store.close()
    return total / seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=400_000)
    parser.add_argument("--url", help="an empty database; default: a private PostgreSQL started for the run")
    args = parser.parse_args()
    server_cpu: float | None = None
    if args.url:
        nodes_before = children_cpu_seconds()
        rate = two_nodes(args.url, args.events)
        nodes_cpu = children_cpu_seconds() - nodes_before
    else:
        from tests.support.postgres import running_postgres

        with running_postgres() as server:
            url = server.new_database()
            postmaster = int((server.root / "data" / "postmaster.pid").read_text().split()[0])
            server_before, nodes_before = tree_cpu(postmaster, reaped=True), children_cpu_seconds()
            rate = two_nodes(url, args.events)
            time.sleep(0.5)  # the nodes' backends end as their pools close
            nodes_cpu = children_cpu_seconds() - nodes_before
            server_cpu = tree_cpu(postmaster, reaped=True) - server_before
    print(f"PostgreSQL, two nodes at once: {args.events:,} events, {rate:,.0f} events/s together")
    per_event = f"CPU per event: the nodes {nodes_cpu / args.events * 1e6:.1f} us (making their events included)"
    if server_cpu is not None:
        per_event += f", PostgreSQL {server_cpu / args.events * 1e6:.1f} us (its backends included)"
    print(per_event)
    print(f"SQLite, one node (reference):  {args.events:,} events, {sqlite_reference(args.events):,.0f} events/s")


if __name__ == "__main__":
    main()
