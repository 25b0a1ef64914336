"""One status line on a terminal for long work (`ingest` of archives, `store reindex`).

Rewritten at most twice a second: how much of the total is done, the share, the ETA, and a rate
(the caller's own figures when it gives a `tail`, say lines/s and events of an import).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TextIO

BYTES = "bytes"  # the unit whose amounts are shown as sizes (kB, MB, GB)


def size(value: float) -> str:
    for unit in ("B", "KB", "MB", "GB"):
        if value < 1000 or unit == "GB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1000
    return f"{value:.1f} TB"


def clock(seconds: float) -> str:
    seconds = int(seconds)
    return f"{seconds // 3600}:{seconds // 60 % 60:02d}:{seconds % 60:02d}"


class Progress:
    """Work counted in `unit`s (bytes by default) out of `total`; `advance` adds, `update` sets.

    `tail(elapsed_seconds)` gives the rest of the line; without it the line ends with units/s. For
    compressed input the byte total is an estimate (files on disk grow by their compression ratio
    as they are read), so the ETA settles after the first file.
    """

    def __init__(
        self, out: TextIO, total: int, unit: str = BYTES, *, tail: Callable[[float], str] | None = None
    ) -> None:
        self.out = out
        self.total = total
        self.unit = unit
        self.tail = tail
        self.done = 0
        self._started = time.monotonic()
        self._shown = 0.0

    def advance(self, amount: int) -> None:
        self.update(self.done + amount)

    def update(self, done: int) -> None:
        self.done = done
        now = time.monotonic()
        if now - self._shown >= 0.5:
            self._shown = now
            self.show(now)

    def show(self, now: float | None = None) -> None:
        elapsed = max((now or time.monotonic()) - self._started, 1e-6)
        if self.unit == BYTES:
            line = size(self.done) + (f" of {size(self.total)}" if self.total else "")
        else:
            line = f"{self.done:,} of {self.total:,} {self.unit}"
        if self.total:
            share = min(self.done / self.total, 1.0)
            line += f" ({share:.0%})"
            if share > 0:
                line += f"  ETA {clock(elapsed / share - elapsed)}"
        line += f"  {self.tail(elapsed)}" if self.tail is not None else f"  {self.done / elapsed:,.0f} {self.unit}/s"
        self.out.write("\r" + line[:150].ljust(100))
        self.out.flush()

    def close(self) -> None:
        self.show()
        self.out.write("\n")
        self.out.flush()
