"""The node's /metrics and /health on `[metrics] listen`, served by `mailwarden serve`'s supervisor.

/metrics sums what every process of the node counted (metrics.py: the SMTP workers', and the
supervisor's own POP3 sessions and Postfix sessions) with prometheus_client's multiprocess
collector, and adds what only the supervisor knows, read at each scrape: the event writer's
backlog, the local event spool (PostgreSQL store), open POP3 sessions, running SMTP workers.

/health answers 200 "ok" while the node can accept mail with its evidence, else 503 and one short
line saying why: the events cannot be committed (store unreachable and the spool full or not
writable, a full disk, ...), the event writer is stuck, or no SMTP worker runs.

A small threaded HTTP server (wsgiref, as prometheus_client's own exporter), so a scrape never
waits for the supervisor's event loop, nor the loop for a scrape. Plain HTTP without login:
bind it to loopback or a monitoring network (the values say how much mail flows and why it is
refused, nothing about whom).
"""

from __future__ import annotations

import logging
import shutil
import threading
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final
from wsgiref.simple_server import WSGIRequestHandler

from prometheus_client import CollectorRegistry, make_wsgi_app
from prometheus_client.exposition import ThreadingWSGIServer
from prometheus_client.metrics_core import GaugeMetricFamily, Metric
from prometheus_client.multiprocess import MultiProcessCollector

from mailwarden import metrics
from mailwarden.config import Config
from mailwarden.listening import refused, resolve, shown
from mailwarden.store import Store
from mailwarden.store.spool import EventSpool

log = logging.getLogger(__name__)

REASON_LENGTH: Final = 200  # /health's reason line at most


def prepare_directory(directory: Path) -> None:
    """Empty `directory` (counts of an earlier run) and count into it from now on, here and in the workers."""
    shutil.rmtree(directory, ignore_errors=True)
    directory.mkdir(mode=0o700, parents=True)
    metrics.use_directory(directory)


@dataclass
class Node:
    """What /metrics and /health read about this node, each at the moment it is asked."""

    config: Config
    store: Store
    spool: EventSpool | None = None  # PostgreSQL's local event spool
    smtp_workers: Callable[[], int] | None = None  # running SMTP workers; None: no SMTP of our own
    pop3_sessions: Callable[[], int] | None = None

    def health(self) -> str | None:
        """None while mail can be accepted with its evidence, else why not (one short line)."""
        state = self.store.writer_state()
        if state.error is not None:
            # Try again now, not only when the next event comes: the answer after this one is current.
            self.store.commit_soon((), lambda error: None)
            return f"events cannot be committed: {state.error}"
        if state.oldest_seconds > self.config.metrics.stuck_after:
            return f"event writer stuck: the oldest uncommitted event has waited {state.oldest_seconds:.0f} s"
        if self.smtp_workers is not None and self.smtp_workers() == 0:
            return "no SMTP worker is running"
        return None


class NodeCollector:
    """The supervisor's own figures, read at each scrape."""

    def __init__(self, node: Node) -> None:
        self.node = node

    def collect(self) -> Iterator[Metric]:
        node = self.node
        state = node.store.writer_state()
        yield _gauge(
            "mailwarden_event_writer_queued",
            "Events and commits waiting for the store's writer, plus those of a batch being written or kept for a retry.",
            state.queued,
        )
        yield _gauge(
            "mailwarden_event_writer_oldest_seconds",
            "How long the oldest event not yet committed to the store has waited (0 with none).",
            state.oldest_seconds,
        )
        yield _gauge(
            "mailwarden_event_writer_failing",
            "1 while the store's last write failed (the events are kept and retried), else 0.",
            0 if state.error is None else 1,
        )
        if node.spool is not None:
            yield _gauge(
                "mailwarden_event_spool_batches",
                "Batches of events in the local spool, waiting for PostgreSQL.",
                node.spool.depth(),
            )
            yield _gauge("mailwarden_event_spool_bytes", "Bytes in the local event spool.", node.spool.size())
        if node.smtp_workers is not None:
            yield _gauge("mailwarden_smtp_workers", "SMTP worker processes running.", node.smtp_workers())
        if node.pop3_sessions is not None:
            yield _gauge("mailwarden_pop3_sessions_open", "POP3 connections open now.", node.pop3_sessions())
        yield _gauge("mailwarden_healthy", "1 while /health answers 200, else 0.", 1 if node.health() is None else 0)


def _gauge(name: str, documentation: str, value: float) -> GaugeMetricFamily:
    return GaugeMetricFamily(name, documentation, value=value)


class _QuietHandler(WSGIRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:
        """Scrapes are not logged (one every few seconds)."""


def application(node: Node, directory: Path) -> Callable[..., Iterable[bytes]]:
    """The WSGI application: /metrics (Prometheus text format), /health, and 404 for anything else."""
    registry = CollectorRegistry(auto_describe=False)
    MultiProcessCollector(registry, str(directory))  # type: ignore[no-untyped-call]  # untyped in prometheus_client
    registry.register(NodeCollector(node))
    scrape = make_wsgi_app(registry)

    def app(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        path = environ.get("PATH_INFO", "")
        if path == "/metrics":
            answer: Iterable[bytes] = scrape(environ, start_response)
            return answer
        if path == "/health":
            problem = node.health()
            status = "200 OK" if problem is None else "503 Service Unavailable"
            body = ("ok" if problem is None else problem)[:REASON_LENGTH].encode("utf-8", "replace") + b"\n"
            start_response(status, [("Content-Type", "text/plain; charset=utf-8"), ("Cache-Control", "no-store")])
            return [body]
        start_response("404 Not Found", [("Content-Type", "text/plain; charset=utf-8")])
        return [b"not found: /metrics and /health are served here\n"]

    return app


class Exporter:
    """The HTTP listener of /metrics and /health, in threads of its own."""

    def __init__(self, node: Node, directory: Path) -> None:
        self.node = node
        listen = node.config.metrics.listen
        try:
            family, address = resolve(listen)

            class Server(ThreadingWSGIServer):
                address_family = family

            self._server = Server(address, _QuietHandler)  # the whole address: an IPv6 scope too
            self._server.set_app(application(node, directory))
        except OSError as exc:
            raise refused("metrics.listen", listen, exc) from None
        self.address = shown(self._server.socket)
        self._thread = threading.Thread(target=self._server.serve_forever, name="metrics", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join()
