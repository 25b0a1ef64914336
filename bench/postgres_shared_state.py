"""Greylisting and rate limits counted in PostgreSQL by two nodes at once: what a lookup costs
(issue 14, item 3: "measure; Redis from Debian only if the numbers demand it").

    .venv/bin/python -m bench.postgres_shared_state [--calls 5000] [--url postgresql://...]

Each node is a process with a PostgresStore of its own (its pool), as on its own machine; both
run at once against one private PostgreSQL 15 (tests/support/postgres.py, fsync on) unless
`--url` names a database. Per call, as the checks make them: a rate limit hit (`rate_hit`: an
upsert and the count back, one transaction) for 200 client addresses, and a greylisting RCPT
(`greylist_get`, then `greylist_put`) for 2,000 triplets. Prints p50/p95/p99 per call and the
calls a second of both nodes together.
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing
import statistics
import time
from multiprocessing.queues import Queue
from multiprocessing.synchronize import Barrier

from mailwarden.events import now_us
from mailwarden.store.base import GreylistEntry
from mailwarden.store.postgres import PostgresStore


def percentile(values: list[float], share: float) -> float:
    return statistics.quantiles(values, n=100)[int(share) - 1] if len(values) > 1 else values[0]


def rate_hits(store: PostgresStore, calls: int) -> list[float]:
    async def run() -> list[float]:
        took = []
        for number in range(calls):
            started = time.perf_counter()
            await store.rate_hit("connections", f"198.51.100.{number % 200}", time.time())
            took.append(time.perf_counter() - started)
        return took

    return asyncio.run(run())


def greylist_rcpts(store: PostgresStore, calls: int) -> list[float]:
    took = []
    for number in range(calls):
        network, sender, recipient = (
            f"192.0.2.{number % 250}",
            f"sender{number % 8}@example.org",
            f"user{number % 2000}@example.test",
        )
        started = time.perf_counter()
        now = now_us()
        entry = store.greylist_get(network, sender, recipient)
        if entry is None:
            entry = GreylistEntry(network, sender, recipient, now, now)
        store.greylist_put(
            GreylistEntry(network, sender, recipient, entry.first_seen_us, now, entry.passed_us, entry.attempts + 1)
        )
        took.append(time.perf_counter() - started)
    return took


KINDS = {"rate limit hit": rate_hits, "greylisting RCPT (get + put)": greylist_rcpts}


def node(url: str, kind: str, calls: int, ready: Barrier, done: Queue[list[float]]) -> None:
    store = PostgresStore(url)
    try:
        ready.wait(timeout=600)
        done.put(KINDS[kind](store, calls))
    finally:
        store.close()


def two_nodes(url: str, kind: str, calls: int) -> tuple[list[float], float]:
    processes = multiprocessing.get_context("fork")
    ready, done = processes.Barrier(3), processes.Queue()
    nodes = [processes.Process(target=node, args=(url, kind, calls, ready, done)) for _ in range(2)]
    for process in nodes:
        process.start()
    ready.wait(timeout=600)
    started = time.monotonic()
    took = [t for _ in nodes for t in done.get(timeout=600)]
    seconds = time.monotonic() - started
    for process in nodes:
        process.join()
    return took, len(took) / seconds


def measure(url: str, calls: int) -> None:
    PostgresStore(url).close()  # the schema, once, before the nodes start
    print(f"two nodes at once, {calls:,} calls each       p50 ms   p95 ms   p99 ms   calls/s together")
    for kind in KINDS:
        took, rate = two_nodes(url, kind, calls)
        ms = [t * 1000 for t in took]
        print(
            f"{kind:38} {percentile(ms, 50):6.2f}   {percentile(ms, 95):6.2f}   {percentile(ms, 99):6.2f}   {rate:10,.0f}"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=5000, help="calls per node and kind")
    parser.add_argument("--url", help="a database; default: a private PostgreSQL started for the run")
    args = parser.parse_args()
    if args.url:
        measure(args.url, args.calls)
        return
    from tests.support.postgres import running_postgres

    with running_postgres() as server:
        measure(server.new_database(), args.calls)


if __name__ == "__main__":
    main()
