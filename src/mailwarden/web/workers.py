"""`mailwarden web` with worker processes (`web.workers`): several processes serve one port.

One process answers a request in 2-5 ms of CPU, so with many clients at once they wait in its
queue (bench/README.md, "tracking center under load"); the pages are Python, so threads do not
help, processes do. The supervisor opens the store once (its migrations, the first admin and its
password printed once), binds one listening socket per worker on the same port (SO_REUSEPORT) and
forks the workers before it runs any thread; each worker opens the store itself and accepts on its
own socket. The kernel gives each new connection to one of the sockets by a hash of the client's
address and port, so keep-alive connections are spread evenly over the workers: with one socket
shared by all, whichever worker woke first accepted most of a burst (50 connections opened at
once went 48/2 in two of three tries) and served them alone while the other idled.

What a worker must see of the others - login sessions, login failures and locks, the /why limit,
the login form's key - is in the store (store/accounts.py, store/web_state.py), so any worker may
answer any request.

The workers die with the supervisor (PR_SET_PDEATHSIG). SIGTERM or SIGINT to the supervisor ends
them and then it; a worker that ends on its own ends the others and the supervisor with exit code
1, so whoever runs it (systemd) restarts the whole, rather than half of it serving.
"""

from __future__ import annotations

import asyncio
import logging
import os
import select
import signal
import socket
import sys
import time
from typing import Final

from mailwarden.config import Config
from mailwarden.listening import bind_shared, refused
from mailwarden.store import open_store
from mailwarden.web.accounts import ensure_first_admin
from mailwarden.web.server import BACKLOG, WebServer, announce_first_admin, require_listen, until_signalled, url_of
from mailwarden.workers.lifeline import die_with_parent

log = logging.getLogger(__name__)

WATCHED: Final = {signal.SIGTERM, signal.SIGINT, signal.SIGCHLD}
STOP_SECONDS: Final = 15.0  # a worker gets this long after SIGTERM to finish its answers


def count(config: Config) -> int:
    """How many worker processes `web.workers` asks for (0: one per CPU core we may run on)."""
    return config.web.workers or len(os.sched_getaffinity(0))


def run(config: Config, workers: int) -> int:
    """The supervisor: start `workers` processes on one socket, serve until SIGTERM/SIGINT; the exit code."""
    require_listen(config)
    store = open_store(config)  # migrated here, once, before the workers open it
    try:
        created = ensure_first_admin(config, store)
    finally:
        store.close()
    announce_first_admin(created)
    try:
        sockets = bind_shared(config.web.listen, workers, backlog=BACKLOG)
    except OSError as exc:
        raise refused("web.listen", config.web.listen, exc) from None
    url = url_of(config, sockets[0])
    sys.stderr.flush()  # what is buffered now would be written again by each worker
    signal.pthread_sigmask(signal.SIG_BLOCK, WATCHED)  # taken with sigtimedwait below; workers unblock them
    ready_read, ready_write = os.pipe()
    pids = [_fork(config, sockets, number, ready_write) for number in range(workers)]
    os.close(ready_write)
    for sock in sockets:
        sock.close()
    ready = 0
    code = 0
    while True:
        received = signal.sigtimedwait(WATCHED, 0.2)
        if received is not None and received.si_signo != signal.SIGCHLD:
            break
        ended = _ended(pids)
        if ended:
            print(f"mailwarden web: worker process {ended} ended; stopping the others", file=sys.stderr, flush=True)
            code = 1
            break
        if ready < workers and select.select([ready_read], [], [], 0)[0]:
            ready += len(os.read(ready_read, workers))
            if ready >= workers:
                print(
                    f"mailwarden web ready: {url} ({workers} worker processes)",
                    file=sys.stderr,
                    flush=True,
                )
    os.close(ready_read)
    return max(code, _stop(pids))


def _fork(config: Config, sockets: list[socket.socket], number: int, ready_write: int) -> int:
    """Worker `number`, which serves `sockets[number]` (the others are closed in it)."""
    parent = os.getpid()
    pid = os.fork()
    if pid:
        return pid
    code = 1
    try:
        signal.pthread_sigmask(signal.SIG_UNBLOCK, WATCHED)
        die_with_parent(parent)
        for other in sockets[:number] + sockets[number + 1 :]:
            other.close()  # a connection hashed to a socket is accepted by its worker alone
        asyncio.run(_serve(config, sockets[number], ready_write))
        code = 0
    except BaseException:
        log.exception("web worker process %d failed", os.getpid())
    finally:
        sys.stderr.flush()
        os._exit(code)


async def _serve(config: Config, sock: socket.socket, ready_write: int) -> None:
    """A worker: its own store connection and listening socket, until SIGTERM."""
    store = await asyncio.to_thread(open_store, config)
    try:
        server = WebServer(config, store, sock)
        await server.start()
        os.write(ready_write, b".")
        os.close(ready_write)
        await until_signalled()
        await server.stop()
    finally:
        store.close()


def _ended(pids: list[int]) -> int | None:
    """A worker that has ended (reaped and removed from `pids`), or None."""
    for pid in pids:
        done, _ = os.waitpid(pid, os.WNOHANG)
        if done:
            pids.remove(pid)
            return pid
    return None


def _stop(pids: list[int]) -> int:
    """SIGTERM to every worker, SIGKILL to one still there after `STOP_SECONDS`; 1 if any ended badly."""
    for pid in pids:
        os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + STOP_SECONDS
    code = 0
    for pid in pids:
        while True:
            done, status = os.waitpid(pid, os.WNOHANG)
            if done:
                code = max(code, 1 if os.waitstatus_to_exitcode(status) else 0)
                break
            if time.monotonic() > deadline:
                os.kill(pid, signal.SIGKILL)
                os.waitpid(pid, 0)
                code = 1
                break
            time.sleep(0.05)
    return code
