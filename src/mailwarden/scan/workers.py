"""A pool of worker processes for CPU-heavy parsing (MIME, archives, olevba), off the event loop.

Why processes and not threads: the parsing is pure Python and would hold the GIL, stalling every
SMTP session; and a process can be killed. Each worker runs one task at a time with a memory limit
(RLIMIT_AS, so a zip bomb ends in MemoryError, not in the OOM killer); a task that overruns its
time budget gets its worker killed and replaced, and the caller a TimeoutError (the check turns
it into a 4xx). Tasks and results cross a pipe as length-prefixed pickles - only between this
process and its own children.
"""

from __future__ import annotations

import asyncio
import logging
import os
import pickle
import struct
import sys
from collections.abc import Callable
from typing import Any, BinaryIO, Final

log = logging.getLogger(__name__)

_LENGTH: Final = struct.Struct("!I")


class WorkerError(Exception):
    """The worker died or answered with an error."""


class _Worker:
    def __init__(self, process: asyncio.subprocess.Process) -> None:
        self.process = process

    async def call(self, task: tuple[Callable[..., Any], tuple[Any, ...]]) -> Any:
        stdin, stdout = self.process.stdin, self.process.stdout
        assert stdin is not None and stdout is not None
        payload = pickle.dumps(task, protocol=pickle.HIGHEST_PROTOCOL)
        try:
            stdin.write(_LENGTH.pack(len(payload)) + payload)
            await stdin.drain()
            size = _LENGTH.unpack(await stdout.readexactly(_LENGTH.size))[0]
            status, value = pickle.loads(await stdout.readexactly(size))
        except (asyncio.IncompleteReadError, ConnectionError) as exc:
            raise WorkerError(f"worker process {self.process.pid} died") from exc
        if status != "ok":
            raise WorkerError(str(value))
        return value

    def kill(self) -> None:
        if self.process.returncode is None:
            self.process.kill()


class WorkerPool:
    def __init__(self, size: int, memory_mb: int) -> None:
        self.size = size
        self.memory_mb = memory_mb
        self._idle: asyncio.Queue[_Worker] | None = None
        self._all: set[_Worker] = set()
        self._starting: asyncio.Lock | None = None

    async def _spawn(self) -> _Worker:
        process = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "mailwarden.scan.workers",
            str(self.memory_mb),
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            limit=1024 * 1024,
        )
        worker = _Worker(process)
        self._all.add(worker)
        return worker

    async def start(self) -> None:
        if self._starting is None:
            self._starting = asyncio.Lock()
        async with self._starting:
            if self._idle is not None:
                return
            idle: asyncio.Queue[_Worker] = asyncio.Queue()
            for _ in range(self.size):
                idle.put_nowait(await self._spawn())
            self._idle = idle

    async def run(self, function: Callable[..., Any], *args: Any, budget: float) -> Any:
        """`function(*args)` in a worker; TimeoutError after `budget` seconds (the worker is replaced)."""
        await self.start()
        assert self._idle is not None
        worker = await self._idle.get()
        try:
            async with asyncio.timeout(budget):
                return await worker.call((function, args))
        except BaseException as exc:
            if not isinstance(exc, WorkerError) or worker.process.returncode is not None:
                worker.kill()  # timed out, cancelled or dead: its state is unknown, replace it
                await worker.process.wait()
                self._all.discard(worker)
                worker = await self._spawn()
            raise
        finally:
            self._idle.put_nowait(worker)

    async def close(self) -> None:
        for worker in list(self._all):
            worker.kill()
            await worker.process.wait()
        self._all.clear()
        self._idle = None


def _serve(memory_mb: int) -> None:
    """The worker's loop: read a task, run it, write the result; exit when stdin closes."""
    import resource

    limit = memory_mb * 1024 * 1024
    resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
    channel_out: BinaryIO = os.fdopen(os.dup(1), "wb")
    os.dup2(2, 1)  # a library that prints must not corrupt the channel
    channel_in: BinaryIO = os.fdopen(os.dup(0), "rb")
    import oletools.olevba  # noqa: F401  (imported once here, not on the first message)

    while True:
        header = channel_in.read(_LENGTH.size)
        if len(header) < _LENGTH.size:
            return
        task = pickle.loads(channel_in.read(_LENGTH.unpack(header)[0]))
        function, args = task
        try:
            result: tuple[str, Any] = ("ok", function(*args))
        except MemoryError:
            result = ("error", f"out of memory (limit {memory_mb} MB)")
        except Exception as exc:
            result = ("error", f"{type(exc).__name__}: {exc}")
        payload = pickle.dumps(result, protocol=pickle.HIGHEST_PROTOCOL)
        channel_out.write(_LENGTH.pack(len(payload)) + payload)
        channel_out.flush()


if __name__ == "__main__":
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr)
    _serve(int(sys.argv[1]) if len(sys.argv) > 1 else 1024)
