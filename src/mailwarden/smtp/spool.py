"""Message content while it arrives: in memory when small, in a spool file when large.

Memory per connection stays bounded whatever the message size: past `memory_limit` bytes the
content moves to a file in the spool directory, and past the size limit nothing more is kept.
"""

from __future__ import annotations

import io
import os
import shutil
import tempfile
from pathlib import Path
from typing import BinaryIO


class Spool:
    def __init__(self, spool_dir: Path, memory_limit: int, size_limit: int) -> None:
        self._dir = spool_dir
        self._memory_limit = memory_limit
        self._size_limit = size_limit
        self._chunks: list[bytes] = []
        self._file: BinaryIO | None = None
        self.path: Path | None = None
        self.size = 0  # bytes kept
        self.received = 0  # bytes received, also those past the limit
        self.overflowed = False

    def write(self, data: bytes) -> None:
        if not data:
            return
        self.received += len(data)
        if self.overflowed:
            return
        if self.size + len(data) > self._size_limit:
            self.overflowed = True
            self._drop()
            return
        self.size += len(data)
        if self._file is not None:
            self._file.write(data)
            return
        self._chunks.append(data)
        if self.size > self._memory_limit:
            self._to_file()

    def _to_file(self) -> None:
        self._dir.mkdir(parents=True, exist_ok=True)
        fd, name = tempfile.mkstemp(prefix="msg-", suffix=".spool", dir=self._dir)
        self.path = Path(name)
        self._file = os.fdopen(fd, "wb", buffering=256 * 1024)
        for chunk in self._chunks:
            self._file.write(chunk)
        self._chunks = []

    def finish(self) -> None:
        """All content is in: flush the file (no fsync; the delivered copy is fsynced)."""
        if self._file is not None:
            self._file.flush()

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

    def open(self) -> BinaryIO:
        """A reader over the whole message from its start."""
        if self.path is not None:
            return open(self.path, "rb")
        return io.BytesIO(self.content())

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

    def copy_into(self, target: BinaryIO) -> None:
        """Write the message into an open file (blocking; call from a worker thread)."""
        if self.path is None:
            target.write(self.content())
            return
        with open(self.path, "rb") as source:
            shutil.copyfileobj(source, target, 1024 * 1024)

    def _drop(self) -> None:
        self._chunks = []
        if self._file is not None:
            self._file.close()
            self._file = None
        if self.path is not None:
            self.path.unlink(missing_ok=True)
            self.path = None
        self.size = 0

    def discard(self) -> None:
        """Forget the content and remove the spool file, if any."""
        self._drop()
