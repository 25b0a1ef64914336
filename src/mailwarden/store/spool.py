"""The local event spool of a node whose database is away: batches on disk until it is back.

A batch the PostgreSQL store cannot write (the database is unreachable) is written here, one file
per batch, fsynced before the writer reports it committed: the gateway answers 250 only once its
evidence is on this node's disk at least. The next batches go to the spool too (order), until a
write reaches the database again; then the spooled batches are replayed oldest first, each in the
transaction that records its batch id (`written_batches`), so a batch whose commit went through
but whose file was not yet removed is not written twice. When the spool is full or cannot be
written, the batch is refused: the waiting transactions get a temporary failure, never an accept
without evidence.
"""

from __future__ import annotations

import json
import os
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from mailwarden.events import Event
from mailwarden.store.base import Position, StoreError


@dataclass
class SpooledBatch:
    uid: str  # the batch id `written_batches` remembers
    path: Path
    events: list[Event]
    positions: list[Position]


class SpoolFull(StoreError):
    """The spool cannot take a batch (full or not writable): the batch is not safe anywhere."""

    reason = "infra.event_spool_full"


def new_batch_id() -> str:
    return uuid.uuid4().hex


class EventSpool:
    def __init__(self, directory: Path, max_bytes: int) -> None:
        self.directory = directory
        self.max_bytes = max_bytes
        self._next = self._last_number() + 1

    def _files(self) -> list[Path]:
        if not self.directory.is_dir():
            return []
        return sorted(path for path in self.directory.iterdir() if path.suffix == ".batch")

    def _last_number(self) -> int:
        files = self._files()
        return int(files[-1].stem.partition("-")[0]) if files else 0

    def depth(self) -> int:
        """Batches waiting for the database."""
        return len(self._files())

    def size(self) -> int:
        return sum(path.stat().st_size for path in self._files())

    def put(self, uid: str, events: list[Event], positions: list[Position]) -> None:
        """Keep a batch durably (file and directory fsynced); SpoolFull when it cannot."""
        data = json.dumps(
            {
                "uid": uid,
                "events": [[event.id, *event.to_row()] for event in events],
                "positions": [[position.name, position.value] for position in positions],
            },
            ensure_ascii=False,
        ).encode()
        try:
            if self.size() + len(data) > self.max_bytes:
                raise SpoolFull(
                    f"the event spool {self.directory} is full ({self.max_bytes:,} bytes) while the database is "
                    "away: bring PostgreSQL back or raise [store] spool_max_mb"
                )
            self.directory.mkdir(parents=True, exist_ok=True)
            self._next = max(self._next, self._last_number() + 1)  # another process may spool here too
            final = self.directory / f"{self._next:012d}-{uid}.batch"
            temporary = final.with_suffix(".tmp")
            with open(temporary, "wb") as file:
                file.write(data)
                file.flush()
                os.fsync(file.fileno())
            temporary.rename(final)
            descriptor = os.open(self.directory, os.O_RDONLY)
            try:
                os.fsync(descriptor)
            finally:
                os.close(descriptor)
        except OSError as exc:
            raise SpoolFull(
                f"the event spool {self.directory} cannot be written ({exc.strerror or exc}) while the database "
                "is away: free the disk or fix [store] spool_dir"
            ) from exc
        self._next += 1

    def batches(self) -> Iterator[SpooledBatch]:
        """The spooled batches, oldest first, each read when its turn comes (a replay that fails at the
        first batch does not read the others)."""
        for path in self._files():
            data = json.loads(path.read_bytes())
            events = [Event.from_row(tuple(row[1:]), event_id=row[0]) for row in data["events"]]
            positions = [Position(name, value) for name, value in data["positions"]]
            yield SpooledBatch(data["uid"], path, events, positions)

    def remove(self, batch: SpooledBatch) -> None:
        batch.path.unlink(missing_ok=True)
