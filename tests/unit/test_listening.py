"""The listening sockets the SMTP workers and the tracking center's workers share a port with (listening.py)."""

from __future__ import annotations

import socket

import pytest

from mailwarden.config import parse_hostport
from mailwarden.listening import bind_one, bind_shared, join, shown
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


def test_an_ipv6_listening_address_is_shown_in_brackets_as_the_listen_settings_write_it() -> None:
    """`::1:2525` cannot be told apart from a host `::1:2525` without a port; `[::1]:2525` is how
    `[smtp] listen` takes it back."""
    with socket.socket(socket.AF_INET6) as six, socket.socket(socket.AF_INET) as four:
        try:
            six.bind(("::1", 0))
        except OSError:
            pytest.skip("no IPv6 on this machine's loopback")
        four.bind(("127.0.0.1", 0))
        assert shown(six) == f"[::1]:{six.getsockname()[1]}"
        assert shown(four) == f"127.0.0.1:{four.getsockname()[1]}"
        assert parse_hostport(shown(six)) == ("::1", six.getsockname()[1])
