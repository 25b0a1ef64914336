"""Listening for Postfix: TCP ("host:port") or a unix socket ("unix:PATH"), as Postfix names its milters."""

from __future__ import annotations

import asyncio
import contextlib
import stat
from collections.abc import Awaitable, Callable
from pathlib import Path

from mailwarden.config import Config, ConfigError, parse_hostport
from mailwarden.listening import shown

Handler = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]


async def listen(
    config: Config, addresses: list[str], socket_mode: str, handler: Handler, *, role: str, limit: int = 65536
) -> tuple[list[asyncio.AbstractServer], list[str]]:
    """Start a server per address; returns them and what was bound (a port in use is a configuration error).

    `limit`: what a stream reader buffers at most (the longest line or request `readuntil` finds).
    """
    servers: list[asyncio.AbstractServer] = []
    bound: list[str] = []
    try:
        for address in addresses:
            if address.startswith("unix:"):
                path = config.path(address.removeprefix("unix:"))
                _remove_stale(path, role)
                path.parent.mkdir(parents=True, exist_ok=True)
                server: asyncio.AbstractServer = await asyncio.start_unix_server(handler, path=str(path), limit=limit)
                path.chmod(int(socket_mode, 8))
                bound.append(f"unix:{path}")
            else:
                host, port = parse_hostport(address)
                server = await asyncio.start_server(handler, host, port, reuse_address=True, backlog=1024, limit=limit)
                bound.extend(shown(s) for s in server.sockets)
            servers.append(server)
    except OSError as exc:
        for server in servers:
            server.close()
        raise ConfigError(
            f"key `{role}.listen`: cannot listen on {address}: {exc.strerror}. Fix: free it or choose another"
        ) from None
    return servers, bound


def _remove_stale(path: Path, role: str) -> None:
    """A socket file left by an earlier run is removed; anything else at that path is the operator's."""
    with contextlib.suppress(FileNotFoundError):
        if not stat.S_ISSOCK(path.lstat().st_mode):
            raise ConfigError(f"key `{role}.listen`: {path} exists and is not a socket. Fix: choose another path")
        path.unlink()
