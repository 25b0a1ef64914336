"""Progress while importing archives, and the summary at the end of an ingest run."""

from __future__ import annotations

from typing import TextIO

from mailwarden.ingest.pipeline import Stats
from mailwarden.progress import Progress


def import_progress(out: TextIO, total_bytes: int, stats: Stats) -> Progress:
    """The status line of an archive import: bytes read of the files' total, lines/s and events."""

    def tail(elapsed: float) -> str:
        return f"{stats.lines:,} lines  {stats.lines / elapsed:,.0f} lines/s  {stats.events:,} events"

    return Progress(out, total_bytes, tail=tail)


def summary(stats: Stats, seconds: float) -> str:
    """What a run did, for people: lines, events by kind, unknown lines by program."""
    rate = stats.lines / seconds if seconds > 0 else 0.0
    lines = [
        f"lines: {stats.lines:,} in {seconds:.1f} s ({rate:,.0f} lines/s)",
        f"events: {stats.events:,}"
        + (
            " (" + ", ".join(f"{kind} {count:,}" for kind, count in stats.kinds.most_common()) + ")"
            if stats.kinds
            else ""
        ),
        f"ignored lines (understood, nothing to record): {stats.ignored:,}",
        f"unknown lines (kept as `unknown` events): {stats.unknown_total:,}",
    ]
    for program, count in stats.unknown.most_common(20):
        lines.append(f"  {program}: {count:,}")
    if len(stats.unknown) > 20:
        lines.append(f"  ... and {len(stats.unknown) - 20} more programs")
    return "\n".join(lines)
