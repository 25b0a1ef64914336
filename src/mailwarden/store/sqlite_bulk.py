"""A bulk import's writer in a process of its own, so that parsing and writing use two cores.

`mailwarden ingest` of archives parses on one core; in one process the SQLite writer thread had
to share the interpreter with the parser, and parsing and writing took turns (measured: the
writer's part, the message index included, is two thirds of an import's CPU). Here the importer
hands each batch (its events and the reading positions after them, pickled into a memory file
whose descriptor crosses a pipe) to a child process that writes it exactly as the writer thread
would (`sqlite.write_batch`: events, message index and positions in one transaction, through
APSW: `sqlite.BulkWrites`), while the importer parses the next batch.

A crash of either side keeps store and positions in step: each batch is committed with its
positions or not at all; the child stops when the importer's end of the pipe closes.
"""

from __future__ import annotations

import mmap
import multiprocessing
import os
import pickle
import subprocess
import sys
from collections.abc import Sequence
from multiprocessing import reduction
from multiprocessing.connection import Connection
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final

from mailwarden.collector import rare_collections
from mailwarden.events import Event, field_values
from mailwarden.messages.legacy import stays_keyless
from mailwarden.store.base import Position, StoreError, made_storable

if TYPE_CHECKING:
    from mailwarden.store.sqlite import BulkWrites

_IN_FLIGHT: Final = 4  # batches or parts sent and not yet written before `put` waits (memory)

Rows = list[tuple[Any, ...] | None]
Places = list[int]
Part = tuple[list[Event], Rows, Places]
"""A batch, or part of one, as the writer takes it: the events it keys, links and folds, every row
in order (None where it makes the row), and the place of each of those events among the rows."""
Packed = tuple[list[tuple[Any, ...]], Rows, Places]
"""A batch as it crosses the pipe: the field tuples of the events the writer keys, links and
folds; every event's row in order (`Event.to_row`), None where the writer must make it after
giving the event its key; and the place of each of those events among the rows."""


def packed(events: Sequence[Event]) -> Packed:
    """Rows are made here, in the parsing process, the less busy of the two. Half the events of an
    import (a connection's own: connect, disconnect, logins) are only stored: they go as their rows
    alone, and the writer neither rebuilds them as events nor serializes their `detail`. The others
    go as their fields too, with their row when they have their key already (all but those the
    writer keys by the old rules). Pickling sends each string once, however many tuples hold it.
    Measured on the 100 MB slice of bench/ingest.py: the writer about 1 us/event cheaper for the
    keyed rows, the parsing process about as much dearer (six alternating pairs, 2026-12-07)."""
    folded: list[tuple[Any, ...]] = []
    rows: Rows = []
    places: Places = []
    for event in events:
        if stays_keyless(event):
            rows.append(event.to_row())
            continue
        folded.append(field_values(event))
        places.append(len(rows))
        rows.append(None if event.message_key is None else event.to_row())
    return folded, rows, places


def unpacked(batch: Packed) -> Part:
    folded, rows, places = batch
    return [Event(*fields) for fields in folded], rows, places


class BulkProcess:
    """The importer's side: batches out, a commit or an error back for each."""

    def __init__(self, path: Path) -> None:
        # A fresh interpreter: nothing of this process's threads, locks or SQLite connections.
        self._pipe, child = multiprocessing.Pipe()
        self._process = subprocess.Popen(
            [sys.executable, "-m", __name__, str(path), str(child.fileno())], pass_fds=[child.fileno()]
        )
        child.close()
        self._in_flight = 0

    def put(self, events: Sequence[Event], positions: Sequence[Position], commit: bool = True) -> None:
        """Send a batch, or with `commit` False a part of one (`Store.append_bulk_part`)."""
        while self._in_flight >= _IN_FLIGHT or (self._in_flight and self._pipe.poll()):
            self._answer()
        try:
            batch = (packed(events), list(positions), commit)
            _send_batch(self._pipe, pickle.dumps(batch, protocol=5), self._process.pid)
        except OSError:
            self._in_flight = 0
            raise _ended() from None
        self._in_flight += 1

    def flush(self) -> None:
        while self._in_flight:
            self._answer()

    def close(self) -> None:
        try:
            self.flush()
        finally:
            self._pipe.close()
            self._process.wait()

    @property
    def pid(self) -> int:
        return self._process.pid

    def _answer(self) -> None:
        try:
            error = self._pipe.recv()
        except (EOFError, OSError):
            self._in_flight = 0  # nothing more will be answered
            raise _ended() from None
        self._in_flight -= 1
        if error is not None:
            raise StoreError(f"event store write failed: {error}")


def _ended() -> StoreError:
    return StoreError(
        "the bulk writer process ended unexpectedly (killed, or out of memory?); run the import again: "
        "it continues after the last batch committed"
    )


def _write_storable(writer: BulkWrites, part: Part, positions: list[Position], commit: bool) -> None:
    """`store.base.write_storable` for parts that crossed as rows: when a write fails, every part of
    its transaction is made storable and written again (running the import again would fail at
    the same batch for ever)."""
    try:
        writer.write(part, positions, commit)
    except Exception as exc:
        parts = writer.rolled_back()
        remade = [_storable(every, exc) for every in parts]
        if not any(changed for _, changed in remade):
            raise
        for again, _ in remade[:-1]:
            writer.write(again, [], commit=False)
        writer.write(remade[-1][0], positions, commit)


def _storable(part: Part, problem: Exception) -> tuple[Part, bool]:
    """The part with its events made storable and their rows made again; whether any changed."""
    events, rows, places = part
    keyed = dict(zip(places, events, strict=True))
    every = [keyed[place] if row is None or place in keyed else Event.from_row(row) for place, row in enumerate(rows)]
    if not made_storable(every, problem):
        return part, False
    rows = [None if row is None else event.to_row() for row, event in zip(rows, every, strict=True)]
    return (events, rows, places), True


def _send_batch(pipe: Connection, data: bytes, pid: int) -> None:
    """Hand a pickled batch to the child as a memory file whose descriptor crosses the pipe. Through
    the pipe itself, `send` returned only once the child had read all of it, a few hundred
    kilobytes per read, each read waiting for the writing thread to let go of the interpreter:
    the importer waited about 0.1 s per batch of 40,000 events (1.1 s over bench/ingest.py's
    100 MB slice). A memory file is written and read in one call each."""
    fd = os.memfd_create("mailwarden-bulk-batch", os.MFD_CLOEXEC)
    try:
        with open(fd, "wb", closefd=False) as memory:
            memory.write(data)
        reduction.send_handle(pipe, fd, pid)
    finally:
        os.close(fd)


def _received_batch(pipe: Connection) -> Any:
    """The next batch `_send_batch` handed over; EOFError when the importer's end is closed."""
    fd = reduction.recv_handle(pipe)
    try:
        with mmap.mmap(fd, 0, prot=mmap.PROT_READ) as memory:
            return pickle.loads(memory)
    finally:
        os.close(fd)


def _write(path: str, pipe: Connection) -> None:
    """The child: write each batch received until the pipe closes; report each commit or the first error."""
    from mailwarden.store import sqlite

    writer = sqlite.BulkWrites(Path(path))
    try:
        while True:
            try:
                batch, positions, commit = _received_batch(pipe)
            except EOFError:
                return  # a transaction still open (parts without their batch's end) is rolled back
            try:
                _write_storable(writer, unpacked(batch), positions, commit)
            except Exception as exc:  # disk full, locked database, ...: the importer stops and says why
                pipe.send(str(exc))
                return
            pipe.send(None)
    finally:
        writer.close()


if __name__ == "__main__":
    with rare_collections():
        _write(sys.argv[1], Connection(int(sys.argv[2])))
