"""ZIP archives that test the bounds of the attachment inspection, built without holding them unpacked.

- `zip_of(members)`: a deflated ZIP of (name, bytes) pairs.
- `zeros_then(count, size, last)`: `count` members of `size` zeros, written in 1 MiB steps (so
  270 MB of zeros never sit in memory), then the `last` members; with `size` just under the
  inspection's bomb threshold (16 MiB) none of them is a compression bomb.
- `stored_zeros(size, *also)`: a ZIP that stores `size` zeros (and the `also` members) uncompressed -
  an archive that unpacks to `size` bytes, while it deflates to almost nothing inside another archive.
- `many(count, last)`: `count` small text files, then the `last` members.
"""

from __future__ import annotations

import io
import struct
import zipfile
from collections.abc import Iterable

BOMB_SIZE = 16 * 1024 * 1024  # ArchiveLimits.bomb_size
JUST_UNDER_BOMB = BOMB_SIZE - 256 * 1024
PE_PROGRAM = b"MZ" + b"\0" * 58 + (64).to_bytes(4, "little") + b"PE\0\0" + b"\0" * 200
_MIB = 1024 * 1024


def zip_of(members: Iterable[tuple[str, bytes]]) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        for name, data in members:
            archive.writestr(name, data)
    return buffer.getvalue()


def encrypted(archive: bytes) -> bytes:
    """`archive` with every member marked encrypted (general purpose flag bit 0), as in a password-protected ZIP."""
    data = bytearray(archive)
    for signature, flags_at in ((b"PK\x03\x04", 6), (b"PK\x01\x02", 8)):  # local headers, central directory
        start = 0
        while (start := data.find(signature, start)) != -1:
            (flags,) = struct.unpack_from("<H", data, start + flags_at)
            struct.pack_into("<H", data, start + flags_at, flags | 1)
            start += len(signature)
    return bytes(data)


def zeros_then(count: int, size: int, last: Iterable[tuple[str, bytes]]) -> bytes:
    buffer = io.BytesIO()
    zeros = bytes(_MIB)
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        for number in range(count):
            with archive.open(f"zeros{number:02}.bin", "w") as member:
                for offset in range(0, size, _MIB):
                    member.write(zeros[: min(_MIB, size - offset)])
        for name, data in last:
            archive.writestr(name, data)
    return buffer.getvalue()


def stored_zeros(size: int, *also: tuple[str, bytes]) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_STORED) as archive:
        archive.writestr("zeros.bin", bytes(size))
        for name, data in also:
            archive.writestr(name, data)
    return buffer.getvalue()


def many(count: int, last: Iterable[tuple[str, bytes]]) -> bytes:
    return zip_of([*((f"note{number:04}.txt", b"nothing to see\n") for number in range(count)), *last])
