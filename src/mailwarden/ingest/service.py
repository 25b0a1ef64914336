"""The live ingest role: followed files and the syslog receiver, parsed in one thread.

Parsing is CPU work, so it runs in its own thread and never on the event loop that serves SMTP
and POP3. The receiver (on the loop) only queues lines. The thread polls the followed files,
takes queued messages, releases held events when the input has been quiet for the holdback
time, and checkpoints reading positions about once a second.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from pathlib import Path
from typing import Final

from mailwarden.config import Config, parse_hostport
from mailwarden.ingest.inputs import Follower, Positions
from mailwarden.ingest.pipeline import Ingester, Stream
from mailwarden.ingest.receiver import SyslogReceiver
from mailwarden.ingest.timestamps import local_zone
from mailwarden.store import Store

log = logging.getLogger(__name__)

_POLL_S: Final = 0.25
_CHECKPOINT_S: Final = 1.0
_QUEUE_LIMIT: Final = 100_000
_BATCH: Final = 5000


def configured_ingester(config: Config, store: Store, fmt: str | None = None, node: str | None = None) -> Ingester:
    """An ingester writing to `store`, set up from `[ingest]` (the CLI may override format and node)."""
    settings = config.ingest
    return Ingester(
        store.append,
        fmt=fmt or settings.format,
        default_node=node or settings.node or config.node.name,
        zone=local_zone(settings.timezone),
        holdback_s=settings.holdback,
        lives=store.queue_life,
    )


class IngestService:
    def __init__(
        self, ingester: Ingester, store: Store, files: list[Path], *, warmup_bytes: int, max_line: int
    ) -> None:
        self.ingester = ingester
        self.store = store
        self.positions = Positions(store, ingester)
        self.followers = [
            Follower(path, ingester, self.positions, warmup_bytes=warmup_bytes, max_line=max_line) for path in files
        ]
        self.max_line = max_line
        self._queue: queue.Queue[tuple[str, str]] = queue.Queue(_QUEUE_LIMIT)
        self._streams: dict[str, tuple[Stream, list[int]]] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="ingest", daemon=True)
        self.dropped = 0
        self.error: BaseException | None = None

    def start(self) -> None:
        self._thread.start()

    def submit(self, origin: str, line: str) -> None:
        """Queue a received message (called from the event loop); dropped and counted when full."""
        try:
            self._queue.put_nowait((origin, line))
        except queue.Full:
            self.dropped += 1
            if self.dropped % 1000 == 1:
                log.error("ingest queue full: %d syslog messages dropped so far", self.dropped)

    def stop(self) -> None:
        """Read what is left, store it and the positions, and return when both are committed."""
        self._stop.set()
        self._thread.join()
        self.store.flush()

    def _run(self) -> None:
        last_input = time.monotonic()
        last_checkpoint = last_input
        try:
            while not self._stop.is_set():
                busy = any([follower.poll() for follower in self.followers])
                busy = self._take_queued() or busy
                now = time.monotonic()
                if busy:
                    last_input = now
                elif len(self.ingester.holdback) and now - last_input >= self.ingester.holdback.holdback_us / 1e6:
                    self.ingester.finish()  # quiet input: nothing more will complete the held events
                if now - last_checkpoint >= _CHECKPOINT_S:
                    self._checkpoint()
                    last_checkpoint = now
                if not busy:
                    self._wait()
        except Exception as exc:  # never silently: the daemon logs it and the CLI reports it
            log.exception("the ingest thread stopped")
            self.error = exc
        finally:
            self._take_queued(limit=None)
            self.ingester.finish()
            self._checkpoint()
            for follower in self.followers:
                follower.close()

    def _checkpoint(self) -> None:
        extra: dict[str, str] = {}
        for follower in self.followers:
            extra.update(follower.checkpoint_values())
        self.positions.checkpoint(extra)

    def _wait(self) -> None:
        try:
            item = self._queue.get(timeout=_POLL_S)
        except queue.Empty:
            return
        self._feed_received(*item)

    def _take_queued(self, limit: int | None = _BATCH) -> bool:
        taken = 0
        while limit is None or taken < limit:
            try:
                item = self._queue.get_nowait()
            except queue.Empty:
                break
            self._feed_received(*item)
            taken += 1
        return taken > 0

    def _feed_received(self, origin: str, line: str) -> None:
        entry = self._streams.get(origin)
        if entry is None:
            if len(self._streams) > 10_000:
                self._streams.clear()
            entry = self._streams[origin] = (self.ingester.stream(origin), [0])
        stream, counter = entry
        counter[0] += 1
        self.ingester.feed(stream, line, counter[0])


async def start_role(config: Config, store: Store) -> tuple[IngestService, SyslogReceiver | None, list[str]] | None:
    """`mailwarden serve`'s ingest role, when `[ingest]` names files or syslog addresses."""
    settings = config.ingest
    if not settings.files and not settings.syslog_listen:
        return None
    service = IngestService(
        configured_ingester(config, store),
        store,
        [config.path(name) for name in settings.files],
        warmup_bytes=settings.warmup_bytes,
        max_line=settings.max_line,
    )
    service.start()
    bound = [f"file:{name}" for name in settings.files]
    receiver = None
    if settings.syslog_listen:
        receiver = SyslogReceiver(service.submit, max_line=settings.max_line)
        bound += await receiver.start(
            [parse_hostport(address) for address in settings.syslog_listen], list(settings.syslog_protocols)
        )
    return service, receiver, bound


async def stop_role(role: tuple[IngestService, SyslogReceiver | None, list[str]] | None) -> None:
    if role is None:
        return
    service, receiver, _ = role
    if receiver is not None:
        await receiver.stop()
    service.stop()
