"""Feeding the ingester: archive imports (files, rotated series, stdin) and followed files (`tail -F`).

Positions are kept in the store per file content (`sources.fingerprint`): `ingest:file:FP` holds
how far a file is read, `ingest:follow:PATH` which file a followed path showed last. A position
is the offset of the first line whose events are not yet stored, queued behind those events, so
store and position always agree (no line twice, none lost). On resuming, `warmup_bytes` before
the position are read again without storing anything, to rebuild the sessions and queue files
that were open when the previous run stopped.
"""

from __future__ import annotations

import heapq
import json
import logging
import os
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any, Final

from mailwarden.collector import rare_collections
from mailwarden.events import Event
from mailwarden.ingest.framing import Framer
from mailwarden.ingest.pipeline import Ingester, Stream
from mailwarden.ingest.sources import decode, fingerprint, fingerprint_of, open_binary, rotated_series, skip
from mailwarden.ingest.timestamps import Clock
from mailwarden.progress import Progress
from mailwarden.store import Position, Store

log = logging.getLogger(__name__)

_READ_SIZE: Final = 1 << 20
_CHECKPOINT_EVERY_S: Final = 5.0


def _load(store: Store | None, name: str) -> dict[str, Any]:
    if store is None:
        return {}
    text = store.load_position(name)
    if not text:
        return {}
    try:
        value = json.loads(text)
    except ValueError:
        return {}
    return value if isinstance(value, dict) else {}


@dataclass
class _Reading:
    """A file read (or being read) in this run: where its events are stored up to."""

    fingerprint: str
    origin: str
    offset: int
    saved: int = -1


class Positions:
    """The reading positions of one run and their checkpoints into the store.

    With `bulk` (archive imports) the ingester's events are collected here and handed to the store
    at each checkpoint as one batch with the positions behind them (`Store.append_bulk`): one
    large transaction per `BULK_EVENTS` events instead of one per few thousand, the positions at
    its end, so a restart still resumes exactly after the stored events. A larger batch makes each
    event's commit cheaper (the same B-tree pages are written once for more events) and costs the
    memory of the batches in flight (`sqlite_bulk`); measured over bench/ingest.py's 100 MB slice,
    three alternating rounds: 40,000 events 40,399/34,450/38,022 events/s, 20,000 36,533/35,921/
    32,780, 60,000 38,726/34,452/34,311.
    """

    BULK_EVENTS: Final = 40_000
    BULK_PART_EVENTS: Final = 10_000  # handed to a store that writes a batch's parts as they come

    def __init__(self, store: Store | None, ingester: Ingester, *, bulk: bool = False) -> None:
        self.store = store
        self.ingester = ingester
        self.files: dict[str, _Reading] = {}
        self._last = time.monotonic()
        self._batch: list[Event] | None = None
        self._parted = 0  # events of the batch handed over as parts (`Store.append_bulk_part`)
        if bulk and store is not None:
            self._batch = []
            ingester.sink = self._batch.append

    def resume_offset(self, fingerprint: str) -> int:
        offset = _load(self.store, f"ingest:file:{fingerprint}").get("offset", 0)
        return offset if isinstance(offset, int) and offset > 0 else 0

    def reading(self, fingerprint: str, origin: str, offset: int) -> _Reading:
        entry = self.files.get(fingerprint)
        if entry is None:
            entry = self.files[fingerprint] = _Reading(fingerprint, origin, offset)
        entry.origin, entry.offset = origin, offset
        return entry

    def maybe_checkpoint(self) -> None:
        """A batch ends at `BULK_EVENTS`; before that, a store that writes parts as they come
        (SQLite's writer process) gets each `BULK_PART_EVENTS`: its writer starts after the
        first part instead of the whole first batch, and once the input ends only the last part
        is left to write (measured: bench/README.md)."""
        batch, store = self._batch, self.store
        if time.monotonic() - self._last >= _CHECKPOINT_EVERY_S or (
            batch is not None and self._parted + len(batch) >= self.BULK_EVENTS
        ):
            self.checkpoint()
        elif batch and store is not None and len(batch) >= self.BULK_PART_EVENTS and store.append_bulk_part(batch):
            self._parted += len(batch)
            batch.clear()

    def checkpoint(self, extra: dict[str, str] | None = None) -> None:
        """Queue every changed position behind the events released so far."""
        self._last = time.monotonic()
        if self.store is None:
            return
        pending = self.ingester.holdback.pending_offsets()
        positions = []
        for entry in self.files.values():
            offset = min(pending.get(entry.origin, entry.offset), entry.offset)
            if offset != entry.saved:
                entry.saved = offset
                value = json.dumps({"offset": offset, "name": entry.origin})
                positions.append(Position(f"ingest:file:{entry.fingerprint}", value))
        positions.extend(Position(name, value) for name, value in (extra or {}).items())
        if self._batch is not None:
            self.store.append_bulk(self._batch[:], positions)
            self._batch.clear()
            self._parted = 0
            return
        for position in positions:
            self.store.save_position(position)


def feed_handle(
    ingester: Ingester,
    stream: Stream,
    handle: IO[bytes],
    *,
    start: int,
    resume_at: int,
    limit: int,
    positions: Positions | None = None,
    reading: _Reading | None = None,
    progress: Progress | None = None,
) -> int:
    """Feed every line of `handle` from byte `start`; lines before `resume_at` only rebuild state."""
    offset = skip(handle, start) if start else 0
    for count, raw in enumerate(handle, 1):
        text = decode(raw, limit)
        if offset < resume_at:
            ingester.replay(stream, text, offset)
        else:
            ingester.feed(stream, text, offset)
        offset += len(raw)
        if progress is not None:
            progress.advance(len(raw))
        if count & 0x3FFF == 0 and positions is not None and reading is not None:
            reading.offset = offset
            positions.maybe_checkpoint()
    if reading is not None:
        reading.offset = offset
    return offset


# One line of an import: its input, where its events are stored up to, its offset and length,
# its text, and whether it only rebuilds state (read again before the resume position).
_ImportLine = tuple[Stream, "_Reading | None", int, int, str, bool]


class Importer:
    """`mailwarden ingest PATH ...`: files oldest first, each continued where an earlier run stopped.

    Several series (say `mail.log*` of one host and `dovecot.log*` of another) are read side by
    side in time order, so that lines of one message logged on different hosts meet in the
    ingester as they would in one syslog file.
    """

    CHECK_EVERY_LINES = 1 << 14  # how often to see whether a checkpoint (a bulk batch) is due

    def __init__(
        self,
        store: Store | None,
        ingester: Ingester,
        *,
        reimport: bool = False,
        warmup_bytes: int = 16 << 20,
        max_line: int = 65_536,
        progress: Progress | None = None,
    ) -> None:
        self.store = store
        self.ingester = ingester
        self.reimport = reimport
        self.warmup_bytes = warmup_bytes
        self.max_line = max_line
        self.progress = progress
        self.positions = Positions(store, ingester, bulk=True)
        self.skipped: list[str] = []

    def run(self, paths: list[str]) -> None:
        with rare_collections():
            self._run(paths)

    def _run(self, paths: list[str]) -> None:
        series = [self._series(files) for files in rotated_series(paths)]
        timed = [self._timed(index, lines) for index, lines in enumerate(series)]
        lines = series[0] if len(series) == 1 else (line for *_, line in heapq.merge(*timed))
        ingester, progress, positions = self.ingester, self.progress, self.positions
        every = self.CHECK_EVERY_LINES
        for count, (stream, reading, offset, length, text, replay) in enumerate(lines):
            if replay:
                ingester.replay(stream, text, offset)
            else:
                ingester.feed(stream, text, offset)
            if reading is not None:
                reading.offset = offset + length
            if progress is not None:
                progress.advance(length)
            if count % every == 0:
                positions.maybe_checkpoint()
        ingester.finish()
        positions.checkpoint()
        if progress is not None:
            progress.close()

    def _timed(self, index: int, lines: Iterator[_ImportLine]) -> Iterator[tuple[int, int, int, _ImportLine]]:
        """Lines with their time (framed once more, by a clock of their own) for merging series."""
        clocks: dict[int, Framer] = {}
        for sequence, line in enumerate(lines):
            stream = line[0]
            framer = clocks.get(id(stream))
            if framer is None:
                clocks.clear()
                framer = clocks[id(stream)] = Framer(
                    Clock(stream.framer.clock.zone, stream.framer.clock.last_us), stream.framer.default_node
                )
            frame = framer.frame(line[4])
            yield (frame.ts if frame is not None else framer.clock.last_us, index, sequence, line)

    def _series(self, files: list[str]) -> Iterator[_ImportLine]:
        for path in files:
            if path == "-":
                stream = self.ingester.stream("stdin")
                offset = 0
                for raw in sys.stdin.buffer:
                    yield stream, None, offset, len(raw), decode(raw, self.max_line), False
                    offset += len(raw)
            else:
                yield from self._file(Path(path))

    def _file(self, path: Path) -> Iterator[_ImportLine]:
        name = str(path)
        try:
            fp = fingerprint(path)
            if fp is None:
                return
            resume = 0 if self.reimport else self.positions.resume_offset(fp)
            with open_binary(path) as handle:
                stream = self.ingester.stream(name, int(path.stat().st_mtime * 1_000_000))
                reading = self.positions.reading(fp, name, resume)
                start = max(resume - self.warmup_bytes, 0)
                if resume:
                    self.skipped.append(f"{name}: continued at byte {resume:,}")
                if self.progress is not None and start:
                    self.progress.advance(start)
                offset = skip(handle, start) if start else 0
                limit = self.max_line
                for raw in handle:
                    yield stream, reading, offset, len(raw), decode(raw, limit), offset < resume
                    offset += len(raw)
        except (OSError, EOFError) as exc:  # unreadable, or a truncated .gz
            raise OSError(f"cannot read {path}: {exc}") from exc


class Follower:
    """One path followed like `tail -F`: new lines as they come, across rotation and truncation."""

    def __init__(
        self, path: Path, ingester: Ingester, positions: Positions, *, warmup_bytes: int, max_line: int
    ) -> None:
        self.path = path
        self.origin = str(path)
        self.ingester = ingester
        self.positions = positions
        self.warmup_bytes = warmup_bytes
        self.max_line = max_line
        self._handle: IO[bytes] | None = None
        self._identity: tuple[int, int] | None = None
        self._stream: Stream | None = None
        self._reading: _Reading | None = None
        self._fingerprint: str | None = None
        self._offset = 0  # of the first byte not yet fed
        self._resume_at = 0
        self._partial = b""
        self._first_open = True

    @property
    def state_name(self) -> str:
        return f"ingest:follow:{self.path.absolute()}"

    def checkpoint_values(self) -> dict[str, str]:
        if self._fingerprint is None:
            return {}
        return {self.state_name: json.dumps({"fingerprint": self._fingerprint})}

    def poll(self) -> bool:
        """Read what is new; True if any line was fed."""
        if self._handle is None and not self._open():
            return False
        fed = self._read()
        try:
            current = self.path.stat()
        except FileNotFoundError:
            current = None
        identity = (current.st_dev, current.st_ino) if current else None
        if identity != self._identity:  # rotated away: finish the old file, then start on the new one
            fed = self._read() or fed
            self._flush_partial()
            self._close()
            return fed
        assert current is not None
        if current.st_size < self._offset + len(self._partial):  # truncated (copytruncate)
            log.info("%s was truncated; reading it again from the start", self.path)
            self._close()
            self._first_open = False
        return fed

    def _open(self) -> bool:
        try:
            handle = self.path.open("rb")
            stat = os.fstat(handle.fileno())
        except FileNotFoundError:
            return False
        self._handle, self._identity = handle, (stat.st_dev, stat.st_ino)
        self._stream = self.ingester.stream(self.origin)
        self._offset, self._partial, self._fingerprint, self._reading = 0, b"", None, None
        head = handle.readline(4096)
        handle.seek(0)
        fp = fingerprint_of(head) if head.endswith(b"\n") else None
        if fp is not None:
            if self._first_open:
                self._catch_up_rotated(fp)
            self._start(fp)
        self._first_open = False
        return True

    def _start(self, fp: str) -> None:
        """Resume the file `fp` at its saved position (warming up before it)."""
        assert self._handle is not None
        self._fingerprint = fp
        resume = self.positions.resume_offset(fp)
        self._resume_at = resume
        self._offset = skip(self._handle, max(resume - self.warmup_bytes, 0))
        self._reading = self.positions.reading(fp, self.origin, self._offset)

    def _catch_up_rotated(self, current: str) -> None:
        """After a restart: if the path showed another file last time, finish reading that one first."""
        previous = _load(self.positions.store, self.state_name).get("fingerprint")
        if not isinstance(previous, str) or previous == current:
            return
        for sibling in sorted(self.path.parent.glob(self.path.name + "*")):
            if sibling == self.path or not sibling.is_file():
                continue
            try:
                if fingerprint(sibling) != previous:
                    continue
                resume = self.positions.resume_offset(previous)
                with open_binary(sibling) as handle:
                    reading = self.positions.reading(previous, self.origin, resume)
                    feed_handle(
                        self.ingester,
                        self.ingester.stream(self.origin),
                        handle,
                        start=max(resume - self.warmup_bytes, 0),
                        resume_at=resume,
                        limit=self.max_line,
                        positions=self.positions,
                        reading=reading,
                    )
                log.info("read the rest of %s (rotated while mailwarden was down)", sibling)
            except (OSError, EOFError) as exc:
                log.warning("cannot read the rotated file %s: %s", sibling, exc)
            return

    def _read(self) -> bool:
        handle, stream = self._handle, self._stream
        assert handle is not None and stream is not None
        fed = False
        while True:
            chunk = handle.read(_READ_SIZE)
            if not chunk:
                return fed
            data = self._partial + chunk
            lines = data.split(b"\n")
            self._partial = lines.pop()
            if len(self._partial) > self.max_line:  # a runaway line: cut it, keep reading
                lines.append(self._partial)
                self._partial = b""
            for raw in lines:
                self._feed(raw, len(raw) + 1)
                fed = True

    def _feed(self, raw: bytes, length: int) -> None:
        stream = self._stream
        assert stream is not None
        if self._fingerprint is None:
            fp = fingerprint_of(raw)
            if fp is not None:
                self._start_midway(fp)
        text = decode(raw, self.max_line)
        if self._offset < self._resume_at:
            self.ingester.replay(stream, text, self._offset)
        else:
            self.ingester.feed(stream, text, self._offset)
        self._offset += length
        if self._reading is not None:
            self._reading.offset = self._offset

    def _start_midway(self, fp: str) -> None:
        """The first line of a file that was empty when it was opened: it is now identifiable."""
        self._fingerprint = fp
        self._resume_at = 0
        self._reading = self.positions.reading(fp, self.origin, self._offset)

    def _flush_partial(self) -> None:
        if self._partial:
            self._feed(self._partial, len(self._partial))
            self._partial = b""

    def _close(self) -> None:
        if self._handle is not None:
            self._handle.close()
        self._handle = None
        self._identity = None

    def close(self) -> None:
        self._close()
