"""Progress while importing archives, and the summary at the end of an ingest run."""

from __future__ import annotations

import time
from typing import TextIO

from mailwarden.ingest.pipeline import Stats


def _size(value: float) -> str:
    for unit in ("B", "KB", "MB", "GB"):
        if value < 1000 or unit == "GB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1000
    return f"{value:.1f} TB"


def _clock(seconds: float) -> str:
    seconds = int(seconds)
    return f"{seconds // 3600}:{seconds // 60 % 60:02d}:{seconds % 60:02d}"


class Progress:
    """One status line on a terminal, rewritten at most twice a second: bytes, lines/s, ETA.

    The total is the sum of the input files' sizes on disk; for compressed files it is an estimate
    (their size on disk grows by their compression ratio as they are read), so the ETA settles
    after the first file.
    """

    def __init__(self, out: TextIO, total_bytes: int, stats: Stats) -> None:
        self.out = out
        self.total = total_bytes
        self.stats = stats
        self.done = 0
        self._started = time.monotonic()
        self._shown = 0.0

    def advance(self, nbytes: int) -> None:
        self.done += nbytes
        now = time.monotonic()
        if now - self._shown >= 0.5:
            self._shown = now
            self.show(now)

    def show(self, now: float | None = None) -> None:
        elapsed = max((now or time.monotonic()) - self._started, 1e-6)
        rate = self.stats.lines / elapsed
        line = f"{_size(self.done)}"
        if self.total:
            share = min(self.done / self.total, 1.0)
            line += f" of {_size(self.total)} ({share:.0%})"
            if share > 0:
                line += f"  ETA {_clock(elapsed / share - elapsed)}"
        line += f"  {self.stats.lines:,} lines  {rate:,.0f} lines/s  {self.stats.events:,} events"
        self.out.write("\r" + line[:150].ljust(100))
        self.out.flush()

    def close(self) -> None:
        self.show()
        self.out.write("\n")
        self.out.flush()


class CountingProgress:
    """One status line on a terminal for work counted in items (`store reindex`): done, share, rate, ETA."""

    def __init__(self, out: TextIO, total: int, unit: str) -> None:
        self.out = out
        self.total = total
        self.unit = unit
        self.done = 0
        self._started = time.monotonic()
        self._shown = 0.0

    def update(self, done: int) -> None:
        self.done = done
        now = time.monotonic()
        if now - self._shown >= 0.5:
            self._shown = now
            self.show(now)

    def show(self, now: float | None = None) -> None:
        elapsed = max((now or time.monotonic()) - self._started, 1e-6)
        line = f"{self.done:,} of {self.total:,} {self.unit}"
        if self.total:
            share = min(self.done / self.total, 1.0)
            line += f" ({share:.0%})"
            if share > 0:
                line += f"  ETA {_clock(elapsed / share - elapsed)}"
        line += f"  {self.done / elapsed:,.0f} {self.unit}/s"
        self.out.write("\r" + line[:150].ljust(80))
        self.out.flush()

    def close(self) -> None:
        self.show()
        self.out.write("\n")
        self.out.flush()


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
