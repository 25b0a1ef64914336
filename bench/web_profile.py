"""Where a tracking center request's CPU goes: the three requests of bench/web_load.py, in this process.

    .venv/bin/python -m bench.web_profile [--dir /tmp/mailwarden-web-bench] [--requests 200] [--profile]
                                          [--kinds "search API"] [--sort tottime]

Serves bench/web_load.py's copy of the 10 M-event store (made there, with its support account)
through httpx's ASGI transport, one request after the other, and prints the CPU time per request
of each kind (the best of three runs: other work on the machine only adds), with the client's part
and without it (inside the application). With `--profile`, the
handlers and dependencies run inline in this thread (not in FastAPI's thread pool) under cProfile,
which prints the functions that cost the most; the CPU figures are then the profiler's too.
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import pstats
import random
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx

from bench.web_load import PASSWORD, SUPPORT, TARGETS, questions
from mailwarden.config import Config
from mailwarden.store.sqlite import SqliteStore
from mailwarden.web.app import create_app


async def _inline(func: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
    return func(*args, **kwargs)


def run_inline() -> None:
    """FastAPI's and our thread-pool calls run in the calling thread, where cProfile sees them."""
    import fastapi.dependencies.utils
    import fastapi.routing
    import starlette.concurrency

    from mailwarden.web import deps

    for module in (starlette.concurrency, fastapi.routing, fastapi.dependencies.utils, deps):
        module.run_in_threadpool = _inline  # type: ignore[attr-defined]


class Timed:
    """The application, with the CPU time spent inside it: the figure without httpx's client side
    (which costs about as much as a request of the API here)."""

    def __init__(self, app: Any) -> None:
        self.app = app
        self.seconds = 0.0

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        started = time.process_time()
        try:
            await self.app(scope, receive, send)
        finally:
            self.seconds += time.process_time() - started


async def measure(app: Any, paths: dict[str, list[str]], requests: int, profiler: cProfile.Profile | None) -> None:
    timed = Timed(app)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=timed), base_url="http://bench") as client:
        login = await client.post("/api/session", json={"name": SUPPORT, "password": PASSWORD})
        if login.status_code != 200:
            raise SystemExit(f"cannot log in as {SUPPORT} (run bench.web_load once first): {login.text}")
        for kind, kind_paths in paths.items():
            for path in kind_paths[:50]:  # the indexes these questions walk come into the page cache
                await client.get(path)
            runs, inside = [], []
            for _ in range(3):
                started, timed.seconds = time.process_time(), 0.0
                if profiler is not None:
                    profiler.enable()
                for path in kind_paths[50 : 50 + requests]:
                    answer = await client.get(path)
                    if answer.status_code != 200:
                        raise SystemExit(f"{path}: {answer.status_code}")
                if profiler is not None:
                    profiler.disable()
                runs.append((time.process_time() - started) * 1000 / requests)
                inside.append(timed.seconds * 1000 / requests)
            print(
                f"{kind:13} CPU {min(runs):.2f} ms/request (runs: {', '.join(f'{r:.2f}' for r in runs)}),"
                f" in the application {min(inside):.2f} ms (runs: {', '.join(f'{r:.2f}' for r in inside)})",
                flush=True,
            )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dir", default="/tmp/mailwarden-web-bench", help="bench/web_load.py's --dir")
    parser.add_argument("--requests", type=int, default=200, help="per kind and run")
    parser.add_argument("--profile", action="store_true", help="run inline under cProfile and print the costliest")
    parser.add_argument("--kinds", default=",".join(TARGETS), help="which kinds, comma-separated")
    parser.add_argument("--sort", default="cumulative", help="the profile's order (cumulative, tottime, ...)")
    args = parser.parse_args()
    path = Path(args.dir) / "store.db"
    every = questions(path, random.Random(13), 50 + args.requests)
    paths = {kind: every[kind] for kind in args.kinds.split(",")}
    profiler = None
    if args.profile:
        run_inline()
        profiler = cProfile.Profile(time.process_time)
    store = SqliteStore(path)
    try:
        asyncio.run(measure(create_app(Config(web={"listen": "127.0.0.1:1"}), store), paths, args.requests, profiler))
    finally:
        store.close()
    if profiler is not None:
        pstats.Stats(profiler).sort_stats(args.sort).print_stats(60)


if __name__ == "__main__":
    main()
