"""Reading log files: plain or gzip, a rotated series oldest first, and who a file is.

A log file is recognised by its content, not its name: the fingerprint is a hash of its first
line, which carries a time stamp and a process id and so differs between files, but stays the
same when logrotate renames `mail.log` to `mail.log.1` and compresses it to `mail.log.2.gz`.
Reading positions are kept per fingerprint, so an import or a restarted follower continues a
file where it stopped, under whatever name the file has now.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import re
from pathlib import Path
from typing import IO, Final

_GZIP_MAGIC: Final = b"\x1f\x8b"
_READ_SIZE: Final = 1 << 20
_FINGERPRINT_BYTES: Final = 4096
# logrotate's suffixes: `.1`, `.2.gz` (numbered, higher is older) or `-20240101[.gz]` (dated).
_NUMBERED: Final = re.compile(r"^(?P<base>.*?)\.(?P<n>\d{1,4})(?:\.gz)?$")
_DATED: Final = re.compile(r"^(?P<base>.*?)-(?P<date>\d{8}(?:\d{2})?)(?:\.gz)?$")


def _rotation_key(path: str) -> tuple[str, int, int]:
    """(the series' base name, 1 for the current file, age order) of a log file name."""
    if path == "-":
        return ("\uffff", 0, 0)
    numbered = _NUMBERED.match(path)
    if numbered is not None:
        return (numbered["base"], 0, -int(numbered["n"]))
    dated = _DATED.match(path)
    if dated is not None:
        return (dated["base"], 0, int(dated["date"][:8]) - 100_000_000)
    return (path.removesuffix(".gz"), 1, 0)


def rotation_order(paths: list[str]) -> list[str]:
    """`paths` with each rotated series oldest first: `x.log.3.gz, x.log.2.gz, x.log.1, x.log`."""
    return sorted(paths, key=_rotation_key)


def rotated_series(paths: list[str]) -> list[list[str]]:
    """`paths` grouped into rotated series (`mail.log*`, `dovecot.log*`, ...), each oldest first."""
    series: dict[str, list[str]] = {}
    for path in rotation_order(paths):
        series.setdefault(_rotation_key(path)[0], []).append(path)
    return list(series.values())


def open_binary(path: Path) -> IO[bytes]:
    """The file's bytes, decompressed if it is gzip (recognised by its magic number, not its name)."""
    raw = path.open("rb")
    if raw.read(2) == _GZIP_MAGIC:
        raw.seek(0)
        return io.BufferedReader(gzip.GzipFile(fileobj=raw), _READ_SIZE)
    raw.seek(0)
    return raw


def fingerprint(path: Path) -> str | None:
    """A hash of the file's first line (complete or not); None for an empty file."""
    with open_binary(path) as handle:
        head = handle.readline(_FINGERPRINT_BYTES)
    return fingerprint_of(head)


def fingerprint_of(head: bytes) -> str | None:
    head = head.rstrip(b"\n")
    if not head:
        return None
    return hashlib.sha256(head).hexdigest()[:32]


def decode(raw: bytes, limit: int) -> str:
    """A line's text: UTF-8, undecodable bytes shown as \\xNN, cut to `limit` bytes, newline removed."""
    if len(raw) > limit:
        raw = raw[:limit]
    raw = raw.rstrip(b"\r\n")
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        return raw.decode("utf-8", "backslashreplace")


def skip(handle: IO[bytes], start: int) -> int:
    """Move to byte `start` (gzip decompresses up to it); return where the handle now is."""
    if handle.seekable():
        return handle.seek(start)
    done = 0
    while done < start:
        chunk = handle.read(min(_READ_SIZE, start - done))
        if not chunk:
            break
        done += len(chunk)
    return done
