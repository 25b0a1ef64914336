"""What a message carries: its attachments, dangerous file types and Office macros, in one pass.

`inspect_message` runs in a worker process (scan/workers.py), never on the event loop: it is
CPU-bound (MIME decoding, unzipping, olevba). It reads the message from bytes or maps the spool
file, so even a 25 MB message is not copied, and it never raises on stranger input: what could
not be looked at is listed in `problems`.
"""

from __future__ import annotations

import logging
import mmap
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, replace
from typing import TypeVar

from mailwarden.scan import attachments, macros
from mailwarden.scan.attachments import ArchiveLimits, Budget, Danger, Uninspected
from mailwarden.scan.clamd import scan_bytes
from mailwarden.scan.macros import MacroReport
from mailwarden.scan.mime import Buffer, Leaf, Walk, decode

log = logging.getLogger(__name__)
T = TypeVar("T")

HEAD_BYTES = 40 * 1024  # decoded bytes the magic checks need (an ISO 9660 marker sits at 36 kB)
TRIAGE_PARTS = 100  # parts the light pass looks at before it leaves the message to a worker


@dataclass(frozen=True)
class ContentLimits:
    max_depth: int = 20
    max_parts: int = 1000
    part_size: int = 64 * 1024 * 1024  # decoded bytes looked at per MIME part
    archive: ArchiveLimits = field(default_factory=ArchiveLimits)
    dangerous_extensions: frozenset[str] = frozenset(attachments.DANGEROUS_EXTENSIONS)


@dataclass
class ContentReport:
    parts: int = 0
    attachments: list[str] = field(default_factory=list)
    dangerous: list[Danger] = field(default_factory=list)
    macros: list[MacroReport] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)
    structure_exceeded: str | None = None  # MIME nesting or part count beyond the limits
    uninspected: list[Uninspected] = field(default_factory=list)  # archives the limits kept us out of

    def note(self, problem: str) -> None:
        if problem not in self.problems and len(self.problems) < 50:
            self.problems.append(problem)

    def could_not_inspect(self, gap: Uninspected) -> None:
        if len(self.uninspected) < 20:
            self.uninspected.append(gap)


class _NeedsWorker(Exception):
    """Raised by the light pass at the first file that needs the heavy parsers."""


def inspect_message(source: bytes | str, limits: ContentLimits) -> ContentReport:
    """`source` is the message itself or the path of its spool file."""
    return _mapped(source, lambda buffer: _inspect(buffer, limits, light=False))


def triage(source: bytes | str, limits: ContentLimits) -> ContentReport | None:
    """The cheap part alone, on the caller's thread: MIME walk, names, and the magic bytes of each file.

    Only the head of each file is decoded (`HEAD_BYTES`: enough for every magic number we look
    for), and at most `TRIAGE_PARTS` parts are looked at. None when an Office document or an
    archive needs the heavy parsers, or the structure needs the full walk: then the message goes
    to a worker process. Most mail needs neither, and a round trip to a worker costs several times
    what this pass costs.
    """
    light_limits = replace(limits, max_parts=min(limits.max_parts, TRIAGE_PARTS), part_size=HEAD_BYTES)
    try:
        return _mapped(source, lambda buffer: _inspect(buffer, light_limits, light=True))
    except _NeedsWorker:
        return None


def _mapped(source: bytes | str, work: Callable[[Buffer], T]) -> T:
    if isinstance(source, bytes):
        return work(source)
    with open(source, "rb") as handle:
        try:
            mapped = mmap.mmap(handle.fileno(), 0, access=mmap.ACCESS_READ)
        except ValueError:  # an empty file cannot be mapped
            return work(b"")
        with mapped:
            return work(mapped)


def _files(walk: Walk) -> Iterator[tuple[str, Leaf]]:
    """(label, leaf) of every part that is a file rather than message text."""
    for number, leaf in enumerate(walk.leaves(), start=1):
        if leaf.filename is None and leaf.content_type.startswith(("text/", "multipart/")):
            continue
        yield leaf.filename or f"part {number} ({leaf.content_type})", leaf


def locate_virus(source: bytes | str, limits: ContentLimits, address: str, timeout: float) -> str | None:
    """Which attachment clamd objects to: each one is scanned on its own (only after a finding)."""

    def search(buffer: Buffer) -> str | None:
        for label, leaf in _files(Walk(buffer, limits.max_depth, limits.max_parts)):
            data, _ = decode(buffer, leaf, limits.part_size)
            if scan_bytes(address, data, timeout).virus is not None:
                return label
        return None

    return _mapped(source, search)


def _inspect(buffer: Buffer, limits: ContentLimits, *, light: bool) -> ContentReport:
    report = ContentReport()
    walk = Walk(buffer, limits.max_depth, limits.max_parts)
    budget = Budget(limits.archive.total)
    for label, leaf in _files(walk):
        name = leaf.filename
        if name is not None and len(report.attachments) < 100:
            report.attachments.append(name)
        danger = attachments.by_name(name, limits.dangerous_extensions) if name else None
        if danger is not None:
            report.dangerous.append(Danger(label, danger))
            continue
        data, problem = decode(buffer, leaf, limits.part_size)
        if problem:
            report.note(f"{label}: {problem}")
        _inspect_file(report, label, data, 0, limits, budget, light=light)
    if light and walk.exceeded:
        raise _NeedsWorker(walk.exceeded)  # the full walk gives the verdict, with the real limits
    report.parts = walk.parts
    for problem in walk.problems:
        report.note(problem)
    report.structure_exceeded = walk.exceeded
    return report


def _inspect_file(
    report: ContentReport, name: str, data: bytes, depth: int, limits: ContentLimits, budget: Budget, *, light: bool
) -> None:
    danger = attachments.by_content(data)
    if danger is not None:
        report.dangerous.append(Danger(name, danger))
        return
    if light and (attachments.is_zip(data) or macros.office_kind(data) is not None):
        raise _NeedsWorker(name)
    if macros.office_kind(data) is not None:
        try:
            found = macros.inspect(name, data)
        except Exception as exc:  # oletools on a malformed document: note it, keep going
            report.note(f"{name}: Office document could not be analysed ({type(exc).__name__})")
            return
        if found is not None:
            report.macros.append(found)
        return
    if not attachments.is_zip(data):
        return
    if depth >= limits.archive.depth:
        limit = f"it is an archive at nesting level {depth + 1}; we open {limits.archive.depth} levels"
        report.could_not_inspect(Uninspected(name, "depth", limit))
        return
    for path, content, bomb in attachments.members(data, name, limits.archive, budget, report):
        if bomb is not None:
            report.dangerous.append(bomb)
            continue
        danger = attachments.by_name(path, limits.dangerous_extensions)
        if danger is not None:
            report.dangerous.append(Danger(path, danger))
        elif content is not None:
            _inspect_file(report, path, content, depth + 1, limits, budget, light=False)
