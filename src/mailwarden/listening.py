"""Listening sockets for processes that serve one port together (the SMTP workers, `mailwarden web`'s workers).

Each worker gets a socket of its own on the port (SO_REUSEPORT): the kernel gives each new connection
to one of them by a hash of the client's address and port, so the workers share the connections
evenly, and a worker's socket outlives the worker while it restarts. SO_REUSEPORT would also let a
second instance of ours, run by the same user, join the port silently and take part of the
connections; so the address is bound alone first, and a port in use is refused with the reason.
"""

from __future__ import annotations

import socket
from typing import cast

from mailwarden.config import ConfigError, parse_hostport


def shown(sock: socket.socket) -> str:
    """Where `sock` listens, written as the `listen` settings are: "host:port", an IPv6 host in brackets."""
    host, port = sock.getsockname()[:2]
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def bind_one(listen: str, *, backlog: int) -> socket.socket:
    """The only listening socket on `listen` ("host:port"); OSError says why it cannot be."""
    family, address = resolve(listen)
    return _listening(_bound(family, address, shared=False), backlog)


def bind_shared(listen: str, count: int, *, backlog: int) -> list[socket.socket]:
    """`count` listening sockets on the one port of `listen`, each with SO_REUSEPORT, for a worker each.

    OSError says why not (a port in use: also one that another instance shares by SO_REUSEPORT)."""
    family, address = resolve(listen)
    _bound(family, address, shared=False).close()  # not listening: no connection waits in it meanwhile
    sockets = [_listening(_bound(family, address, shared=True), backlog)]
    try:
        # The port the first got: the same one also when `listen` let the kernel choose.
        sockets.extend(join(sockets[0], backlog=backlog) for _ in range(count - 1))
    except OSError:
        for sock in sockets:
            sock.close()
        raise
    return sockets


def join(sock: socket.socket, *, backlog: int) -> socket.socket:
    """One more listening socket on the port `sock` (from `bind_shared`) listens on, for one more worker."""
    return _listening(_bound(sock.family, sock.getsockname(), shared=True), backlog)


def refused(setting: str, listen: str, exc: OSError) -> ConfigError:
    """What the operator is told when the optional listener `setting` (web, metrics) cannot bind `listen`."""
    return ConfigError(
        f'{setting} {listen!r}: cannot listen there ({exc.strerror or exc}); choose a free port or set it to ""'
    )


Address = tuple[str, int] | tuple[str, int, int, int]
"""An IPv4 or IPv6 socket address, as `getaddrinfo` gives it."""


def resolve(listen: str) -> tuple[socket.AddressFamily, Address]:
    """The address family and socket address `listen` ("host:port") names: a host name's first
    address decides the family (a name may have only IPv6 addresses); OSError if it has none."""
    host, port = parse_hostport(listen)
    family, _, _, _, address = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)[0]
    return family, cast(Address, address)  # not AF_UNIX's nor another family's: a host and a port


def _bound(family: socket.AddressFamily, address: tuple[object, ...], *, shared: bool) -> socket.socket:
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if shared:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        sock.bind(address)
    except OSError:
        sock.close()
        raise
    return sock


def _listening(sock: socket.socket, backlog: int) -> socket.socket:
    sock.listen(backlog)
    sock.setblocking(False)
    return sock
