"""The listening sockets the SMTP workers and the tracking center's workers share a port with (listening.py)."""

from __future__ import annotations

import socket

import pytest

from mailwarden.listening import bind_one, bind_shared, join
from tests.support.net import free_port


def test_the_workers_sockets_listen_on_one_port_and_one_more_joins_it() -> None:
    sockets = bind_shared(f"127.0.0.1:{free_port()}", 3, backlog=8)
    sockets.append(join(sockets[0], backlog=8))
    try:
        assert len({sock.getsockname() for sock in sockets}) == 1
        assert all(sock.getsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT) for sock in sockets)
    finally:
        for sock in sockets:
            sock.close()


def test_a_second_instance_is_refused_a_port_the_first_shares_by_so_reuseport() -> None:
    """SO_REUSEPORT lets sockets of the same user share a port: without binding the address alone
    first, a second instance would join the first's port silently and take part of its connections."""
    listen = f"127.0.0.1:{free_port()}"
    first = bind_shared(listen, 2, backlog=8)
    try:
        with pytest.raises(OSError, match="Address already in use"):
            bind_shared(listen, 2, backlog=8)
    finally:
        for sock in first:
            sock.close()


def test_the_only_socket_on_a_port_in_use_is_refused_with_the_reason() -> None:
    listen = f"127.0.0.1:{free_port()}"
    with bind_one(listen, backlog=8), pytest.raises(OSError, match="Address already in use"):
        bind_one(listen, backlog=8)
