"""The store's parts on both backends: what SQLite does, PostgreSQL does alike, and across nodes.

Each test opens the store twice, as two nodes (or a node and the command line) would: with SQLite
two connections to one file, with PostgreSQL two connection pools to one database of the private
server (tests/support/postgres.py).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from mailwarden.checks.base import Action, CheckContext, Recipient, Services, SessionInfo, Transaction
from mailwarden.checks.greylist import GreylistCheck
from mailwarden.checks.ratelimit import RateLimitCheck
from mailwarden.config import Config, GreylistConfig, RateLimitConfig
from mailwarden.smtp.refs import node_id
from mailwarden.store import StoreError, open_store_url
from mailwarden.store.postgres import MIGRATIONS, PostgresStore
from mailwarden.store.sqlite import SqliteStore
from tests.support.clock import FakeClock
from tests.support.postgres import Postgres

Opener = Callable[[], Any]  # a SqliteStore or a PostgresStore: the parts both implement


@pytest.fixture(params=["sqlite", "postgres"])
def open_node(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Opener]:
    """Opens the same store again on every call (another node's handle); all are closed at the end."""
    opened: list[Any] = []
    if request.param == "sqlite":
        path = tmp_path / "store.db"

        def opener() -> Any:
            opened.append(SqliteStore(path))
            return opened[-1]
    else:
        postgres: Postgres = request.getfixturevalue("postgres")
        url = postgres.new_database()

        def opener() -> Any:
            opened.append(PostgresStore(url))
            return opened[-1]

    yield opener
    for store in opened:
        store.close()


def colliding_names() -> tuple[str, str]:
    """Two node names whose ref ids are the same (two of 40 nodes collide with even odds)."""
    seen: dict[int, str] = {}
    for number in range(5000):
        name = f"mx{number}.example.test"
        other = seen.setdefault(node_id(name), name)
        if other != name:
            return other, name
    raise AssertionError("no collision among 5000 names")


def test_a_node_whose_ref_id_another_node_holds_is_refused_until_that_node_is_forgotten(open_node: Opener) -> None:
    first, second = colliding_names()
    node_a, node_b = open_node(), open_node()
    node_a.register_node(first, node_id(first))
    node_a.register_node(first, node_id(first))  # a restart of the same node
    with pytest.raises(StoreError, match=f"node '{second}' hashes to node id {node_id(second)}.*'{first}'"):
        node_b.register_node(second, node_id(second))
    assert node_b.forget_node(first) and not node_b.forget_node(first)
    node_b.register_node(second, node_id(second))
    with pytest.raises(StoreError, match=f"'{second}' already uses"):
        node_a.register_node(first, node_id(first))


def rcpt_context(client_ip: str) -> CheckContext:
    services = Services(config=Config(), store=None, local_domains=frozenset())  # type: ignore[arg-type]
    session = SessionInfo("s1", "test", client_ip, 25)
    return CheckContext(
        services,
        session,
        Transaction("r1", sender="ann@example.org"),
        Recipient("bob@example.test", "bob@example.test"),
    )


def test_a_triplet_greylisted_on_one_node_passes_on_another_after_the_delay(open_node: Opener) -> None:
    clock = FakeClock()
    config = GreylistConfig(delay=300)
    node_a = GreylistCheck(config, open_node(), "mx1.example.test", clock)
    node_b = GreylistCheck(config, open_node(), "mx2.example.test", clock)
    first = asyncio.run(node_a.rcpt(rcpt_context("192.0.2.10"), "bob@example.test"))
    assert first is not None and first.action is Action.TEMPFAIL and first.reason == "greylisted"
    clock.advance(100)
    early = asyncio.run(node_b.rcpt(rcpt_context("192.0.2.11"), "bob@example.test"))  # same /24, other node
    assert early is not None and early.action is Action.TEMPFAIL and early.detail["attempts"] == 2
    clock.advance(201)
    passed = asyncio.run(node_b.rcpt(rcpt_context("192.0.2.12"), "bob@example.test"))
    assert passed is not None and passed.action is Action.TAG and passed.detail["delayed_seconds"] == 301


def test_a_rate_limit_is_counted_across_two_nodes_on_postgresql(postgres: Postgres) -> None:
    url = postgres.new_database()
    clock = FakeClock()
    config = RateLimitConfig(messages_per_minute=3)
    stores = [PostgresStore(url), PostgresStore(url)]
    try:
        node_a, node_b = (RateLimitCheck(config, store, clock) for store in stores)
        ctx = rcpt_context("192.0.2.20")
        verdicts = [asyncio.run(node.mail(ctx)) for node in (node_a, node_b, node_a)]
        assert verdicts == [None, None, None]
        refused = asyncio.run(node_b.mail(ctx))  # the fourth in the minute, the second on this node
        assert refused is not None and refused.reason == "rate_limited" and refused.values["count"] == 4
        clock.advance(120)
        assert asyncio.run(node_a.mail(ctx)) is None  # a quiet minute later: admitted again
    finally:
        for store in stores:
            store.close()


def test_a_pregreet_pass_is_seen_by_every_node(open_node: Opener) -> None:
    node_a, node_b = open_node(), open_node()
    node_a.pregreet_pass("192.0.2.30", 2_000, forget_before_us=1_000)
    assert node_b.pregreet_passed("192.0.2.30") == 2_000
    node_b.pregreet_pass("192.0.2.31", 9_000, forget_before_us=5_000)  # forgets the older pass
    assert node_a.pregreet_passed("192.0.2.30") is None and node_a.pregreet_passed("192.0.2.31") == 9_000


def test_mailboxes_added_on_one_node_are_found_removed_and_refused_twice_alike(open_node: Opener) -> None:
    node_a, node_b = open_node(), open_node()
    node_a.add_mailbox("bob@example.test", "hash-1")
    with pytest.raises(StoreError, match="already exists"):
        node_b.add_mailbox("bob@example.test", "hash-2")
    found = asyncio.run(node_b.find_mailbox("bob@example.test"))
    assert found is not None and found.password_hash == "hash-1"
    assert node_b.set_password("bob@example.test", "hash-3")
    assert node_b.update_mailbox_settings("bob@example.test", {"spam_folder": "Junk"})
    stored = node_a.get_mailbox("bob@example.test")
    assert stored is not None and (stored.password_hash, stored.settings) == ("hash-3", {"spam_folder": "Junk"})
    assert [m.address for m in node_a.list_mailboxes()] == ["bob@example.test"]
    assert node_a.remove_mailbox("bob@example.test") and not node_b.remove_mailbox("bob@example.test")
    assert not node_b.set_password("bob@example.test", "x")


def test_postgresql_migrations_run_once_and_a_newer_schema_is_refused(postgres: Postgres) -> None:
    url = postgres.new_database()
    PostgresStore(url).close()
    PostgresStore(url).close()
    database = url.rpartition("/")[2]
    applied = postgres.psql("SELECT name FROM migrations ORDER BY name", database).split()
    assert applied == sorted(name for name, _ in MIGRATIONS)
    postgres.psql("INSERT INTO migrations VALUES ('9999_from_the_future', 0)", database)
    with pytest.raises(StoreError, match=r"migrated by a newer mailwarden.*9999_from_the_future"):
        PostgresStore(url)


def test_an_unreachable_postgresql_is_a_clear_error_without_the_password() -> None:
    with pytest.raises(
        StoreError, match=r"cannot open the PostgreSQL store postgresql://mw:\*\*\*@127.0.0.1:9/"
    ) as err:
        PostgresStore("postgresql://mw:secret@127.0.0.1:9/mail?connect_timeout=2")
    assert "secret" not in str(err.value) and "check that PostgreSQL runs" in str(err.value)


def test_a_postgresql_url_is_refused_until_every_part_is_there() -> None:
    with pytest.raises(StoreError, match="PostgreSQL store is not complete yet"):
        open_store_url("postgresql://mw@127.0.0.1/mail")
