"""The store's parts on both backends: what SQLite does, PostgreSQL does alike, and across nodes.

Each test opens the store twice, as two nodes (or a node and the command line) would: with SQLite
two connections to one file, with PostgreSQL two connection pools to one database of the private
server (tests/support/postgres.py); `open_node` is the shared fixture of tests/conftest.py.
"""

from __future__ import annotations

import asyncio
import copy
import threading
from pathlib import Path
from typing import Any

import pytest

from mailwarden.checks.base import Action, CheckContext, Recipient, Services, SessionInfo, Transaction
from mailwarden.checks.greylist import GreylistCheck
from mailwarden.checks.ratelimit import RateLimitCheck
from mailwarden.cli import main
from mailwarden.config import Config, GreylistConfig, RateLimitConfig
from mailwarden.events import Event
from mailwarden.ingest import parse_lines
from mailwarden.refs import node_id
from mailwarden.store import EventQuery, Position, StoreError, commands, open_store
from mailwarden.store.accounts import AuditEntry, WebAccount, WebSession
from mailwarden.store.base import IndexQuery
from mailwarden.store.postgres import MIGRATIONS, PostgresStore
from mailwarden.store.spool import EventSpool
from mailwarden.store.sqlite import SqliteStore
from tests.support.clock import FakeClock
from tests.support.corpora import all_lines
from tests.support.postgres import Postgres
from tests.support.stores import Opener, index_rows
from tests.unit.test_message_index import generated_log, linked


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


def test_postgresql_migrations_run_once(postgres: Postgres) -> None:
    """A newer schema is refused on both stores: tests/unit/test_store.py."""
    url = postgres.new_database()
    PostgresStore(url).close()
    PostgresStore(url).close()
    applied = postgres.psql("SELECT name FROM migrations ORDER BY name", url.rpartition("/")[2]).split()
    assert applied == sorted(name for name, _ in MIGRATIONS)


def test_an_unreachable_postgresql_is_a_clear_error_without_the_password() -> None:
    with pytest.raises(
        StoreError, match=r"cannot open the PostgreSQL store postgresql://mw:\*\*\*@127.0.0.1:9/"
    ) as err:
        PostgresStore("postgresql://mw:secret@127.0.0.1:9/mail?connect_timeout=2")
    assert "secret" not in str(err.value) and "check that PostgreSQL runs" in str(err.value)


def test_a_postgresql_url_opens_the_postgresql_store(postgres: Postgres, tmp_path: Path) -> None:
    config = Config(store={"url": postgres.new_database()}, base_dir=tmp_path)  # type: ignore[arg-type]
    store = open_store(config)
    try:
        assert isinstance(store, PostgresStore)
    finally:
        store.close()


def test_web_accounts_sessions_and_the_audit_log_alike(open_node: Opener) -> None:
    node_a, node_b = open_node(), open_node()
    node_a.add_account(WebAccount("ann", "customer", "hash", 1, ("example.test",)))
    with pytest.raises(StoreError, match="exists already"):
        node_b.add_account(WebAccount("ann", "admin", "other", 2))
    assert node_b.get_account("ann") == WebAccount("ann", "customer", "hash", 1, ("example.test",))
    node_b.add_web_session(WebSession("t1", "ann", "c1", 10, 10))
    node_a.touch_web_session("t1", 20)
    assert node_b.get_web_session("t1") == WebSession("t1", "ann", "c1", 10, 20)
    assert node_a.set_account_password("ann", "new") and node_b.get_web_session("t1") is None  # sessions end
    node_b.add_web_session(WebSession("t2", "ann", "c2", 30, 30))
    assert node_a.purge_web_sessions(seen_before_us=31, created_before_us=0) == 1
    for number in range(3):
        node_a.add_audit(AuditEntry(100 + number, "ann", "search", f"q{number}", "192.0.2.1", {"n": number}))
    newest = node_b.list_audit(limit=2)
    assert [(e.target, e.detail) for e in newest] == [("q2", {"n": 2}), ("q1", {"n": 1})]
    assert [e.target for e in node_b.list_audit(limit=5, before_id=newest[-1].id, account="ann")] == ["q0"]
    assert node_b.list_audit(limit=5, account="bob") == []
    assert node_b.remove_account("ann") and node_a.list_accounts() == []


# ---------------------------------------------------------------------------- events and the message index
T0 = 1_764_979_200_000_000  # 2025-12-06 00:00:00 UTC


def gateway_event(kind: str, at_us: int, ref: str, **fields: Any) -> Event:
    return Event(kind, "gateway", "mx1", at_us, ref=ref, message_key=ref, session=ref, **fields)


def test_events_written_on_one_node_are_read_on_another_in_order_with_their_ids(open_node: Opener) -> None:
    writer, reader = open_node(), open_node()
    events = [
        gateway_event("rcpt", T0 + 1, "1AAAAAAAAAW0", recipient="Bob@Example.test", client_ip="192.0.2.7"),
        gateway_event("accept", T0 + 2, "1AAAAAAAAAW0", recipient="bob@example.test", client_ip="192.0.2.7"),
        gateway_event("reject", T0 + 3, "1AAAAAAAAAW1", recipient="eve@other.test", client_ip="198.51.100.9"),
    ]
    asyncio.run(writer.durable(events))
    assert all(event.id is not None for event in events)
    found = reader.query_events(EventQuery(recipient="BOB@example.test"))
    assert [(e.kind, e.id) for e in found] == [("rcpt", events[0].id), ("accept", events[1].id)]
    assert [e.kind for e in reader.query_events(EventQuery(recipient_domain="other.test"))] == ["reject"]
    assert [e.kind for e in reader.query_events(EventQuery(client_network="192.0.2.0/24"))] == ["rcpt", "accept"]
    assert [e.kind for e in reader.query_events(EventQuery(newest_first=True, limit=1, offset=1))] == ["accept"]
    assert [e.kind for e in reader.query_events(EventQuery(recipient_contains="OB@EX"))] == ["rcpt", "accept"]


def open_at_once(url: str, nodes: int) -> list[Exception]:
    """`nodes` stores opened on `url` at the same moment; what failed."""
    start = threading.Barrier(nodes)
    opened: list[PostgresStore] = []
    failed: list[Exception] = []

    def start_node() -> None:
        start.wait()
        try:
            opened.append(PostgresStore(url))
        except Exception as exc:
            failed.append(exc)

    threads = [threading.Thread(target=start_node) for _ in range(nodes)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    for store in opened:
        store.close()
    return failed


def test_nodes_starting_at_once_on_an_empty_postgresql_database_all_start(postgres: Postgres) -> None:
    for _ in range(3):  # the clash needs two CREATEs at the same moment: a few tries
        assert open_at_once(postgres.new_database(), 4) == []


def test_the_message_index_is_searched_by_client_network_on_both_stores(open_node: Opener) -> None:
    writer, reader = open_node(), open_node()
    asyncio.run(
        writer.durable(
            [
                gateway_event("reject", T0 + 1, "1AAAAAAAAAW0", recipient="bob@example.test", client_ip="192.0.2.7"),
                gateway_event("reject", T0 + 2, "1AAAAAAAAAW1", recipient="eve@other.test", client_ip="198.51.100.9"),
            ]
        )
    )
    page = reader.index_page(IndexQuery(client_network="192.0.2.0/24"), limit=10)
    assert [row.message_key for row in page.rows] == ["1AAAAAAAAAW0"]


def test_a_position_is_committed_with_the_events_queued_before_it(open_node: Opener) -> None:
    writer, reader = open_node(), open_node()
    writer.append(gateway_event("rcpt", T0, "1AAAAAAAAAW0", recipient="bob@example.test"))
    writer.save_position(Position("mail.log", "4711"))
    writer.flush()
    assert reader.load_position("mail.log") == "4711" and len(reader.query_events(EventQuery())) == 1


def test_purging_drops_whole_days_and_trims_the_day_the_limit_falls_in(open_node: Opener) -> None:
    store = open_node()
    day = 86_400_000_000
    refs = ["1AAAAAAAAAW0", "1AAAAAAAAAW1", "1AAAAAAAAAW2", "1AAAAAAAAAW3"]
    times = [T0, T0 + day, T0 + 2 * day + 10, T0 + 2 * day + 30]
    store.append_many(
        gateway_event("reject", at, ref, recipient="bob@example.test", reason="rcpt.unknown_user")
        for at, ref in zip(times, refs, strict=True)
    )
    store.flush()
    assert store.purge_events(T0 + 2 * day + 20) == 3
    assert [e.ref for e in store.query_events(EventQuery())] == [refs[3]]
    assert [row.message_key for row in store.index_page(IndexQuery(), limit=10).rows] == [refs[3]]
    assert store.oldest_event_us() == times[3]


def test_postgresql_plans_every_read_for_its_own_values_never_a_generic_plan(postgres: Postgres) -> None:
    """A prepared statement's generic plan read a big customer's whole month for one page's rows
    (400 ms at 70 M events, bench/postgres_trace.py): reads are not prepared."""
    store = PostgresStore(postgres.new_database())
    try:
        asyncio.run(store.durable([gateway_event("reject", T0, "1AAAAAAAAAW0", recipient="bob@example.test")]))
        for _ in range(10):  # psycopg would prepare after 5
            store.index_page(IndexQuery(recipient_domain="example.test"), limit=10)
        with store._conn() as conn:
            assert conn.execute("SELECT count(*) FROM pg_prepared_statements").fetchone() == (0,)
    finally:
        store.close()


INDEX_SOURCES = ["generated", "linked", "fail2ban"]  # exim-testsuite agrees too, in 45 s: left out


@pytest.mark.parametrize("source", INDEX_SOURCES)
def test_postgresql_keeps_the_message_index_sqlite_keeps_for_the_same_events(
    postgres: Postgres, tmp_path: Path, source: str
) -> None:
    if source == "generated":
        events = parse_lines(generated_log(), node="mx", reference_us=T0)
    elif source == "linked":
        events = linked()
    else:
        events = parse_lines([line for _, line in all_lines(source)], node="corpus")
    lite = SqliteStore(tmp_path / "store.db", batch_interval=0.001)
    pg = PostgresStore(postgres.new_database(), batch_interval=0.001)
    try:
        for store in (lite, pg):
            for start in range(0, len(events), 500):
                store.append_many(copy.deepcopy(events[start : start + 500]))
                store.flush()
        assert index_rows(pg) == index_rows(lite)
        everything = IndexQuery()
        assert pg.index_counts(everything) == lite.index_counts(everything)
        first = pg.index_page(everything, limit=20)
        assert first == lite.index_page(everything, limit=20)
        if first.after is not None:
            assert pg.index_page(everything, limit=20, after=first.after) == lite.index_page(
                everything, limit=20, after=first.after
            )
        pg.reindex()
        assert index_rows(pg) == index_rows(lite)
    finally:
        lite.close()
        pg.close()


# ---------------------------------------------------------------------------- the database away
def spooling_store(postgres: Postgres, tmp_path: Path, max_bytes: int = 1 << 20) -> tuple[PostgresStore, EventSpool]:
    spool = EventSpool(tmp_path / "spool", max_bytes)
    return PostgresStore(postgres.new_database(), batch_interval=0.001, spool=spool), spool


def refusal(at_us: int, ref: str) -> Event:
    return gateway_event("reject", at_us, ref, recipient="bob@example.test", reason="rcpt.unknown_user")


def refs_stored(store: PostgresStore) -> list[str | None]:
    return [event.ref for event in store.query_events(EventQuery())]


def test_events_written_while_postgresql_is_down_are_spooled_and_replayed_once_in_order(
    postgres: Postgres, tmp_path: Path
) -> None:
    store, spool = spooling_store(postgres, tmp_path)
    refs = [f"1AAAAAAAAAW{n}" for n in range(5)]
    try:
        asyncio.run(store.durable([refusal(T0, refs[0])]))
        postgres.stop()
        try:
            asyncio.run(store.durable([refusal(T0 + 1, refs[1])]))  # committed: to the spool
            store.append(refusal(T0 + 2, refs[2]))
            store.save_position(Position("mail.log", "77"))
            store.flush()
            assert spool.depth() == 2
        finally:
            postgres.start()
        asyncio.run(store.durable([refusal(T0 + 3, refs[3])]))
        assert spool.depth() == 0
        assert refs_stored(store) == refs[:4]
        assert store.load_position("mail.log") == "77"
        assert [row.message_key for row in store.index_page(IndexQuery(), limit=10).rows] == refs[3::-1]
    finally:
        store.close()


def test_a_spooled_batch_replayed_again_is_not_written_twice(postgres: Postgres, tmp_path: Path) -> None:
    """The commit of a replay went through but the node died before removing the file."""
    store, spool = spooling_store(postgres, tmp_path)
    try:
        postgres.stop()
        try:
            store.append(gateway_event("accept", T0, "1AAAAAAAAAW0"))
            store.flush()
        finally:
            postgres.start()
        (spooled,) = spool.directory.iterdir()
        kept = spooled.read_bytes()
        store.append(gateway_event("accept", T0 + 1, "1AAAAAAAAAW1"))
        store.flush()
        spooled.write_bytes(kept)  # as if its removal had not happened
        store.append(gateway_event("accept", T0 + 2, "1AAAAAAAAAW2"))
        store.flush()
        assert refs_stored(store) == ["1AAAAAAAAAW0", "1AAAAAAAAAW1", "1AAAAAAAAAW2"]
        assert spool.depth() == 0
    finally:
        store.close()


def test_a_spooled_event_postgresql_refuses_as_written_is_replayed_changed_instead_of_holding_back_the_spool(
    postgres: Postgres, tmp_path: Path
) -> None:
    """Spooled while the database was away, an event with a NUL its text cannot hold failed the
    replay again at every batch: nothing after it reached the database."""
    store, spool = spooling_store(postgres, tmp_path)
    try:
        postgres.stop()
        try:
            store.append(gateway_event("helo", T0, "1AAAAAAAAAW0", helo="mx\x00.sender.test"))
            store.flush()
            assert spool.depth() == 1
        finally:
            postgres.start()
        store.append(gateway_event("accept", T0 + 1, "1AAAAAAAAAW1"))
        store.flush()
        assert spool.depth() == 0
        helo, accept = store.query_events(EventQuery())
        assert (helo.ref, helo.helo, helo.detail) == (
            "1AAAAAAAAAW0",
            "mx\ufffd.sender.test",
            {"changed_to_be_stored": ["helo"]},
        )
        assert accept.ref == "1AAAAAAAAAW1"
    finally:
        store.close()


def test_a_full_spool_refuses_the_commit_instead_of_accepting_without_evidence(
    postgres: Postgres, tmp_path: Path
) -> None:
    store, _ = spooling_store(postgres, tmp_path, max_bytes=600)
    try:
        postgres.stop()
        try:
            asyncio.run(store.durable([gateway_event("accept", T0, "1AAAAAAAAAW0")]))
            with pytest.raises(StoreError, match=r"event spool .* is full .* raise \[store\] spool_max_mb"):
                asyncio.run(store.durable([gateway_event("accept", T0 + 1, "1AAAAAAAAAW1", detail={"x": "y" * 600})]))
        finally:
            postgres.start()
        store.flush()
        assert refs_stored(store) == ["1AAAAAAAAAW0"]
    finally:
        store.close()


# ---------------------------------------------------------------------------- store migrate
class Interrupted(Exception):
    pass


def test_store_migrate_moves_a_sqlite_history_to_postgresql_and_an_interrupted_run_resumes(
    postgres: Postgres, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    source_url = f"sqlite:///{tmp_path}/node.db"
    lite = SqliteStore(tmp_path / "node.db", batch_interval=0.001)
    lite.append_bulk(parse_lines(generated_log(), node="mx", reference_us=T0))
    lite.add_mailbox("bob@example.test", "hash")
    lite.update_mailbox_settings("bob@example.test", {"spam_folder": "Junk"})
    lite.add_account(WebAccount("ann", "customer", "hash", 1, ("example.test",)))
    lite.flush()
    expected = sorted((e.ts, e.node, e.kind, e.ref, e.recipient) for e in lite.query_events(EventQuery()))
    target_url = postgres.new_database()

    def interrupt_after_two_batches(copied: int) -> None:
        if copied >= 2 * 500:
            raise Interrupted

    target = PostgresStore(target_url)
    try:
        with pytest.raises(Interrupted):
            commands.copy_history(lite, target, f"store-migrate:{source_url}", 500, interrupt_after_two_batches)
    finally:
        target.close()  # what was queued is committed with its position, the rest was never read
    config = tmp_path / "config.toml"
    config.write_text('[node]\nname = "t"\n')
    assert main(["-c", str(config), "store", "migrate", source_url, target_url, "--progress"]) == 0
    shown = capsys.readouterr()
    left = len(expected) - 2 * 500
    assert f"migrated {left:,} events" in shown.out
    assert shown.err.rsplit("\r", 1)[-1].startswith(f"{left:,} of {left:,} events (100%)")  # what was left, all of it
    migrated = PostgresStore(target_url)
    try:
        got = sorted((e.ts, e.node, e.kind, e.ref, e.recipient) for e in migrated.query_events(EventQuery()))
        assert got == expected  # every event, once
        assert index_rows(migrated) == index_rows(lite)
        mailbox = migrated.get_mailbox("bob@example.test")
        assert mailbox is not None and mailbox.settings == {"spam_folder": "Junk"}
        assert [a.name for a in migrated.list_accounts()] == ["ann"]
    finally:
        migrated.close()
        lite.close()


def test_store_migrate_from_a_source_that_is_not_there_says_so_and_makes_nothing(
    postgres: Postgres, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A mistyped source path must not become a new, empty store that "migrates 0 events"."""
    config = tmp_path / "config.toml"
    config.write_text('[node]\nname = "t"\n')
    missing = tmp_path / "nodes.db"
    assert main(["-c", str(config), "store", "migrate", f"sqlite:///{missing}", postgres.new_database()]) != 0
    assert f"no SQLite store at {missing}" in capsys.readouterr().err
    assert not missing.exists()
