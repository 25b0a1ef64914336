"""Ingest speed: lines/s parsed on one core and events/s stored, with `grep -c` over the same file as the floor.

    .venv/bin/python -m bench.ingest [--log /tmp/mailwarden-bench/mail.log] [--size-mb 1024] [--store-mb 100]

Builds the log with bench/ingest_log.py unless it exists (a realistic mixed Postfix + Dovecot log of
about `--size-mb` MB, classic syslog format, two hosts), then in one run:

1. floor: `grep -c ''` over the file (counts lines; reading the file costs the same for both);
2. parse: the whole file through the ingest pipeline (framing, parsers, correlation, holdback)
   into a sink that only counts events, as `mailwarden ingest` runs it (the garbage collector
   relaxed the same way); CPU seconds of this process (one core), so other load on the machine
   shifts the figure less than wall time would;
3. store: the first `--store-mb` MB through the same pipeline into a SQLite store, the events
   queued one by one (as a follower and the gateway queue theirs; the batching writer thread
   commits in the background), and the same lines as `mailwarden ingest` imports them (bulk
   transactions with their positions, written by a process of their own); wall time until
   everything is committed, events/s, and the CPU time per event of the parsing and the writing
   process (steadier than wall time on a shared machine).

Prints each figure and the ratio of our lines/s to grep's. The target is >= 100,000 lines/s on one core.
"""

from __future__ import annotations

import argparse
import os
import resource
import subprocess
import tempfile
import time
from datetime import UTC
from pathlib import Path

from bench.ingest_log import Generator
from mailwarden.collector import rare_collections
from mailwarden.events import Event
from mailwarden.ingest.inputs import Importer, Positions
from mailwarden.ingest.pipeline import Ingester
from mailwarden.ingest.sources import decode
from mailwarden.store.sqlite import SqliteStore


def _children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def grep_floor(path: Path) -> tuple[int, float, float]:
    """(lines, wall s, CPU s) of `grep -c ''`."""
    cpu = _children_cpu()
    started = time.perf_counter()
    done = subprocess.run(["grep", "-c", "", str(path)], capture_output=True, text=True, check=True)
    return int(done.stdout), time.perf_counter() - started, _children_cpu() - cpu


def parse(path: Path, limit_bytes: int | None, sink: object) -> tuple[Ingester, float, float]:
    """Feed the file (or its first `limit_bytes`) to an ingester; (ingester, wall s, CPU s)."""
    assert callable(sink)
    ingester = Ingester(sink, zone=UTC)
    stream = ingester.stream(str(path), int(path.stat().st_mtime * 1_000_000))
    feed = ingester.feed
    started, cpu = time.perf_counter(), time.process_time()
    offset = 0
    with rare_collections(), path.open("rb", buffering=1 << 20) as handle:
        for raw in handle:
            feed(stream, decode(raw, 65_536), offset)
            offset += len(raw)
            if limit_bytes is not None and offset >= limit_bytes:
                break
    ingester.finish()
    return ingester, time.perf_counter() - started, time.process_time() - cpu


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--log", type=Path, default=Path(tempfile.gettempdir()) / "mailwarden-bench" / "mail.log")
    parser.add_argument("--size-mb", type=int, default=1024)
    parser.add_argument("--store-mb", type=int, default=100)
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args()

    if not args.log.exists():
        args.log.parent.mkdir(parents=True, exist_ok=True)
        started = time.perf_counter()
        lines = Generator(args.seed).run(args.size_mb * 1_000_000, args.log)
        print(f"generated {lines:,} lines in {time.perf_counter() - started:.0f} s -> {args.log}")
    size = args.log.stat().st_size
    print(f"log: {args.log} ({size / 1e6:,.0f} MB), {os.cpu_count()} cores on this machine")

    lines, grep_wall, grep_cpu = grep_floor(args.log)
    grep_rate = lines / max(grep_cpu, 1e-9)
    print(f"grep -c '':  {lines:,} lines, {grep_wall:.1f} s wall, {grep_cpu:.1f} s CPU = {grep_rate:,.0f} lines/s")

    count = [0]

    def counting(event: Event) -> None:
        count[0] += 1

    ingester, wall, cpu = parse(args.log, None, counting)
    stats = ingester.stats
    rate = stats.lines / cpu
    print(
        f"parse:       {stats.lines:,} lines, {wall:.1f} s wall, {cpu:.1f} s CPU = {rate:,.0f} lines/s on one core "
        f"({stats.events:,} events, {stats.unknown_total:,} unknown lines)"
    )
    print(
        f"ratio:       grep is {grep_rate / rate:.1f}x faster than parsing; target 100,000 lines/s: "
        f"{'met' if rate >= 100_000 else 'NOT met'}"
    )

    with tempfile.TemporaryDirectory() as directory:
        store = SqliteStore(Path(directory) / "each.db")
        try:
            started = time.perf_counter()
            stored, _, _ = parse(args.log, args.store_mb * 1_000_000, store.append)
            store.flush()
            store_wall = time.perf_counter() - started
        finally:
            store.close()
        print(
            f"store:       first {args.store_mb} MB: {stored.stats.lines:,} lines -> {stored.stats.events:,} events, "
            f"one by one (as the follower and the gateway queue them), committed in {store_wall:.1f} s wall = "
            f"{stored.stats.events / store_wall:,.0f} events/s ({stored.stats.lines / store_wall:,.0f} lines/s)"
        )
        head = Path(directory) / "head.log"
        with args.log.open("rb") as source, head.open("wb") as target:
            target.writelines(line for line, _ in zip(source, range(stored.stats.lines), strict=False))
        store = SqliteStore(Path(directory) / "bulk.db")
        try:
            imported = Ingester(store.append, zone=UTC)
            started, cpu, writer_cpu = time.perf_counter(), time.process_time(), _children_cpu()
            Importer(store, imported).run([str(head)])
            store.flush()
            bulk_wall = time.perf_counter() - started
            bulk_cpu = time.process_time() - cpu
        finally:
            store.close()
        writer_cpu = _children_cpu() - writer_cpu
        print(
            f"import:      the same {imported.stats.lines:,} lines -> {imported.stats.events:,} events as "
            f"`mailwarden ingest` stores them (bulk transactions of {Positions.BULK_EVENTS:,}+ events with their "
            f"positions) in {bulk_wall:.1f} s wall = {imported.stats.events / bulk_wall:,.0f} events/s "
            f"({imported.stats.lines / bulk_wall:,.0f} lines/s); {store_wall / bulk_wall:.1f}x one by one"
        )
        events = max(imported.stats.events, 1)
        print(
            f"import CPU:  parsing process {bulk_cpu:.1f} s = {bulk_cpu / events * 1e6:.1f} us/event, writer process "
            f"{writer_cpu:.1f} s = {writer_cpu / events * 1e6:.1f} us/event (on an idle 2-core machine the import "
            f"runs at the slower one's pace: {events / max(bulk_cpu, writer_cpu):,.0f} events/s)"
        )


if __name__ == "__main__":
    main()
