"""The servers the benches start and what they spend: a server process on a free port, an asyncio
server run until killed, and the CPU time of process trees from /proc."""

from __future__ import annotations

import asyncio
import os
import subprocess
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Final

from tests.support.net import free_port, wait_port

TICK: Final = os.sysconf("SC_CLK_TCK")


def tree_cpu(root: int, *, reaped: bool = False) -> float:
    """CPU seconds (user + system) used so far by a process and its live descendants; `reaped`:
    also the children it has already waited for (a database server's ended backends)."""
    parents: dict[int, int] = {}
    times: dict[int, float] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue  # ended meanwhile
        parents[int(entry.name)] = int(fields[1])
        times[int(entry.name)] = (
            sum(int(f) for f in fields[11 : 15 if reaped and int(entry.name) == root else 13]) / TICK
        )
    total, todo = 0.0, [root]
    while todo:
        pid = todo.pop()
        total += times.get(pid, 0.0)
        todo.extend(child for child, parent in parents.items() if parent == pid)
    return total


@contextmanager
def serving(command: Callable[[int], list[str]]) -> Iterator[tuple[int, int]]:
    """The server `command(port)` starts, on a free loopback port: (port, pid) once it listens; ended after."""
    port = free_port()
    process = subprocess.Popen(command(port), stdout=subprocess.DEVNULL)
    try:
        wait_port(port)
        yield port, process.pid
    finally:
        process.terminate()
        process.wait(timeout=30)


def serve_forever(listen: Callable[[], Awaitable[asyncio.AbstractServer]]) -> None:
    """Serve what `listen()` opens until the process is ended, on uvloop when it is installed (as mailwarden runs)."""

    async def main() -> None:
        server = await listen()
        async with server:
            await server.serve_forever()

    try:
        import uvloop
    except ImportError:
        asyncio.run(main())
    else:
        uvloop.run(main())
