"""The worker pool for heavy parsing: results come back, and runaway work is contained.

A task that overruns its budget gets its worker killed and replaced; a task that raises or runs out
of memory is a WorkerError for that message only; the pool keeps serving afterwards.
"""

from __future__ import annotations

import asyncio
import time

import pytest

from mailwarden.scan.workers import WorkerError, WorkerPool


def allocate(megabytes: int) -> int:
    return len(bytearray(megabytes * 1024 * 1024))


def fail(text: str) -> None:
    raise ValueError(text)


def test_results_errors_timeouts_and_memory_limits_leave_the_pool_serving() -> None:
    async def run() -> None:
        pool = WorkerPool(1, memory_mb=512)
        try:
            assert await pool.run(sum, [1, 2, 3], budget=30) == 6
            with pytest.raises(WorkerError, match="ValueError: broken input"):
                await pool.run(fail, "broken input", budget=30)
            with pytest.raises(WorkerError, match="out of memory"):
                await pool.run(allocate, 2048, budget=30)
            (worker,) = pool._all
            with pytest.raises(TimeoutError):
                await pool.run(time.sleep, 60, budget=0.5)
            assert worker.process.returncode is not None  # killed, not left running
            assert pool._all and worker not in pool._all  # and replaced
            assert await pool.run(allocate, 1, budget=30) == 1024 * 1024
        finally:
            await pool.close()

    asyncio.run(run())
