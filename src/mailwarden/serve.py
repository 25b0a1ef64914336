"""`mailwarden serve`: start every configured role and run until SIGTERM/SIGINT."""

from __future__ import annotations

import asyncio
import logging
import signal
import sys

from mailwarden import mailboxes
from mailwarden.checks import build_chain
from mailwarden.checks.base import Services
from mailwarden.config import Config
from mailwarden.ingest.service import start_role as start_ingest
from mailwarden.ingest.service import stop_role as stop_ingest
from mailwarden.pop3.server import Pop3Server
from mailwarden.smtp.gateway import Gateway
from mailwarden.smtp.refs import RefGenerator
from mailwarden.smtp.tls import ensure_self_signed, server_context
from mailwarden.store import Store, open_store
from mailwarden.trace.retention import purge_periodically

log = logging.getLogger("mailwarden")


def open_configured_store(config: Config) -> Store:
    return open_store(config.store.url, base_dir=str(config.base_dir), batch_interval=config.store.batch_interval)


async def run(config: Config) -> None:
    store = open_configured_store(config)
    try:
        demo = mailboxes.create_demo(config, store)
        if demo is not None:
            print(f"created demo mailbox {demo[0]} with password {demo[1]} (shown once)", file=sys.stderr, flush=True)
        gaps = mailboxes.postmaster_gaps(config, store)
        if gaps:
            log.warning("%s", mailboxes.postmaster_warning(gaps))
        services = Services(config=config, store=store, local_domains=frozenset(config.mail.domains))
        tls_context = None
        if config.tls.enabled:
            cert, key = config.path(config.tls.cert), config.path(config.tls.key)
            ensure_self_signed(cert, key, config.smtp.hostname)
            tls_context = server_context(cert, key)
        refs = RefGenerator(config.node.name)  # one per process: two would issue the same refs
        gateway = Gateway(
            config,
            store,
            build_chain(services),
            services,
            refs=refs,
            tls_context=tls_context,
        )
        gateway.recover()
        bound = await gateway.start()
        roles = [f"smtp {' '.join(bound)}"]
        pop3 = Pop3Server(config, store, refs=refs, tls_context=tls_context) if config.pop3.listen else None
        if pop3 is not None:
            roles.append(f"pop3 {' '.join(await pop3.start())}")
            if config.delivery.mode != "maildir":
                log.warning("pop3 serves the local Maildirs, but proxy mode delivers to %s", config.delivery.downstream)
        ingest = await start_ingest(config, store)
        if ingest is not None:
            roles.append(f"ingest {' '.join(ingest[2])}")
        web = None
        if config.web.listen:  # its own connection: page views never wait behind the gateway's lookups
            from mailwarden.web.server import start_role as start_web

            web_store = open_configured_store(config)
            web = await start_web(config, web_store)
            roles.append(f"web {web.url}")
        purging = asyncio.create_task(
            purge_periodically(store, config.store.retention_days, config.store.purge_interval), name="purge"
        )
        print(
            f"mailwarden ready: {', '.join(roles)}; checks: {', '.join(config.check_order)}",
            file=sys.stderr,
            flush=True,
        )
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        await stop.wait()
        log.info("shutting down")
        purging.cancel()
        await stop_ingest(ingest)
        if web is not None:
            await web.stop()
            web_store.close()
        if pop3 is not None:
            await pop3.stop()
        await gateway.stop()
        services.close()
    finally:
        store.close()


def serve(config: Config) -> int:
    try:
        import uvloop
    except ImportError:
        asyncio.run(run(config))
    else:
        uvloop.run(run(config))
    return 0
