"""The SMTP workers' supervisor: one worker process per core, restarted when it dies, reloaded on SIGHUP.

Python runs one core per process; Postfix spreads over all of them. So `mailwarden serve` runs
`smtp.workers` gateway processes (workers/worker.py), and this supervisor:
- binds the listening sockets: per address one SO_REUSEPORT socket per worker slot, which the
  kernel balances new connections over. It keeps them open while a worker restarts, so the
  connections that arrive meanwhile wait in that socket's backlog instead of being refused;
- records what a crash left (delivery journal, tmp/, spool) before any worker starts;
- owns the store's one event writer, which the workers' events reach over socketpairs
  (store/remote.py), and the table of per-client counts they share (smtp/clients.py);
- restarts a worker that dies: first the events it sent are committed, then its journal is
  reconciled (so a delivery of its that lost its commit is recorded as `delivered.unconfirmed`
  before its successor starts), its spool files removed and its counts cleared; a worker that
  dies again at once waits longer each time (1 s doubling up to 30 s);
- SIGHUP: reads the configuration again and restarts the workers one after the other, each
  finishing its transactions first; SIGTERM/SIGINT: stops them all that way, then itself.
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from typing import Final

from mailwarden.config import Config, ConfigError, load
from mailwarden.listening import bind_shared, join, shown
from mailwarden.smtp.clients import clear_slot, create_table, set_workers
from mailwarden.smtp.gateway import BACKLOG, recover
from mailwarden.store import Store
from mailwarden.store.remote import EventService
from mailwarden.workers.worker import ENV, Handover

log = logging.getLogger(__name__)

READY_TIMEOUT: Final = 120.0  # a worker's start: imports, store, refs (it waits for a fresh second)
STOP_GRACE: Final = 40.0  # after SIGTERM: the gateway's 10 s for transactions, then delivery and events
QUICK_DEATH: Final = 10.0  # a worker that ends sooner after its start is restarted after a pause
MAX_PAUSE: Final = 30.0
# What the supervisor holds: a reload leaves it as it is (a restart changes it).
_HELD: Final = {
    "node": None,
    "store": None,
    "pop3": None,
    "web": None,
    "metrics": None,
    "ingest": None,
    "milter": None,  # served by the supervisor itself (serve.py)
    "policy": None,
    "mail": ("maildir_root", "spool_dir"),
    "smtp": ("listen",),
}


class WorkerFailed(Exception):
    """A worker could not be started; the message says why (its log says more)."""


@dataclass
class _Worker:
    slot: int
    process: subprocess.Popen[bytes]
    link: threading.Thread  # reads its events into the store
    started: float
    exited: asyncio.Future[int] = field(default_factory=lambda: asyncio.get_running_loop().create_future())
    replacing: bool = False  # stopped on purpose (reload): not restarted by `_exited`


class Supervisor:
    def __init__(self, config: Config, config_path: str | None, store: Store) -> None:
        self.config = config
        self.config_path = config_path
        self.store = store
        self.service = EventService(store)
        self.counts = create_table(config.smtp.worker_count)
        self.sockets: dict[int, list[socket.socket]] = {}  # slot -> its listening sockets
        self.workers: dict[int, _Worker] = {}
        self.stopping = False
        self._pauses: dict[int, float] = {}
        self._changing = asyncio.Lock()  # reloads and restarts one at a time
        self._tasks: set[asyncio.Task[None]] = set()

    def running(self) -> int:
        """SMTP workers running now (read by /metrics and /health from their thread)."""
        return sum(1 for worker in list(self.workers.values()) if worker.process.returncode is None)

    @property
    def addresses(self) -> list[str]:
        first = self.sockets[min(self.sockets)]
        return [shown(s) for s in first]

    # ------------------------------------------------------------------ start and stop
    async def start(self) -> None:
        """Recover what a crash left, then start every worker and wait until each listens."""
        await asyncio.to_thread(recover, self.config, self.store)
        if not self.config.smtp.listen:  # no SMTP of our own (Postfix in front, with the milter): no workers
            return
        slots = range(1, self.config.smtp.worker_count + 1)
        self._bind(len(slots))
        try:
            await asyncio.gather(*(self._start(slot) for slot in slots))
        except WorkerFailed:
            await self.stop()
            raise

    async def stop(self) -> None:
        """SIGTERM to every worker (each finishes its transactions, then hands over its events), then wait."""
        self.stopping = True
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*(self._stop_worker(worker) for worker in list(self.workers.values())))
        for sockets in self.sockets.values():
            for sock in sockets:
                sock.close()
        os.close(self.counts)

    async def reload(self) -> None:
        """SIGHUP: the configuration read again; the workers restarted with it one after the other."""
        try:
            config = held(self.config, load(self.config_path))
        except ConfigError as exc:
            log.error("reload refused, the running configuration stays: %s", exc)
            return
        if not config.smtp.listen:
            self.config = config
            return
        async with self._changing:
            self.config = config
            wanted = config.smtp.worker_count
            set_workers(self.counts, max(wanted, max(self.workers, default=0)))
            for slot in sorted(set(self.workers) | set(range(1, wanted + 1))):
                if slot in self.workers:
                    self.workers[slot].replacing = True
                    await self._stop_worker(self.workers[slot])
                if slot <= wanted:
                    try:
                        if slot not in self.sockets:
                            self.sockets[slot] = self._join()
                        await self._start(slot)
                    except WorkerFailed as exc:
                        log.error(
                            "%s", exc
                        )  # a started worker's exit brings the next attempt, no socket the next reload
                else:
                    for sock in self.sockets.pop(slot, []):
                        sock.close()
            set_workers(self.counts, wanted)
        log.info("reloaded: %d SMTP workers run with the new configuration", wanted)

    # ------------------------------------------------------------------ one worker
    def _bind(self, count: int) -> None:
        """Per `smtp.listen` address `count` listening sockets on its port, one for each worker slot.

        A port in use is refused with the reason - also one held by another `mailwarden serve` of
        the same user, whose SO_REUSEPORT sockets would otherwise share it with ours (listening.py)."""
        per_address: list[list[socket.socket]] = []
        for address in self.config.smtp.listen:
            try:
                per_address.append(bind_shared(address, count, backlog=BACKLOG))
            except OSError as exc:
                for sock in (sock for sockets in per_address for sock in sockets):
                    sock.close()
                raise ConfigError(
                    f"cannot listen on {address} (smtp.listen): {exc.strerror}; stop what listens there"
                    " (another mailwarden serve?) or choose another address"
                ) from None
        self.sockets = {slot: [sockets[slot - 1] for sockets in per_address] for slot in range(1, count + 1)}

    def _join(self) -> list[socket.socket]:
        """The listening sockets of one more worker slot (a reload that asks for more workers), on the same ports."""
        joined: list[socket.socket] = []
        try:
            joined.extend(join(sock, backlog=BACKLOG) for sock in self.sockets[min(self.sockets)])
        except OSError as exc:
            for sock in joined:
                sock.close()
            raise WorkerFailed(f"no listening socket for one more SMTP worker: {exc.strerror}") from None
        return joined

    async def _start(self, slot: int) -> None:
        ours, theirs = socket.socketpair()
        ready, told = os.pipe()
        handover = Handover(
            slot=slot,
            config=Handover.encode_config(self.config),
            parent=os.getpid(),
            events=theirs.fileno(),
            ready=told,
            counts=self.counts,
            listen=[sock.fileno() for sock in self.sockets[slot]],
        )
        try:
            # Forked from the loop's (main) thread on purpose: PR_SET_PDEATHSIG follows the thread that
            # forked, so a worker forked from a pool thread would die when that thread ends.
            process = subprocess.Popen(  # noqa: ASYNC220
                [sys.executable, "-m", "mailwarden.workers.worker"],
                pass_fds=handover.descriptors,
                env={**os.environ, ENV: handover.encode()},
            )
        finally:
            theirs.close()
            os.close(told)
        worker = _Worker(slot, process, self.service.serve(ours, f"SMTP worker {slot}"), time.monotonic())
        self.workers[slot] = worker
        pidfd = os.pidfd_open(process.pid)
        asyncio.get_running_loop().add_reader(pidfd, self._exited, worker, pidfd)
        try:
            said = await asyncio.wait_for(asyncio.to_thread(_read_all, ready), READY_TIMEOUT)
        except TimeoutError:
            process.kill()
            said = b""
        finally:
            os.close(ready)
        if said != b"ready\n":
            raise WorkerFailed(f"SMTP worker {slot} did not start (see its messages above)")
        log.info("SMTP worker %d started (pid %d)", slot, process.pid)

    def _exited(self, worker: _Worker, pidfd: int) -> None:
        loop = asyncio.get_running_loop()
        loop.remove_reader(pidfd)
        os.close(pidfd)
        code = worker.process.wait()
        worker.exited.set_result(code)
        if self.stopping or worker.replacing:
            return
        how = f"was killed by signal {-code}" if code < 0 else f"exited with {code}"
        log.error("SMTP worker %d (pid %d) %s; starting it again", worker.slot, worker.process.pid, how)
        task = loop.create_task(self._restart(worker))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _restart(self, worker: _Worker) -> None:
        async with self._changing:
            await self._settle(worker)
            quick = time.monotonic() - worker.started < QUICK_DEATH
            pause = min(self._pauses.get(worker.slot, 0.5) * 2, MAX_PAUSE) if quick else 0.0
            self._pauses[worker.slot] = pause
            if pause:
                log.warning("SMTP worker %d ended soon after its start: the next start in %.0f s", worker.slot, pause)
                await asyncio.sleep(pause)
            try:
                await self._start(worker.slot)
            except WorkerFailed as exc:
                log.error("%s", exc)  # its exit brings the next attempt

    async def _stop_worker(self, worker: _Worker) -> None:
        if not worker.exited.done():
            worker.process.send_signal(signal.SIGTERM)
            try:
                await asyncio.wait_for(asyncio.shield(worker.exited), STOP_GRACE)
            except TimeoutError:
                log.error("SMTP worker %d did not stop within %.0f s: killed", worker.slot, STOP_GRACE)
                worker.process.kill()
                await worker.exited
        await self._settle(worker)

    async def _settle(self, worker: _Worker) -> None:
        """After a worker ended: its events committed, then its journal reconciled, its spool and counts cleared."""
        await asyncio.to_thread(worker.link.join)
        await asyncio.to_thread(self.store.flush)
        await asyncio.to_thread(recover, self.config, self.store, worker.slot)
        clear_slot(self.counts, worker.slot)
        if self.workers.get(worker.slot) is worker:
            del self.workers[worker.slot]


def held(running: Config, new: Config) -> Config:
    """`new` with what the supervisor holds taken from `running` (a warning names what waits for a restart)."""
    kept: dict[str, object] = {}
    waiting = []
    for section, fields in _HELD.items():
        now, then = getattr(running, section), getattr(new, section)
        if fields is None:
            if now != then:
                waiting.append(f"[{section}]")
            kept[section] = now
            continue
        unchanged = {name: getattr(now, name) for name in fields}
        waiting += [f"{section}.{name}" for name, value in unchanged.items() if getattr(then, name) != value]
        kept[section] = then.model_copy(update=unchanged)
    if waiting:
        log.warning("reload: %s take effect at the next start, not now", ", ".join(waiting))
    return new.model_copy(update=kept)


def _read_all(fd: int) -> bytes:
    """What the worker writes on its ready pipe until it closes it (or dies)."""
    chunks = []
    while chunk := os.read(fd, 64):
        chunks.append(chunk)
    return b"".join(chunks)
