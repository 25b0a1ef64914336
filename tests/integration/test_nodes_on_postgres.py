"""Several nodes, one PostgreSQL store (issue 14): greylisting and rate limits hold across gateway
nodes, and one trace shows what every node did to a message.

Two gateways (nodes mx-a on 127.0.0.2 and mx-b on 127.0.0.3) and a POP3 node, each with a store
handle of its own (its own pool and event writer) on one database of the private PostgreSQL.
They run in this process, so that time comes from one injectable clock (greylisting waits five
minutes); everything between them goes through the database.
"""

from __future__ import annotations

import asyncio
import socket
import threading
from pathlib import Path
from typing import Any

import psycopg
import pytest

from mailwarden.config import Config
from mailwarden.events import Event
from mailwarden.store import EventQuery
from mailwarden.store.postgres import PostgresStore
from mailwarden.store.spool import EventSpool
from mailwarden.trace import report
from mailwarden.trace.correlate import load
from tests.support.clock import FakeClock
from tests.support.inprocess import converse, gateway_in_process
from tests.support.net import free_port
from tests.support.postgres import Postgres
from tests.unit.test_message_keys_writers import pop3_session

CLIENT = "127.0.0.40"


def node_config(tmp_path: Path, name: str, address: str) -> Config:
    return Config(
        node={"name": name},  # type: ignore[arg-type]
        smtp={"listen": [f"{address}:{free_port(address)}"], "hostname": f"{name}.example.test"},  # type: ignore[arg-type]
        mail={"domains": ["example.test"], "maildir_root": str(tmp_path / "var" / "mail")},  # type: ignore[arg-type]
        checks={"order": ["recipients", "ratelimit", "greylist"]},  # type: ignore[arg-type]
        greylist={"delay": 300},  # type: ignore[arg-type]
        ratelimit={"messages_per_minute": 3},  # type: ignore[arg-type]
        base_dir=tmp_path / name,  # its own spool; the Maildirs are the POP3 node's
    )


def transaction(*, data: bool) -> list[bytes]:
    lines = [b"EHLO client.example.org\r\n", b"MAIL FROM:<ann@example.org>\r\n", b"RCPT TO:<bob@example.test>\r\n"]
    body = [b"DATA\r\n", b"Subject: hi\r\nMessage-ID: <nodes-1@example.org>\r\n\r\nhello\r\n.\r\n"]
    return [*lines, *(body if data else [b"RSET\r\n"]), b"QUIT\r\n"]


def ref_of(reply: str) -> str:
    return reply.rpartition("ref=")[2].split()[0]


def test_two_gateway_nodes_and_a_pop3_node_share_greylisting_rate_limits_and_one_trace(
    postgres: Postgres, tmp_path: Path
) -> None:
    url = postgres.new_database()
    node_a, node_b, pop3_node = (PostgresStore(url, batch_interval=0.001) for _ in range(3))
    node_a.add_mailbox("bob@example.test", "hash")
    config_a = node_config(tmp_path, "mx-a", "127.0.0.2")
    config_b = node_config(tmp_path, "mx-b", "127.0.0.3")
    clock = FakeClock()

    async def mail() -> list[list[str]]:
        async with (
            gateway_in_process(config_a, node_a, clock=clock, node="mx-a") as port_a,
            gateway_in_process(config_b, node_b, clock=clock, node="mx-b") as port_b,
        ):
            greylisted = await converse(port_a, transaction(data=True), CLIENT, host="127.0.0.2")
            clock.advance(301)
            passed = await converse(port_b, transaction(data=True), CLIENT, host="127.0.0.3")
            more = [
                await converse(port, transaction(data=False), CLIENT, host=host)
                for port, host in ((port_a, "127.0.0.2"), (port_b, "127.0.0.3"), (port_a, "127.0.0.2"))
            ]
            return [greylisted, passed, *more]

    try:
        greylisted, passed, second, third, fourth = asyncio.run(mail())
        # greylisted on mx-a, let through on mx-b five minutes later: the triplet is in the shared store
        assert greylisted[3].startswith("451 4.7.1 Greylisted"), greylisted
        assert passed[3].startswith("250 2.1.5") and passed[5].startswith("250 2.0.0"), passed
        # three messages in this minute on the two nodes, the fourth refused: counted across both
        assert second[2].startswith("250") and third[2].startswith("250"), (second, third)
        assert fourth[2].startswith("451 4.7.0"), fourth
        pop3_session(tmp_path, pop3_node, "bob@example.test", [b"RETR 1", b"DELE 1", b"QUIT"], node="pop-1")

        for store in (node_a, node_b, pop3_node):
            store.flush()
        limited = pop3_node.query_events(EventQuery(reason="rate_limited"))
        assert [(e.node, e.detail["count"]) for e in limited] == [("mx-a", 4)]

        delivered = ref_of(passed[5])
        (trace,) = load(pop3_node, [delivered])
        timeline = [(e.node, e.source, e.kind) for e in trace.events]
        assert ("mx-b", "gateway", "accept") in timeline and ("mx-b", "gateway", "deliver") in timeline
        assert timeline[-1] == ("pop-1", "pop3", "delete"), timeline
        assert ("pop-1", "pop3", "retrieve") in timeline
        explained = report.build(pop3_node, delivered, domains=["example.test"]).diagnosis
        assert explained.status == "deleted"
        assert any(ref_of(greylisted[3]) in note for note in explained.notes), explained.notes  # mx-a's deferral
        (refused,) = pop3_node.query_events(EventQuery(ref=ref_of(greylisted[3]), kinds=("tempfail",)))
        assert (refused.node, refused.reason) == ("mx-a", "greylisted")
    finally:
        for store in (node_a, node_b, pop3_node):
            store.close()


def test_mail_keeps_flowing_while_postgresql_is_down_and_every_event_arrives_once_after(
    postgres: Postgres, tmp_path: Path
) -> None:
    store = PostgresStore(postgres.new_database(), batch_interval=0.001, spool=EventSpool(tmp_path / "spool", 1 << 20))
    store.add_mailbox("bob@example.test", "hash")
    config = node_config(tmp_path, "mx-a", "127.0.0.2")
    config = config.model_copy(update={"checks": config.checks.model_copy(update={"order": ["recipients"]})})

    async def send(count: int) -> list[list[str]]:
        async with gateway_in_process(config, store, node="mx-a") as port:
            return [await converse(port, transaction(data=True), CLIENT, host="127.0.0.2") for _ in range(count)]

    try:
        (before,) = asyncio.run(send(1))
        postgres.stop()
        try:
            during = asyncio.run(send(3))
            assert all(replies[5].startswith("250 2.0.0") for replies in during), during  # spooled
        finally:
            postgres.start()
        (after,) = asyncio.run(send(1))
        store.flush()
        accepted = [e.ref for e in store.query_events(EventQuery(kinds=("accept",)))]
        assert accepted == [ref_of(r[5]) for r in (before, *during, after)]  # each once, in order
    finally:
        store.close()


def test_while_postgresql_is_down_the_sessions_after_the_first_failure_do_not_wait_for_the_pool_again(
    postgres: Postgres, tmp_path: Path
) -> None:
    """Issue 14's outage: once one attempt found the database away, the next sessions learn it at
    once - a mailbox this node found before is accepted (its events spooled), one it never found
    is still a temporary failure and never taken as known - and the database is asked again once
    a write reached it."""
    store = PostgresStore(postgres.new_database(), batch_interval=0.001, spool=EventSpool(tmp_path / "spool", 1 << 20))
    store.add_mailbox("bob@example.test", "hash")
    config = node_config(tmp_path, "mx-a", "127.0.0.2")
    config = config.model_copy(update={"checks": config.checks.model_copy(update={"order": ["recipients"]})})
    lines = [
        b"EHLO client.example.org\r\n",
        b"MAIL FROM:<ann@example.org>\r\n",
        b"RCPT TO:<bob@example.test>\r\n",
        b"RCPT TO:<carol@example.test>\r\n",  # not a mailbox
        b"DATA\r\n",
        b"Subject: hi\r\n\r\nhello\r\n.\r\n",
        b"QUIT\r\n",
    ]

    async def send(count: int) -> list[list[str]]:
        async with gateway_in_process(config, store, node="mx-a") as port:
            return [await converse(port, lines, CLIENT, host="127.0.0.2") for _ in range(count)]

    def pool_requests() -> int:  # psycopg_pool counts the connections asked of it
        return int(store._pool.get_stats()["requests_num"])

    try:
        (before,) = asyncio.run(send(1))
        assert before[3].startswith("250 2.1.5") and before[4].startswith("550 5.1.1"), before
        postgres.stop()
        try:
            asked = pool_requests()
            during = asyncio.run(send(4))
            asked = pool_requests() - asked
        finally:
            postgres.start()
        for replies in during:
            assert replies[3].startswith("250 2.1.5") and replies[6].startswith("250 2.0.0"), replies  # spooled
            assert replies[4].startswith("451 4.3.0"), replies  # unknown while away: neither accepted nor refused
        assert asked <= 1, f"{asked} sessions waited for the pool of a database known to be away"
        store.flush()  # the spool replayed: a write reached the database
        (after,) = asyncio.run(send(1))
        assert after[4].startswith("550 5.1.1"), after  # asked again
        accepted = {e.ref for e in store.query_events(EventQuery(kinds=("accept",)))}
        assert accepted == {ref_of(r[6]) for r in (before, *during, after)}
    finally:
        store.close()


def test_a_full_spool_while_postgresql_is_down_answers_451_4_3_0_instead_of_accepting(
    postgres: Postgres, tmp_path: Path
) -> None:
    store = PostgresStore(postgres.new_database(), batch_interval=0.001, spool=EventSpool(tmp_path / "spool", 1))
    store.add_mailbox("bob@example.test", "hash")
    config = node_config(tmp_path, "mx-a", "127.0.0.2")
    config = config.model_copy(update={"checks": config.checks.model_copy(update={"order": ["recipients"]})})

    async def send() -> list[str]:
        async with gateway_in_process(config, store, node="mx-a") as port:
            return await converse(port, transaction(data=True), CLIENT, host="127.0.0.2")

    try:
        asyncio.run(send())  # the mailbox is known to this node
        postgres.stop()
        try:
            refused = asyncio.run(send())
        finally:
            postgres.start()
        assert refused[5].startswith("451 4.3.0"), refused
        assert not list((tmp_path / "var" / "mail" / "example.test" / "bob" / "new").iterdir())[1:]  # taken back
        store.flush()
        (event,) = store.query_events(EventQuery(reason="infra.event_spool_full"))
        assert event.smtp_code == 451 and event.ref == ref_of(refused[5])
    finally:
        store.close()


def test_every_connection_to_postgresql_notices_a_host_that_went_silent(postgres: Postgres) -> None:
    """A network partition sends no reset: without keepalives and a bound on unacknowledged data, a
    statement in flight waits for the kernel (about 15 minutes) or forever, and the event writer
    and every session waiting for a commit with it."""
    store = PostgresStore(postgres.new_database(), batch_interval=0.001)
    try:
        store.append(Event(kind="connect", source="gateway", node="mx-a", session="S1"))
        store.flush()
        assert store._writer_conn is not None
        with store._pool.connection() as pooled:
            for conn in (pooled, store._writer_conn):
                settings = conn.info.get_parameters()
                assert settings.get("keepalives") == "1", settings
                silent_seconds = int(settings["keepalives_idle"]) + int(settings["keepalives_interval"]) * int(
                    settings["keepalives_count"]
                )
                assert silent_seconds <= 60, settings
                assert 0 < int(settings.get("tcp_user_timeout", "0")) <= 60_000, settings
    finally:
        store.close()


def test_while_the_breaker_is_open_the_event_writer_gives_a_silent_database_host_seconds_not_the_full_timeout(
    postgres: Postgres, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A host that went silent answers no connection attempt: each batch's attempt waited the full
    connect timeout (10 s), and every session waiting for its commit with it. Once the breaker knows
    the database away, an attempt is given a short one and the batch goes to the spool."""
    store = PostgresStore(postgres.new_database(), batch_interval=0.001, spool=EventSpool(tmp_path / "spool", 1 << 20))
    timeouts: list[int] = []  # of the event writer's attempts (the breaker's probe has a thread of its own)
    connect = psycopg.connect

    def recorded(*args: Any, **kwargs: Any) -> Any:
        if threading.current_thread().name.startswith("store-writer"):
            timeouts.append(kwargs["connect_timeout"])
        return connect(*args, **kwargs)

    with socket.socket() as silent:  # takes connections into its backlog and never answers
        silent.bind(("127.0.0.1", 0))
        silent.listen(8)
        try:
            store.append(Event(kind="connect", source="gateway", node="mx-a", session="S1"))
            store.flush()
            monkeypatch.setattr(psycopg, "connect", recorded)
            assert store._writer_conn is not None
            store._writer_conn.close()  # the partition: the next batch must connect again
            store.url = f"postgresql://mailwarden@127.0.0.1:{silent.getsockname()[1]}/mailwarden"
            store._breaker.lost("a session's read found it away")
            store.append(Event(kind="connect", source="gateway", node="mx-a", session="S2"))
            store.flush()
            assert timeouts and max(timeouts) <= 2, timeouts
            assert store._spool is not None and store._spool.depth() == 1
        finally:
            monkeypatch.undo()
            store.close()
