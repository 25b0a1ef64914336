"""Dangerous attachments: file types that run code when opened, by name and by content.

A name can lie (`invoice.pdf` that is a Windows program), so the content's magic bytes count as
much as the extension. ZIP archives are opened - also nested ones - with hard bounds: a member
that is neither an archive nor an Office document is read only as far as its magic bytes, a
member declaring an expansion beyond `bomb_ratio` is itself reported as a compression bomb, and
the archives and documents inside are unpacked up to `total` bytes per message. What the bounds
kept us from looking into is reported (`Uninspected`): a message with such a part is not clean.
"""

from __future__ import annotations

import io
import zipfile
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Final, Literal, Protocol

from mailwarden.scan import macros

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

HEAD: Final = 64 * 1024  # bytes of a member the magic checks need (an ISO 9660 marker sits at 36 kB)
# What reading a stranger's archive member raises (zlib.error: a corrupt deflate stream).
_UNREADABLE: Final = (zipfile.BadZipFile, zlib.error, NotImplementedError, ValueError, OSError, EOFError, RuntimeError)


@dataclass(frozen=True)
class ArchiveLimits:
    depth: int = 3  # levels of archives opened: the attached one, one inside it, one inside that
    members: int = 1000  # members opened per archive (the names of all are checked)
    member_size: int = 64 * 1024 * 1024  # bytes an archive or Office document inside an archive may unpack to
    total: int = 256 * 1024 * 1024  # bytes decompressed for one message
    bomb_ratio: int = 100  # expansion factor that makes a large member a compression bomb
    bomb_size: int = 16 * 1024 * 1024  # ... from this uncompressed size on


Cause = Literal["budget", "members", "depth", "size"]


@dataclass(frozen=True)
class Uninspected:
    """A file we could not look into completely, and the limit that stopped us (`limit`, in words)."""

    path: str
    cause: Cause
    limit: str


class Findings(Protocol):
    """Where the archive walk reports what it could not look at."""

    def note(self, problem: str) -> None: ...

    def could_not_inspect(self, gap: Uninspected) -> None: ...


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


def needs_whole(head: bytes) -> bool:
    """Whether a file beginning with `head` must be read whole to be inspected: an archive or Office document.

    For any other file the magic bytes in its head are all there is to check.
    """
    return is_zip(head) or macros.may_be_office(head)


class Budget:
    """Decompressed bytes left for this message (shared by all archives in it)."""

    def __init__(self, total: int) -> None:
        self.total = total
        self.left = total

    def take(self, size: int) -> None:
        self.left -= size


def mib(size: int) -> str:
    return f"{size / (1024 * 1024):g} MiB"


def members(
    data: bytes, name: str, limits: ArchiveLimits, budget: Budget, findings: Findings
) -> Iterator[tuple[str, bytes | None, Danger | None]]:
    """(path, content or None when unread, bomb finding) for each file in a ZIP archive.

    Every member's path is yielded, also past `limits.members`, so its name is checked. The content
    is the whole member when it is an archive or Office document (which the caller looks into), else
    its first `HEAD` bytes, all that the magic checks need. Whatever could not be read far enough -
    the budget used up, too many members, too large to open - is reported to `findings`.
    """
    try:
        archive = zipfile.ZipFile(io.BytesIO(data))
        files = [info for info in archive.infolist() if not info.is_dir()]
    except (zipfile.BadZipFile, zipfile.LargeZipFile, ValueError, OSError, EOFError) as exc:
        findings.note(f"{name}: unreadable ZIP archive ({exc})")
        return
    if len(files) > limits.members:
        limit = f"it holds {len(files)} files, more than the {limits.members} we open per archive"
        findings.could_not_inspect(Uninspected(name, "members", limit))
    for number, info in enumerate(files):
        path = f"{name}/{info.filename}"
        if number >= limits.members:
            yield path, None, None  # past the limit: only its name is checked
            continue
        if info.flag_bits & 0x1:
            findings.note(f"{path}: encrypted archive member (not inspected)")
            yield path, None, None
            continue
        compressed = max(info.compress_size, 1)
        if info.file_size >= limits.bomb_size and info.file_size / compressed >= limits.bomb_ratio:
            yield path, None, Danger(path, f"compression bomb (expands {info.file_size // compressed}x)")
            continue
        try:
            content = _read(archive, info, path, limits, budget, findings)
        except _UNREADABLE as exc:
            findings.note(f"{path}: unreadable archive member ({exc})")
            content = None
        yield path, content, None


def _read(
    archive: zipfile.ZipFile,
    info: zipfile.ZipInfo,
    path: str,
    limits: ArchiveLimits,
    budget: Budget,
    findings: Findings,
) -> bytes | None:
    """The member's head, or all of it if it needs reading whole and the limits allow; None if not read far enough.

    zipfile never unpacks more than a member's declared size, so that size is what reading it
    whole costs, and it is known before.
    """
    if budget.left <= 0:
        findings.could_not_inspect(Uninspected(path, "budget", _budget_used_up(budget)))
        return None
    with archive.open(info) as member:
        head = member.read(HEAD)
        budget.take(len(head))
        if len(head) < HEAD or not needs_whole(head):
            return head
        if info.file_size > limits.member_size:
            limit = f"it unpacks to {mib(info.file_size)}, more than the {mib(limits.member_size)} we open per file"
            findings.could_not_inspect(Uninspected(path, "size", limit))
            return None
        if info.file_size - len(head) > budget.left:
            findings.could_not_inspect(Uninspected(path, "budget", _budget_used_up(budget)))
            return None
        rest = member.read()
    budget.take(len(rest))
    return head + rest


def _budget_used_up(budget: Budget) -> str:
    return f"it does not fit into the {mib(budget.total)} we unpack per message at most"
