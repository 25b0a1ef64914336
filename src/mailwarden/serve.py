"""`mailwarden serve`: the SMTP workers under their supervisor, and the roles that run once, until SIGTERM/SIGINT.

This process is the supervisor (workers/supervisor.py): it starts `smtp.workers` SMTP worker
processes, owns the store's event writer, and runs the milter and policy service for Postfix (mta/),
POP3, the tracking center, the ingest followers, the purge and /metrics with /health (exporter.py) itself
(once, not per worker). SIGHUP reloads the workers' configuration.
"""

from __future__ import annotations

import asyncio
import gc
import logging
import signal
import ssl
import sys
from pathlib import Path

from mailwarden import mailboxes
from mailwarden.checks import build_chain
from mailwarden.checks.base import Services
from mailwarden.config import Config
from mailwarden.exporter import Exporter, Node, prepare_directory
from mailwarden.ingest.service import start_role as start_ingest
from mailwarden.ingest.service import stop_role as stop_ingest
from mailwarden.mta.milter import MilterServer
from mailwarden.mta.policy import PolicyServer
from mailwarden.pop3.server import Pop3Server
from mailwarden.refs import RefGenerator, node_id
from mailwarden.smtp.gateway import Gateway
from mailwarden.smtp.tls import ensure_self_signed, server_context
from mailwarden.store import Store, open_store
from mailwarden.store.spool import EventSpool
from mailwarden.trace.retention import purge_periodically
from mailwarden.workers.supervisor import Supervisor, WorkerFailed

log = logging.getLogger("mailwarden")


def _hosted_gateway(
    config: Config, store: Store, refs: RefGenerator, tls_context: ssl.SSLContext | None
) -> tuple[Gateway, Services]:
    """The gateway of the sessions Postfix runs (mta/): it listens on no SMTP socket and delivers nothing itself."""
    services = Services(config=config, store=store, local_domains=frozenset(config.mail.domains))
    return Gateway(config, store, build_chain(services), services, refs=refs, tls_context=tls_context), services


def _metrics_directory(config: Config) -> Path:
    """Where the processes of this run count (metrics.py), emptied at every start."""
    return config.path(config.mail.spool_dir) / "metrics"


def _exporter(config: Config, store: Store, supervisor: Supervisor) -> Exporter:
    spool = None
    if config.store.url.startswith("postgresql:"):  # the same directory the store's spool writes to
        spool = EventSpool(config.path(config.store.spool_dir), config.store.spool_max_mb * 1024 * 1024)
    node = Node(config, store, spool=spool, smtp_workers=supervisor.running if config.smtp.listen else None)
    return Exporter(node, _metrics_directory(config))


async def run(config: Config, config_path: str | None = None) -> None:
    if config.metrics.listen:  # before any process counts: the workers inherit where to
        prepare_directory(_metrics_directory(config))
    store = open_store(config)
    try:
        # Once per node, here in the supervisor (its workers share the node's name and id): refuses a clash.
        store.register_node(config.node.name, node_id(config.node.name))
        demo = mailboxes.create_demo(config, store)
        if demo is not None:
            print(f"created demo mailbox {demo[0]} with password {demo[1]} (shown once)", file=sys.stderr, flush=True)
        gaps = mailboxes.postmaster_gaps(config, store)
        if gaps:
            log.warning("%s", mailboxes.postmaster_warning(gaps))
        tls_context = None
        if config.tls.enabled:  # made here once, before the workers load it
            cert, key = config.path(config.tls.cert), config.path(config.tls.key)
            ensure_self_signed(cert, key, config.smtp.hostname)
            tls_context = server_context(cert, key)
        supervisor = Supervisor(config, config_path, store)
        # Listening before the workers start: a port in use stops the start here, and /health says
        # 503 until the workers run.
        exporter = _exporter(config, store, supervisor) if config.metrics.listen else None
        await supervisor.start()  # recovery first, then the workers (none without smtp.listen)
        roles = (
            [f"smtp {' '.join(supervisor.addresses)} ({len(supervisor.workers)} workers)"] if supervisor.workers else []
        )
        refs = RefGenerator(config.node.name, slot=0)  # the supervisor's share; the workers have theirs
        # Postfix's sessions (milter, policy service) are served here, once, by a gateway of their own:
        # its checks, refs and events are the SMTP workers', its connection counts its own.
        hosted = (
            _hosted_gateway(config, store, refs, tls_context) if config.milter.listen or config.policy.listen else None
        )
        milter = MilterServer(hosted[0], config.milter) if hosted is not None and config.milter.listen else None
        if milter is not None:
            roles.append(f"milter {' '.join(await milter.start())}")
        policy = PolicyServer(hosted[0], config.policy) if hosted is not None and config.policy.listen else None
        if policy is not None:
            roles.append(f"policy {' '.join(await policy.start())}")
        pop3 = Pop3Server(config, store, refs=refs, tls_context=tls_context) if config.pop3.listen else None
        if pop3 is not None:
            roles.append(f"pop3 {' '.join(await pop3.start())}")
            if config.delivery.mode != "maildir":
                log.warning("pop3 serves the local Maildirs, but proxy mode delivers to %s", config.delivery.downstream)
        ingest = await start_ingest(config, store)
        if ingest is not None:
            roles.append(f"ingest {' '.join(ingest[2])}")
        web = None
        if config.web.listen:  # its own connection: page views never wait behind the event writer
            from mailwarden.web.server import start_role as start_web

            web_store = open_store(config)
            web = await start_web(config, web_store)
            roles.append(f"web {web.url}")
        purging = asyncio.create_task(
            purge_periodically(store, config.store.retention_days, config.store.purge_interval), name="purge"
        )
        if exporter is not None:
            if pop3 is not None:
                exporter.node.pop3_sessions = lambda: len(pop3.sessions)
            roles.append(f"metrics http://{exporter.address}/metrics")
        gc.freeze()  # what start-up built lives as long as we do: the collector need not walk it again
        print(
            f"mailwarden ready: {', '.join(roles)}; checks: {', '.join(config.check_order)}",
            file=sys.stderr,
            flush=True,
        )
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        reloading: set[asyncio.Task[None]] = set()

        def reload() -> None:
            task = loop.create_task(supervisor.reload(), name="reload")
            reloading.add(task)
            task.add_done_callback(reloading.discard)

        loop.add_signal_handler(signal.SIGHUP, reload)
        await stop.wait()
        log.info("shutting down")
        purging.cancel()
        if exporter is not None:
            exporter.stop()
        await stop_ingest(ingest)
        if web is not None:
            await web.stop()
            web_store.close()
        if pop3 is not None:
            await pop3.stop()
        if milter is not None:
            await milter.stop()
        if policy is not None:
            await policy.stop()
        if hosted is not None:
            await hosted[0].stop()
            hosted[1].close()
        await supervisor.stop()  # the workers finish their transactions and hand over their events
    finally:
        store.close()


def serve(config: Config, config_path: str | None = None) -> int:
    try:
        import uvloop
    except ImportError:
        runner = asyncio.run
    else:
        runner = uvloop.run
    try:
        runner(run(config, config_path))
    except WorkerFailed as exc:
        print(f"mailwarden: {exc}", file=sys.stderr)
        return 1
    return 0
