"""Dangerous attachments: file types that run code when opened, by name and by content.

A name can lie (`invoice.pdf` that is a Windows program), so the content's magic bytes count as
much as the extension. ZIP archives are opened - also nested ones - with hard bounds, so a zip
bomb costs at most `archive_total` bytes of decompression and is itself reported as dangerous
when its members expand beyond `bomb_ratio` times their compressed size.
"""

from __future__ import annotations

import io
import zipfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Final

# Extension -> what it is, as the refusal names it.
DANGEROUS_EXTENSIONS: Final[dict[str, str]] = {
    "exe": "Windows program",
    "scr": "Windows screen saver (a program)",
    "com": "DOS/Windows program",
    "pif": "Windows program information file",
    "bat": "Windows batch script",
    "cmd": "Windows command script",
    "cpl": "Windows control panel item (a program)",
    "dll": "Windows program library",
    "msi": "Windows installer",
    "msp": "Windows installer patch",
    "msc": "Windows management console file",
    "js": "JavaScript file",
    "jse": "encoded JavaScript file",
    "vbs": "VBScript file",
    "vbe": "encoded VBScript file",
    "wsf": "Windows Script File",
    "wsh": "Windows Script Host settings",
    "ps1": "PowerShell script",
    "hta": "HTML application",
    "lnk": "Windows shortcut",
    "scf": "Windows Explorer command file",
    "reg": "Windows registry file",
    "jar": "Java program",
    "iso": "disk image",
    "img": "disk image",
    "vhd": "virtual disk image",
    "vhdx": "virtual disk image",
    "appx": "Windows app package",
    "msix": "Windows app package",
    "application": "ClickOnce application",
    "gadget": "Windows gadget",
    "chm": "compiled HTML help file",
}

ARCHIVE_EXTENSIONS: Final = frozenset({"zip"})


@dataclass(frozen=True)
class ArchiveLimits:
    depth: int = 3  # archives inside archives
    members: int = 1000  # members looked at per archive
    member_size: int = 64 * 1024 * 1024  # bytes read from one member
    total: int = 256 * 1024 * 1024  # bytes decompressed for one message
    bomb_ratio: int = 100  # expansion factor that makes a large member a compression bomb
    bomb_size: int = 16 * 1024 * 1024  # ... from this uncompressed size on


@dataclass(frozen=True)
class Danger:
    filename: str
    filetype: str


def extension(name: str) -> str:
    base = name.replace("\\", "/").rsplit("/", 1)[-1].strip().rstrip(". ")
    return base.rpartition(".")[2].lower() if "." in base else ""


def by_name(name: str, dangerous: frozenset[str]) -> str | None:
    ext = extension(name)
    if ext in dangerous:
        return f"{DANGEROUS_EXTENSIONS.get(ext, 'file')} (.{ext})"
    return None


def by_content(data: bytes) -> str | None:
    """What the magic bytes say, for the types that run code."""
    if data[:2] == b"MZ" and len(data) >= 0x40:
        offset = int.from_bytes(data[0x3C:0x40], "little")
        if data[offset : offset + 4] == b"PE\0\0":
            return "Windows program (PE executable)"
    if data[:4] == b"\x7fELF":
        return "Linux program (ELF executable)"
    if data[:20] == b"\x4c\x00\x00\x00\x01\x14\x02\x00\x00\x00\x00\x00\xc0\x00\x00\x00\x00\x00\x00\x46":
        return "Windows shortcut (LNK)"
    if any(data[offset : offset + 5] == b"CD001" for offset in (0x8001, 0x8801, 0x9001)):
        return "disk image (ISO 9660)"
    if data[:8] == b"vhdxfile" or data[:8] == b"conectix":
        return "virtual disk image"
    return None


def is_zip(data: bytes) -> bool:
    return data[:4] == b"PK\x03\x04" or (data[:4] == b"PK\x05\x06" and len(data) == 22)


class Budget:
    """Decompressed bytes left for this message (shared by all archives in it)."""

    def __init__(self, total: int) -> None:
        self.left = total

    def take(self, size: int) -> None:
        self.left -= size


def members(
    data: bytes, name: str, limits: ArchiveLimits, budget: Budget, note: Callable[[str], None]
) -> Iterator[tuple[str, bytes | None, Danger | None]]:
    """(path, content or None when unread, bomb finding) for each member of a ZIP archive."""
    try:
        archive = zipfile.ZipFile(io.BytesIO(data))
        infos = archive.infolist()
    except (zipfile.BadZipFile, zipfile.LargeZipFile, ValueError, OSError, EOFError) as exc:
        note(f"{name}: unreadable ZIP archive ({exc})")
        return
    if len(infos) > limits.members:
        note(f"{name}: more than {limits.members} archive members; the rest was not inspected")
    for info in infos[: limits.members]:
        if info.is_dir():
            continue
        path = f"{name}/{info.filename}"
        if info.flag_bits & 0x1:
            note(f"{path}: encrypted archive member (not inspected)")
            yield path, None, None
            continue
        if budget.left <= 0:
            note(f"{name}: decompression budget used up; members not inspected")
            yield path, None, None
            continue
        cap = min(limits.member_size, budget.left)
        compressed = max(info.compress_size, 1)
        if info.file_size >= limits.bomb_size and info.file_size / compressed >= limits.bomb_ratio:
            yield path, None, Danger(path, f"compression bomb (expands {info.file_size // compressed}x)")
            continue
        chunks: list[bytes] = []
        size = 0
        outcome: str | Danger | None = None
        try:
            with archive.open(info) as member:
                while piece := member.read(1024 * 1024):
                    size += len(piece)
                    if size >= limits.bomb_size and size / compressed >= limits.bomb_ratio:
                        outcome = Danger(path, f"compression bomb (expands over {size // compressed}x)")
                        break
                    if size > cap:
                        outcome = f"{path}: larger than the inspection limit; only its name was checked"
                        break
                    chunks.append(piece)
        except (zipfile.BadZipFile, NotImplementedError, ValueError, OSError, EOFError, RuntimeError) as exc:
            outcome = f"{path}: unreadable archive member ({exc})"
        budget.take(size)
        if isinstance(outcome, Danger):
            yield path, None, outcome
        elif outcome is not None:
            note(outcome)
            yield path, None, None
        else:
            yield path, b"".join(chunks), None
