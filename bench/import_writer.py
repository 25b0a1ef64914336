"""The bulk import's writer alone: CPU per event of the whole write, and of its floor.

    .venv/bin/python -m bench.import_writer [--log /tmp/mailwarden-bench/mail.log] [--store-mb 100] [--rounds 2]

`mailwarden ingest` parses in one process and writes in another (`store/sqlite_bulk.py`), so an
import runs at the pace of the slower one. This takes the batches the importer sends for the first
`--store-mb` MB of bench/ingest.py's log (the same slice as its import line), pickled as they cross
the pipe, and replays them in this process, alternating, into a fresh store each time:

- full: `sqlite.BulkWrites`, as the writer process runs it (keys, queue files, links, the message
  index, the positions; one transaction per batch);
- floor: the least any writer of these batches does - unpickle, make the rows of the events that
  came as fields, insert every row into the events table (its indexes as they are), save the
  positions, commit - with no key, queue file, link or message index.

CPU seconds of this process per event (the replay has the machine's cores to itself otherwise).
With `--growth`, the full write alone, once, printing its CPU per event for every ten batches
with the size of the store so far: what an import into a store that already holds events costs.
The difference is what the message index and its links cost per event; 40,000 events/s (issue 12)
needs both the parsing process (bench/ingest.py's "import CPU" line) and the writer at 25 us/event.
"""

from __future__ import annotations

import argparse
import pickle
import statistics
import tempfile
import time
from collections.abc import Callable, Sequence
from datetime import UTC
from pathlib import Path

from mailwarden.collector import rare_collections
from mailwarden.events import FIELDS, Event, now_us
from mailwarden.ingest.inputs import Importer
from mailwarden.ingest.pipeline import Ingester
from mailwarden.store import sqlite_bulk
from mailwarden.store.base import Position
from mailwarden.store.sql import SQLITE
from mailwarden.store.sqlite import BulkWrites, SqliteStore
from mailwarden.store.sqlite_messages import insert_prepared

_INSERT_EVENTS = f"INSERT INTO events ({', '.join(FIELDS)})"


class _Recording(SqliteStore):
    """A store that keeps each bulk batch as it would cross to the writer process, and writes none."""

    def __init__(self, path: Path) -> None:
        super().__init__(path)
        self.batches: list[bytes] = []

    def append_bulk(self, events: Sequence[Event], positions: Sequence[Position] = ()) -> None:
        self.batches.append(pickle.dumps((sqlite_bulk.packed(events), list(positions)), protocol=5))

    def append_bulk_part(self, events: Sequence[Event]) -> bool:
        return False  # whole batches: the writer does the same work for a batch's parts, in one transaction


def batches_of(log: Path, megabytes: int, directory: Path) -> list[bytes]:
    head = directory / "head.log"
    with log.open("rb") as source, head.open("wb") as target:
        target.write(source.read(megabytes * 1_000_000).rpartition(b"\n")[0] + b"\n")
    store = _Recording(directory / "recording.db")
    try:
        Importer(store, Ingester(store.append, zone=UTC)).run([str(head)])
        return store.batches
    finally:
        store.close()


def write_full(writer: BulkWrites, batches: list[bytes]) -> None:
    for batch in batches:
        packed, positions = pickle.loads(batch)
        writer.write(sqlite_bulk.unpacked(packed), positions)


def write_floor(writer: BulkWrites, batches: list[bytes]) -> None:
    for batch in batches:
        packed, positions = pickle.loads(batch)
        events, rows, places = sqlite_bulk.unpacked(packed)
        for place, event in zip(places, events, strict=True):
            if rows[place] is None:
                rows[place] = event.to_row()
        writer.conn.execute("BEGIN")
        insert_prepared(writer.conn, _INSERT_EVENTS, rows)
        writer.conn.executemany(SQLITE.save_positions, [(p.name, p.value, now_us()) for p in positions])
        writer.conn.execute("COMMIT")


def cpu_per_event(write: Callable[[BulkWrites, list[bytes]], None], batches: list[bytes], directory: Path) -> float:
    with tempfile.TemporaryDirectory(dir=directory) as fresh:
        path = Path(fresh) / "replay.db"
        SqliteStore(path).close()
        writer = BulkWrites(path)
        try:
            with rare_collections():  # as in the writer process
                started = time.process_time()
                write(writer, batches)
                return time.process_time() - started
        finally:
            writer.close()


def growth(batches: list[bytes], directory: Path, every: int = 10) -> None:
    path = directory / "growth.db"
    SqliteStore(path).close()
    writer = BulkWrites(path)
    seconds, events, written = 0.0, 0, 0
    try:
        with rare_collections():
            for number, batch in enumerate(batches, 1):
                started = time.process_time()
                packed, positions = pickle.loads(batch)
                unpacked = sqlite_bulk.unpacked(packed)
                writer.write(unpacked, positions)
                seconds += time.process_time() - started
                events += len(unpacked[1])
                if number % every == 0 or number == len(batches):
                    written += events
                    megabytes = path.stat().st_size / 1e6
                    print(f"up to {written:>9,} events ({megabytes:5,.0f} MB): {seconds * 1e6 / events:5.1f} us/event")
                    seconds, events = 0.0, 0
    finally:
        writer.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--log", type=Path, default=Path(tempfile.gettempdir()) / "mailwarden-bench" / "mail.log")
    parser.add_argument("--store-mb", type=int, default=100)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--growth", action="store_true", help="the full write by the store's size, once")
    args = parser.parse_args()
    if not args.log.exists():
        raise SystemExit(f"{args.log} does not exist: run `.venv/bin/python -m bench.ingest` first, which makes it")
    with tempfile.TemporaryDirectory() as directory:
        batches = batches_of(args.log, args.store_mb, Path(directory))
        events = sum(len(sqlite_bulk.unpacked(pickle.loads(batch)[0])[1]) for batch in batches)
        print(f"the first {args.store_mb} MB of {args.log}: {len(batches)} batches, {events:,} events")
        if args.growth:
            growth(batches, Path(directory))
            return
        runs: dict[str, list[float]] = {"full": [], "floor": []}
        ways = {"full": write_full, "floor": write_floor}
        for number in range(args.rounds):
            for name in list(ways)[number % 2 :] + list(ways)[: number % 2]:
                seconds = cpu_per_event(ways[name], batches, Path(directory))
                runs[name].append(seconds * 1e6 / events)
                print(f"round {number + 1}: {name:5s} {runs[name][-1]:5.1f} us/event", flush=True)
    full, floor = statistics.median(runs["full"]), statistics.median(runs["floor"])
    print(f"writer, full:  {full:5.1f} us/event ({1e6 / full:,.0f} events/s)  keys, links, message index, positions")
    print(f"writer, floor: {floor:5.1f} us/event ({1e6 / floor:,.0f} events/s)  the events' rows and positions only")
    print(f"the message index and its links: {full - floor:.1f} us/event; 40,000 events/s needs the writer at 25.0")


if __name__ == "__main__":
    main()
