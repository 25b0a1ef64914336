"""The tracking center under load: p50/p95 of the search page, the message page and the search API
with 50 concurrent clients on the 10-million-event store of bench/trace_search.py.

    .venv/bin/python -m bench.web_load [--source /tmp/mailwarden-bench] [--dir /tmp/mailwarden-web-bench]
                                       [--connections 50] [--seconds 20] [--rounds 3] [--workers 0]

The load generator is wrk (Debian's package `wrk`, installed here with apt-get when it is missing;
never by `make test`), driven by a Lua script that sends the session cookie and cycles through a
few hundred different questions, so no answer is a cache's. The store is bench/trace_search.py's
(generated there when `--source` has none); it is copied once into `--dir` with SQLite's backup
(the source is only read: other benchmarks use it), because the tracking center writes its
accounts, sessions and audit log into the store it reads. `mailwarden web` serves it alone.

Each round measures, per kind of request: one client (the service time), then `--connections`
clients at once (wrk, closed loop: each sends its next request when the answer is in). Closed
loop, the latency is about connections / throughput (Little's law), which the output shows next
to the measured p50. The machine's load average is printed before each round: on the shared
2-core machine other work shifts the figures, so rounds are repeated and their spread shown.
"""

from __future__ import annotations

import argparse
import os
import random
import re
import shutil
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlencode

import httpx

from mailwarden.events import us_to_iso

PASSWORD = "bench password, long enough"
SUPPORT = "bench-support"
DAY_US = 86400 * 1_000_000
TARGETS = {"search page": 200.0, "message page": 200.0, "search API": 100.0}  # p95, ms
LUA = r"""
local paths = {}
for line in io.lines(os.getenv("WRK_PATHS")) do paths[#paths + 1] = line end
local cookie = os.getenv("WRK_COOKIE")
local counter = 0
local threads = {}
function setup(thread)
  thread:set("offset", #threads * 104729)
  threads[#threads + 1] = thread
end
function request()
  counter = counter + 1
  return wrk.format("GET", paths[(counter + offset) % #paths + 1], {["Cookie"] = cookie})
end
function done(summary, latency, requests)
  io.write(string.format(
    "RESULT requests=%d duration_us=%d p50_us=%d p95_us=%d p99_us=%d max_us=%d status_errors=%d socket_errors=%d\n",
    summary.requests, summary.duration, latency:percentile(50), latency:percentile(95), latency:percentile(99),
    latency.max, summary.errors.status,
    summary.errors.connect + summary.errors.read + summary.errors.write + summary.errors.timeout))
end
"""


@dataclass(frozen=True)
class Figures:
    requests: int
    seconds: float
    p50_ms: float
    p95_ms: float
    p99_ms: float
    errors: int
    cpu_ms: float  # the server's CPU time (user + system) per request
    per_worker: tuple[int, ...]  # the open connections each worker process held halfway through

    @property
    def rate(self) -> float:
        return self.requests / self.seconds if self.seconds else 0.0


def ensure_wrk() -> str:
    found = shutil.which("wrk")
    if found:
        return found
    print("installing the load generator: apt-get install -y wrk", flush=True)
    subprocess.run(["apt-get", "install", "-y", "-q", "wrk"], check=True, stdout=subprocess.DEVNULL)
    found = shutil.which("wrk")
    if not found:
        sys.exit("wrk is not installed; install Debian's package `wrk` and run again")
    return found


def ensure_store(source: Path, directory: Path) -> Path:
    """Our own copy of the 10 M-event store (made once with SQLite's backup; the source is only read)."""
    copy = directory / "store.db"
    if copy.exists():
        return copy
    original = source / "events.db"
    if not (source / "complete").exists():
        print(f"no complete store in {source}: generating it (bench/trace_search.py, about 15 minutes)", flush=True)
        from bench.trace_search import generate

        generate(source, 10_000_000)
    directory.mkdir(parents=True, exist_ok=True)
    print(f"copying {original} to {copy} (once)", flush=True)
    started = time.monotonic()
    reading = sqlite3.connect(f"file:{original}?mode=ro", uri=True)
    partial = directory / "store.db.part"
    writing = sqlite3.connect(partial)
    reading.backup(writing, pages=65536)
    writing.close()
    reading.close()
    partial.rename(copy)
    print(f"copied in {time.monotonic() - started:.0f} s", flush=True)
    return copy


def questions(store: Path, rng: random.Random, count: int) -> dict[str, list[str]]:
    """Paths for each kind of request, from real rows of the index: a recipient and the week around
    one of its messages; a message and one of its recipients."""
    conn = sqlite3.connect(f"file:{store}?mode=ro", uri=True)
    try:
        sample = conn.execute(
            "SELECT message_key, recipient, first_seen FROM message_index"
            " WHERE recipient != '' ORDER BY random() LIMIT ?",
            (count,),
        ).fetchall()
    finally:
        conn.close()
    searches, api, messages = [], [], []
    for key, recipient, seen in sample:
        since = seen - rng.randint(0, 6) * DAY_US
        window = {
            "recipient": recipient,
            "since": us_to_iso(since)[:16],
            "until": us_to_iso(since + 7 * DAY_US)[:16],
        }
        searches.append("/search?" + urlencode(window))
        api.append("/api/search?" + urlencode(window))
        messages.append(f"/message/{key}?" + urlencode({"recipient": recipient}))
    return {"search page": searches, "message page": messages, "search API": api}


def cpu_seconds(pid: int) -> float:
    """User and system time so far of a process (all its threads) and of its worker processes."""
    fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    own = (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    workers = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
    return own + sum(cpu_seconds(int(child)) for child in workers)


def connections_per_worker(pid: int, port: int) -> tuple[int, ...]:
    """How many established connections to `port` each worker process of `pid` (or `pid` alone) holds."""
    inodes = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for line in Path(table).read_text().splitlines()[1:]:
            fields = line.split()
            if fields[3] == "01" and int(fields[1].rsplit(":", 1)[1], 16) == port:  # 01: established
                inodes.add(f"socket:[{fields[9]}]")
    held = []
    for worker in Path(f"/proc/{pid}/task/{pid}/children").read_text().split() or [str(pid)]:
        count = 0
        for fd in Path(f"/proc/{worker}/fd").iterdir():
            try:
                count += str(fd.readlink()) in inodes
            except OSError:
                continue
        held.append(count)
    return tuple(sorted(held, reverse=True))


@contextmanager
def web_server(directory: Path, store: Path, port: int, workers: int) -> Iterator[tuple[str, int]]:
    config = directory / "web.toml"
    config.write_text(
        f'[store]\nurl = "sqlite:///{store}"\n[web]\nlisten = "127.0.0.1:{port}"\nfirst_admin = ""\n'
        f"login_max_failures = 1000\nworkers = {workers}\n"
    )
    mailwarden = [sys.executable, "-m", "mailwarden", "-c", str(config)]
    subprocess.run(
        [*mailwarden, "accounts", "remove", SUPPORT], capture_output=True, check=False
    )  # a fresh password each run
    subprocess.run(
        [*mailwarden, "accounts", "add", SUPPORT, "--role", "support", "--password-stdin"],
        input=PASSWORD + "\n",
        text=True,
        check=True,
        capture_output=True,
    )
    log = directory / "web.log"
    with log.open("w") as output:
        server = subprocess.Popen([*mailwarden, "web"], stdout=output, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 120
        while "mailwarden web ready" not in log.read_text():
            if server.poll() is not None or time.monotonic() > deadline:
                sys.exit(f"`mailwarden web` did not start:\n{log.read_text()}")
            time.sleep(0.2)
        yield f"http://127.0.0.1:{port}", server.pid
    finally:
        server.terminate()
        server.wait(timeout=30)


def session_cookie(url: str) -> str:
    with httpx.Client(base_url=url, timeout=60) as client:
        answer = client.post("/api/session", json={"name": SUPPORT, "password": PASSWORD})
        answer.raise_for_status()
        return f"mw_session={client.cookies['mw_session']}"


def run_wrk(wrk: str, url: str, pid: int, cookie: str, paths: list[str], connections: int, seconds: int) -> Figures:
    cpu_before = cpu_seconds(pid)
    with tempfile.TemporaryDirectory() as scratch:
        script = Path(scratch) / "session.lua"
        script.write_text(LUA)
        listing = Path(scratch) / "paths"
        listing.write_text("\n".join(paths) + "\n")
        threads = max(1, min(2, connections))
        with subprocess.Popen(
            [wrk, f"-t{threads}", f"-c{connections}", f"-d{seconds}s", "--timeout", "30s", "-s", str(script), url],
            env={**os.environ, "WRK_PATHS": str(listing), "WRK_COOKIE": cookie},
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        ) as done:
            time.sleep(seconds / 2)
            per_worker = connections_per_worker(pid, int(url.rsplit(":", 1)[1]))
            stdout, stderr = done.communicate()
    found = re.search(r"RESULT (.*)", stdout)
    if done.returncode or found is None:
        sys.exit(f"wrk failed or printed no result:\n{stdout}\n{stderr}")
    values = {key: int(value) for key, value in (item.split("=") for item in found.group(1).split())}
    cpu = cpu_seconds(pid) - cpu_before
    return Figures(
        values["requests"],
        values["duration_us"] / 1e6,
        values["p50_us"] / 1000,
        values["p95_us"] / 1000,
        values["p99_us"] / 1000,
        values["status_errors"] + values["socket_errors"],
        1000 * cpu / max(1, values["requests"]),
        per_worker,
    )


def check_answers(url: str, cookie: str, paths: dict[str, list[str]]) -> None:
    """Every kind answers 200 and finds something (a benchmark of 404s would measure nothing)."""
    with httpx.Client(base_url=url, timeout=60, headers={"cookie": cookie}) as client:
        for kind, listed in paths.items():
            answer = client.get(listed[0])
            if answer.status_code != 200:
                sys.exit(f"{kind}: {listed[0]} answered {answer.status_code}: {answer.text[:500]}")
            if kind != "message page" and 'class="open"' not in answer.text and '"rows":[{' not in answer.text:
                sys.exit(f"{kind}: {listed[0]} found nothing")


def load_average() -> str:
    return " ".join(Path("/proc/loadavg").read_text().split()[:3])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--source", default="/tmp/mailwarden-bench", help="bench/trace_search.py's store (only read)")
    parser.add_argument("--dir", default="/tmp/mailwarden-web-bench", help="our copy of it, config and log (reused)")
    parser.add_argument("--connections", type=int, default=50)
    parser.add_argument("--seconds", type=int, default=20, help="per kind and round, with all connections")
    parser.add_argument("--single-seconds", type=int, default=8, help="per kind and round, one client")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--questions", type=int, default=400, help="different requests of each kind")
    parser.add_argument("--port", type=int, default=2597)
    parser.add_argument("--workers", type=int, default=0, help="web.workers (0: one per core)")
    parser.add_argument("--kinds", default=",".join(TARGETS), help="which kinds, comma-separated")
    args = parser.parse_args()
    wrk = ensure_wrk()
    directory = Path(args.dir)
    store = ensure_store(Path(args.source), directory)
    paths = questions(store, random.Random(13), args.questions)
    kinds = [kind for kind in args.kinds.split(",") if kind in TARGETS]
    results: dict[tuple[str, int], list[Figures]] = {}
    with web_server(directory, store, args.port, args.workers) as (url, pid):
        cookie = session_cookie(url)
        check_answers(url, cookie, paths)
        for kind in kinds:  # one untimed pass: the indexes these questions walk come into the page cache
            run_wrk(wrk, url, pid, cookie, paths[kind], 2, 5)
        for number in range(1, args.rounds + 1):
            print(f"round {number}, load average {load_average()}", flush=True)
            for kind in kinds:
                for connections, seconds in ((1, args.single_seconds), (args.connections, args.seconds)):
                    figures = run_wrk(wrk, url, pid, cookie, paths[kind], connections, seconds)
                    results.setdefault((kind, connections), []).append(figures)
                    print(
                        f"  {kind:13} {connections:3} clients: {figures.rate:6.1f} req/s  p50 {figures.p50_ms:7.1f} ms"
                        f"  p95 {figures.p95_ms:7.1f} ms  p99 {figures.p99_ms:7.1f} ms  errors {figures.errors}"
                        f"  server CPU {figures.cpu_ms:4.1f} ms/request"
                        f"  connections per worker {'/'.join(map(str, figures.per_worker))}",
                        flush=True,
                    )
    print(f"\nsummary: median of {args.rounds} rounds (min-max), load average now {load_average()}")
    print(f"{'request':13} {'clients':>7} {'req/s':>14} {'p50 ms':>16} {'p95 ms':>18} {'target':>7}  Little")
    for kind in kinds:
        for connections in (1, args.connections):
            runs = results[(kind, connections)]
            rate = statistics.median(f.rate for f in runs)
            p50 = statistics.median(f.p50_ms for f in runs)
            p95 = statistics.median(f.p95_ms for f in runs)
            spread = f"{p95:6.1f} ({min(f.p95_ms for f in runs):.0f}-{max(f.p95_ms for f in runs):.0f})"
            little = f"{1000 * connections / rate:6.1f} ms" if connections > 1 and rate else ""
            target = f"<{TARGETS[kind]:.0f}" if connections > 1 else ""
            print(
                f"{kind:13} {connections:7} {rate:6.1f} ({min(f.rate for f in runs):.0f}-{max(f.rate for f in runs):.0f})"
                f" {p50:7.1f} ({min(f.p50_ms for f in runs):.0f}-{max(f.p50_ms for f in runs):.0f})"
                f" {spread:>18} {target:>7}  {little}"
            )


if __name__ == "__main__":
    main()
