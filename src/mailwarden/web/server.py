"""Serving the tracking center with uvicorn: embedded in `mailwarden serve`, or alone (`mailwarden web`).

The web server gets a store connection of its own, so page views never wait behind the
gateway's mailbox lookups. We bind the socket ourselves (a port in use is a clear error, not
uvicorn's exit) and keep SIGTERM/SIGINT to whoever runs us: uvicorn's own signal handling is
switched off, and `stop()` ends it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import socket
import sys
from collections.abc import Iterator
from typing import Final

import uvicorn

from mailwarden.config import Config, ConfigError
from mailwarden.events import now_us
from mailwarden.listening import bind_one, refused
from mailwarden.store import Store
from mailwarden.web.accounts import ensure_first_admin
from mailwarden.web.app import create_app
from mailwarden.web.auth import Sessions

PURGE_SECONDS: Final = 3600.0  # expired login sessions are removed this often


class _Embedded(uvicorn.Server):
    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield  # the process's signals belong to `mailwarden serve` / `web`, which call stop()


BACKLOG: Final = 128


def require_listen(config: Config) -> None:
    if not config.web.listen:
        raise ConfigError('web.listen is "": set it to "host:port" (e.g. "127.0.0.1:2527") to run the web server')


def url_of(config: Config, sock: socket.socket) -> str:
    """The address pages are reached at on this socket."""
    scheme = "https" if config.web.cert else "http"
    host, port = sock.getsockname()[:2]
    return f"{scheme}://{f'[{host}]' if ':' in host else host}:{port}"


class WebServer:
    def __init__(self, config: Config, store: Store, sock: socket.socket | None = None) -> None:
        """`sock`: a listening socket shared with other worker processes (web/workers.py); else bound here."""
        logging.getLogger("uvicorn.error").setLevel(logging.WARNING)  # "Started server process": our ready line says it
        self.config = config
        self.store = store
        settings = config.web
        self._socket = self._bind(settings.listen) if sock is None else sock
        self.url = url_of(config, self._socket)
        self._server = _Embedded(
            uvicorn.Config(
                create_app(config, store),
                proxy_headers=False,  # the app trusts X-Forwarded-* only from web.trusted_proxies
                server_header=False,
                access_log=False,  # who opened what is in the audit log
                log_config=None,
                lifespan="off",
                ssl_certfile=str(config.path(settings.cert)) if settings.cert else None,
                ssl_keyfile=str(config.path(settings.key)) if settings.key else None,
                timeout_graceful_shutdown=5,
            )
        )
        self._task: asyncio.Task[None] | None = None
        self._purging: asyncio.Task[None] | None = None

    @staticmethod
    def _bind(listen: str) -> socket.socket:
        try:
            return bind_one(listen, backlog=BACKLOG)
        except OSError as exc:
            raise refused("web.listen", listen, exc) from None

    async def start(self) -> str:
        """Start serving; returns the address pages are reached at."""
        self._task = asyncio.create_task(self._server.serve(sockets=[self._socket]), name="web")
        while not self._server.started:
            if self._task.done():
                self._task.result()
                raise ConfigError(f"the web server on {self.url} did not start; see the log above")
            await asyncio.sleep(0.01)
        self._purging = asyncio.create_task(self._purge_sessions(), name="web-sessions")
        return self.url

    async def _purge_sessions(self) -> None:
        sessions = Sessions(self.store, self.config.web, now_us)
        while True:
            await asyncio.to_thread(sessions.purge)
            await asyncio.sleep(PURGE_SECONDS)

    async def stop(self) -> None:
        if self._purging is not None:
            self._purging.cancel()
        self._server.should_exit = True
        if self._task is not None:
            await self._task


def announce_first_admin(created: tuple[str, str] | None) -> None:
    """The first admin's name and password, made at this start: on stderr, the only place they are shown."""
    if created is not None:
        print(
            f"created web admin account {created[0]} with password {created[1]} (shown once)",
            file=sys.stderr,
            flush=True,
        )


async def start_role(config: Config, store: Store) -> WebServer:
    """The web role: the first admin (its password printed once) and the server on `web.listen`."""
    announce_first_admin(await asyncio.to_thread(ensure_first_admin, config, store))
    server = WebServer(config, store)
    await server.start()
    return server


async def run_alone(config: Config, store: Store) -> None:
    """`mailwarden web`: the tracking center without the gateway, until SIGTERM/SIGINT."""
    require_listen(config)
    server = await start_role(config, store)
    print(f"mailwarden web ready: {server.url}", file=sys.stderr, flush=True)
    await until_signalled()
    await server.stop()


async def until_signalled() -> None:
    """Return at SIGTERM or SIGINT."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
