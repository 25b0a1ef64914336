"""Shared fixtures. Integration tests run real servers on loopback; see tests/support/."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from mailwarden.store.parts import Store
from tests.support.dns import DnsServers, running_dns
from tests.support.dovecot import Dovecot, running_dovecot
from tests.support.mailwarden import Mailwarden, running
from tests.support.postgres import Postgres, running_postgres
from tests.support.postgres import available as postgres_available
from tests.support.stores import BACKENDS, Handles, Opener


@pytest.fixture
def gateway(tmp_path: Path) -> Iterator[Mailwarden]:
    """A running mailwarden with the local domain example.test and the mailbox bob@example.test."""
    with running(tmp_path / "mw") as instance:
        yield instance


@pytest.fixture
def dovecot(tmp_path: Path) -> Iterator[Dovecot]:
    """A private Dovecot (POP3, IMAP, LMTP) with bob@example.test / secret; its log is kept in tmp_path."""
    with running_dovecot({"bob@example.test": "secret"}, keep_log_in=tmp_path) as instance:
        yield instance


@pytest.fixture
def dns_servers(tmp_path: Path) -> Iterator[DnsServers]:
    """NSD and rbldnsd on loopback with the test zones of tests/support/dns.py."""
    with running_dns(tmp_path / "dns") as servers:
        yield servers


@pytest.fixture(scope="session")
def postgres(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Postgres]:
    """A private PostgreSQL 15 for the whole run (each test takes a database of its own: `new_database`)."""
    if not postgres_available():
        pytest.skip("PostgreSQL 15 is not installed: `make system-packages` installs it")
    with running_postgres(keep_log_in=tmp_path_factory.mktemp("postgres")) as server:
        yield server


@pytest.fixture(params=BACKENDS)
def store_handles(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Handles]:
    """An empty store, once on SQLite and once on PostgreSQL (tests/support/stores.py): a test that
    takes it, `store_url`, `open_node` or `store` runs on both, the backend in its id."""
    handles = Handles(request.param, tmp_path, lambda: request.getfixturevalue("postgres"))
    yield handles
    handles.close()


@pytest.fixture
def store_url(store_handles: Handles) -> str:
    """The URL of the test's store (for a configuration or a command line)."""
    return store_handles.url


@pytest.fixture
def open_node(store_handles: Handles) -> Opener:
    """Opens the test's store again on every call (another node's or process's handle); all are
    closed at the end of the test."""
    return store_handles.open


@pytest.fixture
def store(open_node: Opener) -> Store:
    """The test's store on each backend, writing its batches at once (batch_interval 1 ms)."""
    return open_node(batch_interval=0.001)
