"""`[metrics] listen` is bound where its host name resolves, as every other listener does (exporter.py)."""

from __future__ import annotations

import socket
import urllib.request
from pathlib import Path
from typing import Any

import pytest

from mailwarden.config import Config, MetricsConfig, parse_hostport
from mailwarden.exporter import Exporter, Node
from mailwarden.store.sqlite import SqliteStore
from tests.support.net import free_port


def test_a_metrics_host_name_with_only_ipv6_addresses_is_listened_on_over_ipv6(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The family came from a guess ("::" in the setting means IPv6): a name with only an AAAA
    record was bound as IPv4 and refused."""
    with socket.socket(socket.AF_INET6) as probe:
        try:
            probe.bind(("::1", 0))
        except OSError:
            pytest.skip("no IPv6 on this machine's loopback")
    real = socket.getaddrinfo

    def only_ipv6(host: str, port: int, *args: Any, **kwargs: Any) -> Any:
        if host == "metrics.example.test":
            return [(socket.AF_INET6, socket.SOCK_STREAM, 6, "", ("::1", port, 0, 0))]
        return real(host, port, *args, **kwargs)

    monkeypatch.setattr(socket, "getaddrinfo", only_ipv6)
    store = SqliteStore(tmp_path / "events.db")
    port = free_port()
    config = Config(base_dir=tmp_path, metrics=MetricsConfig(listen=f"metrics.example.test:{port}"))
    exporter = Exporter(Node(config, store), tmp_path)
    try:
        assert parse_hostport(exporter.address) == ("::1", port)
        with urllib.request.urlopen(f"http://[::1]:{port}/health", timeout=5) as answer:
            assert answer.status == 200
            assert answer.read() == b"ok\n"
    finally:
        exporter.stop()
        store.close()
