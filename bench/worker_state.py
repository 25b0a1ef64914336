"""What the SMTP workers share per client address, and what it costs per connection: three ways.

    python -m bench.worker_state

  shared memory   smtp/clients.py's table (what mailwarden uses): `opened` + `closed` of a
                  connection, `hit` of a rate limit, in the worker's own process,
  supervisor      a counter held by another process, asked over a socketpair per event (one
                  round trip for `opened`, one for `closed`),
  store           the rate counters as rows in the SQLite store, as greylisting keeps its triplets
                  (an upsert and a read per event, each its own transaction on the store's connection).
Prints microseconds per connection (open + close, or one rate hit) for each.
"""

from __future__ import annotations

import os
import pickle
import socket
import sqlite3
import statistics
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from mailwarden.smtp.clients import SharedCounts, create_table  # noqa: E402
from mailwarden.store.sqlite import SqliteStore  # noqa: E402

ROUNDS = 20_000
CLIENTS = [f"198.51.100.{n}" for n in range(1, 201)]


def shared_memory() -> tuple[float, float]:
    fd = create_table(workers=2)
    counts = SharedCounts(fd, slot=1)
    started = time.perf_counter()
    for n in range(ROUNDS):
        ip = CLIENTS[n % len(CLIENTS)]
        counts.opened(ip)
        counts.closed(ip)
    connection = (time.perf_counter() - started) / ROUNDS
    now = time.time()
    started = time.perf_counter()
    for n in range(ROUNDS):
        counts.hit("connections", CLIENTS[n % len(CLIENTS)], now + n * 0.001)
    rate = (time.perf_counter() - started) / ROUNDS
    counts.close()
    os.close(fd)
    return connection, rate


def _serve_counter(sock: socket.socket) -> None:
    """The supervisor's side: a dictionary of open connections per address, one request at a time."""
    per_ip: Counter[str] = Counter()
    while request := sock.recv(256):
        what, ip = pickle.loads(request)
        per_ip[ip] += 1 if what == "open" else -1
        sock.sendall(pickle.dumps((per_ip[ip], sum(per_ip.values()))))


def supervisor() -> float:
    ours, theirs = socket.socketpair()
    pid = os.fork()
    if pid == 0:
        ours.close()
        _serve_counter(theirs)
        os._exit(0)
    theirs.close()
    started = time.perf_counter()
    for n in range(ROUNDS):
        ip = CLIENTS[n % len(CLIENTS)]
        for what in ("open", "close"):
            ours.sendall(pickle.dumps((what, ip)))
            pickle.loads(ours.recv(256))
    elapsed = (time.perf_counter() - started) / ROUNDS
    ours.close()
    os.waitpid(pid, 0)
    return elapsed


def store(directory: Path) -> float:
    """A rate hit as a row in the store: upsert this minute's count, read it back (like a greylist lookup)."""
    opened = SqliteStore(directory / "store.db")  # makes the directory and the schema
    conn = sqlite3.connect(opened.path, isolation_level=None)
    conn.execute("PRAGMA synchronous=FULL")  # the store's setting: what is committed survives
    conn.execute("CREATE TABLE rates (ip TEXT, minute INTEGER, count INTEGER, PRIMARY KEY (ip, minute))")
    rounds = ROUNDS // 10
    started = time.perf_counter()
    for n in range(rounds):
        ip, minute = CLIENTS[n % len(CLIENTS)], n // 1000
        conn.execute(
            "INSERT INTO rates VALUES (?, ?, 1) ON CONFLICT (ip, minute) DO UPDATE SET count = count + 1", (ip, minute)
        )
        conn.execute("SELECT sum(count) FROM rates WHERE ip = ? AND minute >= ?", (ip, minute - 1)).fetchone()
    elapsed = (time.perf_counter() - started) / rounds
    conn.close()
    opened.close()
    return elapsed


def main() -> int:
    print(f"machine: {os.cpu_count()} cores, load {os.getloadavg()[0]:.1f}", flush=True)
    runs = [shared_memory() for _ in range(3)]
    connection = statistics.median(r[0] for r in runs) * 1e6
    rate = statistics.median(r[1] for r in runs) * 1e6
    round_trip = statistics.median(supervisor() for _ in range(3)) * 1e6
    with tempfile.TemporaryDirectory(prefix="mw-bench-") as tmp:
        in_store = statistics.median(store(Path(tmp, str(n))) for n in range(3))
    print("per client address, median of 3 runs (microseconds):")
    print(
        f"  connection opened + closed: shared memory {connection:7.1f}   supervisor (2 round trips) {round_trip:7.1f}"
    )
    print(f"  rate limit hit:             shared memory {rate:7.1f}   store (upsert + read)      {in_store * 1e6:7.1f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
