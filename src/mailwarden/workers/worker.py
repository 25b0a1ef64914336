"""One SMTP worker process: the gateway on the listening sockets the supervisor handed it.

Started by the supervisor (workers/supervisor.py) as `python -m mailwarden.workers.worker` with
its parameters in $MAILWARDEN_WORKER: its slot, its configuration (the supervisor's, so a reload
changes only what the workers may change), the descriptors of its listening sockets, of its event
link (store/remote.py), of the shared client table (smtp/clients.py) and of the pipe on which it
says it is ready. It reads the store itself, sends its events to the supervisor's
writer (and counts rate limits in the shared client table with SQLite, in the database with
PostgreSQL), and dies with the supervisor (PR_SET_PDEATHSIG): a worker never runs without the writer
of its events. SIGTERM: stop accepting, let transactions finish (or 421 them), hand over the last
events, exit.
"""

from __future__ import annotations

import asyncio
import gc
import json
import logging
import os
import signal
import socket
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

from mailwarden.checks import build_chain
from mailwarden.checks.base import Services
from mailwarden.config import Config
from mailwarden.refs import RefGenerator
from mailwarden.smtp.clients import SharedCounts
from mailwarden.smtp.gateway import Gateway
from mailwarden.smtp.tls import server_context
from mailwarden.store import open_store_url
from mailwarden.store.remote import EventClient
from mailwarden.workers.lifeline import die_with_parent

log = logging.getLogger(__name__)

ENV: Final = "MAILWARDEN_WORKER"


@dataclass(frozen=True)
class Handover:
    """What the supervisor gives a worker (as JSON in $MAILWARDEN_WORKER): descriptors and its place."""

    slot: int
    config: str  # the settings given (JSON, unset ones left out: they stay unset) and base_dir
    parent: int  # the supervisor's pid
    events: int  # the event link (a socket)
    ready: int  # a pipe: "ready" once listening
    counts: int  # the shared client table (a memfd)
    listen: list[int]  # listening sockets

    def encode(self) -> str:
        return json.dumps(self.__dict__)

    @classmethod
    def decode(cls, text: str) -> Handover:
        values: dict[str, Any] = json.loads(text)
        return cls(**values)

    @property
    def descriptors(self) -> list[int]:
        return [self.events, self.ready, self.counts, *self.listen]

    @staticmethod
    def encode_config(config: Config) -> str:
        settings = json.loads(config.model_dump_json(exclude_unset=True))
        return json.dumps({"base_dir": str(config.base_dir), "settings": settings})

    def decode_config(self) -> Config:
        """The configuration as `config.load` made it: what was set is set, relative paths from `base_dir`."""
        data: dict[str, Any] = json.loads(self.config)
        return Config(**data["settings"], base_dir=Path(data["base_dir"]))


async def run(config: Config, handover: Handover) -> None:
    client = EventClient(socket.socket(fileno=handover.events), config.store.batch_interval)
    counts = SharedCounts(handover.counts, handover.slot)
    # The supervisor's writer commits (and with PostgreSQL spools) our events; with SQLite the rate
    # limits count in the table the workers share, with PostgreSQL in the database for every node.
    store = open_store_url(
        config.store.url,
        base_dir=config.base_dir,
        batch_interval=config.store.batch_interval,
        writer=client,
        local_rates=counts,
    )
    services = Services(config=config, store=store, local_domains=frozenset(config.mail.domains), counts=counts)
    try:
        tls_context = (
            server_context(config.path(config.tls.cert), config.path(config.tls.key)) if config.tls.enabled else None
        )
        refs = RefGenerator(config.node.name, slot=handover.slot)  # waits for a second no predecessor used
        gateway = Gateway(
            config, store, build_chain(services), services, refs=refs, tls_context=tls_context, worker=handover.slot
        )
        await gateway.start([socket.socket(fileno=fd) for fd in handover.listen])
        gc.freeze()  # what start-up built lives as long as we do: the collector need not walk it again
        os.write(handover.ready, b"ready\n")
        os.close(handover.ready)
        stop = asyncio.Event()
        asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
        await stop.wait()
        await gateway.stop()
    finally:
        services.close()
        store.close()  # the last events go to the supervisor before we exit
        counts.close()


def main() -> int:
    handover = Handover.decode(os.environ.pop(ENV))
    die_with_parent(handover.parent)  # without the supervisor our events could no longer be committed
    # Ctrl-C reaches the whole process group; the supervisor stops us in order instead.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGHUP, signal.SIG_IGN)
    logging.basicConfig(
        level=logging.INFO,
        stream=sys.stderr,
        format=f"%(asctime)s %(levelname)s %(name)s[worker {handover.slot}]: %(message)s",
    )
    config = handover.decode_config()
    logging.getLogger().setLevel(config.log.level.upper())
    try:
        import uvloop
    except ImportError:
        asyncio.run(run(config, handover))
    else:
        uvloop.run(run(config, handover))
    return 0


if __name__ == "__main__":
    sys.exit(main())
