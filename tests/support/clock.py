"""A clock the test moves: checks that remember time take it from `Services.clock`."""

from __future__ import annotations


class FakeClock:
    """Seconds since the epoch, like `time.time`, standing still until `advance` moves it."""

    def __init__(self, start: float = 1_800_000_000.0) -> None:  # 2027-01-15, a whole minute
        self.now = start

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds
