"""The gateway in the test's own process, on a real socket: for what a subprocess cannot be made to do
(a store that fails on demand, a check that hangs, a clock the test moves)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

from mailwarden.checks import build_chain
from mailwarden.checks.base import Clock, Services
from mailwarden.checks.chain import CheckChain
from mailwarden.config import Config
from mailwarden.refs import RefGenerator
from mailwarden.smtp.gateway import Gateway
from mailwarden.store import Store
from tests.support.net import free_port


def config_for(tmp_path: Path, order: list[str], **sections: Any) -> Config:
    """A gateway config on a free loopback port for example.test, with this check order."""
    smtp = {"listen": [f"127.0.0.1:{free_port()}"], "hostname": "mx.example.test", **sections.pop("smtp", {})}
    return Config(
        smtp=smtp,
        mail={"domains": ["example.test"]},
        checks={"order": order},
        base_dir=tmp_path,
        **sections,
    )


@asynccontextmanager
async def gateway_in_process(
    config: Config,
    store: Store,
    *,
    chain: CheckChain | None = None,
    clock: Clock | None = None,
    node: str = "test",
) -> AsyncIterator[int]:
    """Run the gateway until the block ends; yields its SMTP port. `node` names the node its refs carry."""
    services = Services(config=config, store=store, local_domains=frozenset(config.mail.domains))
    if clock is not None:
        services.clock = clock
    gateway = Gateway(
        config,
        store,
        chain or build_chain(services),
        services,
        refs=RefGenerator(node, wait_for_fresh_second=False),
        tls_context=None,
    )
    (address,) = await gateway.start()
    try:
        yield int(address.rpartition(":")[2])
    finally:
        await gateway.stop(grace=1)


async def converse(port: int, lines: list[bytes], source: str = "127.0.0.1", host: str = "127.0.0.1") -> list[str]:
    """Send each line to `host`, collect the final line of each reply (the greeting first)."""
    reader, writer = await asyncio.open_connection(host, port, local_addr=(source, 0))

    async def reply() -> str:
        line = await reader.readline()
        while line[3:4] == b"-":
            line = await reader.readline()
        return line.decode().rstrip()

    replies = [await reply()]
    for line in lines:
        writer.write(line)
        replies.append(await reply())
    writer.close()
    return replies
