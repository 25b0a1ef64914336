"""Message content while it arrives: in memory when small, in a spool file when large.

Memory per connection stays bounded whatever the message size: past `memory_limit` bytes the
content moves to a file in the spool directory, and past the size limit nothing more is kept.

Writing never raises. A spool that fails (a full or read-only disk, or any other error) keeps
nothing more and remembers the error in `failure`: the DATA loop must go on reading to the end
marker whatever happens here, or the rest of the message would be read as commands.
"""

from __future__ import annotations

import contextlib
import io
import logging
import os
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, BinaryIO, Final

if TYPE_CHECKING:
    from _typeshed import SupportsWrite

CHUNK: Final = 1024 * 1024  # what is read and written at a time from a spool file

log = logging.getLogger(__name__)


class Spool:
    def __init__(self, spool_dir: Path, memory_limit: int, size_limit: int, owner: str = "") -> None:
        """`owner` starts the spool file's name after "msg-" (an SMTP worker's, to clean up after it)."""
        self._dir = spool_dir
        self._owner = owner
        self._memory_limit = memory_limit
        self._size_limit = size_limit
        self._chunks: list[bytes] = []
        self._file: BinaryIO | None = None
        self.path: Path | None = None
        self.size = 0  # bytes kept
        self.received = 0  # bytes received, also those past the limit
        self.overflowed = False
        self.failure: Exception | None = None  # why the content could not be kept; nothing is kept then

    def write(self, data: bytes) -> None:
        """Keep `data`; on a failure remember it and drop the content (never raises)."""
        if not data:
            return
        self.received += len(data)
        if self.overflowed or self.failure is not None:
            return
        if self.size + len(data) > self._size_limit:
            self.overflowed = True
            self._drop()
            return
        self.size += len(data)
        try:
            if self._file is not None:
                self._file.write(data)
                return
            self._chunks.append(data)
            if self.size > self._memory_limit:
                self._to_file()
        except Exception as error:
            self._fail(error)

    def _to_file(self) -> None:
        self._dir.mkdir(parents=True, exist_ok=True)
        fd, name = tempfile.mkstemp(prefix=f"msg-{self._owner}", suffix=".spool", dir=self._dir)
        self.path = Path(name)
        self._file = os.fdopen(fd, "wb", buffering=256 * 1024)
        for chunk in self._chunks:
            self._file.write(chunk)
        self._chunks = []

    def finish(self) -> None:
        """All content is in: flush the file (no fsync; the delivered copy is fsynced). Never raises."""
        if self._file is not None and self.failure is None:
            try:
                self._file.flush()
            except Exception as error:
                self._fail(error)

    def _fail(self, error: Exception) -> None:
        self.failure = error
        self._drop()

    @property
    def in_memory(self) -> bool:
        return self.path is None

    def content(self) -> bytes:
        """The whole message; only for messages kept in memory."""
        if self.path is not None:
            raise ValueError("the message is spooled to disk; use open()")
        if len(self._chunks) > 1:
            self._chunks = [b"".join(self._chunks)]
        return self._chunks[0] if self._chunks else b""

    def open(self, without: Sequence[tuple[int, int]] = ()) -> BinaryIO:
        """A reader over the message from its start, leaving out the byte ranges `without` (sorted, apart)."""
        whole: BinaryIO = open(self.path, "rb") if self.path is not None else io.BytesIO(self.content())  # noqa: SIM115
        if not without:
            return whole
        return io.BufferedReader(_Ranges(whole, kept_ranges(self.size, without)), CHUNK)

    def head(self, limit: int = 65536) -> bytes:
        """The first `limit` bytes, enough for the header of almost every message."""
        if self.path is None:
            return self.content()[:limit]
        with open(self.path, "rb") as handle:
            return handle.read(limit)

    def read_all(self) -> bytes:
        """The whole message as bytes, also when spooled (blocking; call from a worker thread)."""
        if self.path is None:
            return self.content()
        return self.path.read_bytes()

    def copy_into(self, target: SupportsWrite[bytes | memoryview], without: Sequence[tuple[int, int]] = ()) -> None:
        """Write the message into an open file (a delivery's `Sink`), leaving out the byte ranges `without` (blocking; off the loop)."""
        ranges = kept_ranges(self.size, without)
        if self.path is None:
            content = memoryview(self.content())
            for start, end in ranges:
                target.write(content[start:end])
            return
        with open(self.path, "rb") as source:
            for start, end in ranges:
                source.seek(start)
                while start < end:
                    chunk = source.read(min(CHUNK, end - start))
                    if not chunk:
                        raise OSError(f"spool file {self.path} ends at {start} bytes, not {end}")
                    target.write(chunk)
                    start += len(chunk)

    def _drop(self) -> None:
        """Forget the content. Never raises: closing flushes, which fails again on a full disk."""
        self._chunks = []
        if self._file is not None:
            with contextlib.suppress(Exception):  # the descriptor is closed even when the flush fails
                self._file.close()
            self._file = None
        if self.path is not None:
            try:
                self.path.unlink(missing_ok=True)
            except OSError as error:  # removed at the next start (Gateway.recover)
                log.error("cannot remove the spool file %s: %s", self.path, error)
            self.path = None
        self.size = 0

    def discard(self) -> None:
        """Forget the content and remove the spool file, if any."""
        self._drop()


def kept_ranges(size: int, without: Sequence[tuple[int, int]]) -> list[tuple[int, int]]:
    """The ranges of `size` bytes outside the sorted, non-overlapping ranges `without`."""
    kept: list[tuple[int, int]] = []
    position = 0
    for start, end in without:
        if start > position:
            kept.append((position, start))
        position = max(position, end)
    if position < size:
        kept.append((position, size))
    return kept


class _Ranges(io.RawIOBase):
    """A stream that reads only some byte ranges of another one (the message without removed fields)."""

    def __init__(self, source: BinaryIO, ranges: list[tuple[int, int]]) -> None:
        self._source = source
        self._ranges = ranges
        self._index = 0
        self._position = ranges[0][0] if ranges else 0
        source.seek(self._position)

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        while self._index < len(self._ranges) and self._position >= self._ranges[self._index][1]:
            self._index += 1
            if self._index < len(self._ranges):
                self._position = self._ranges[self._index][0]
                self._source.seek(self._position)
        if self._index >= len(self._ranges):
            return 0
        wanted = min(len(buffer), self._ranges[self._index][1] - self._position)
        data = self._source.read(wanted)
        buffer[: len(data)] = data
        self._position += len(data)
        return len(data)

    def close(self) -> None:
        self._source.close()
        super().close()
