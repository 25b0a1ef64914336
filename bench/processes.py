"""CPU time of process trees from /proc, for the benches that count what a server spends."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Final

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
