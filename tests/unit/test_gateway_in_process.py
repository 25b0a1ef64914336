"""The gateway in this process, for what a real server cannot be made to do on demand.

- Evidence that cannot be committed withdraws the delivery: the client gets 452 4.3.1 and
  no copy stays in the Maildir.
- A check that raises or hangs gives 451 4.3.0, never an accept and never a 5xx; the decision
  chain (each check, result, time) is recorded.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from pathlib import Path

import pytest

from mailwarden import spool
from mailwarden.checks import build_chain
from mailwarden.checks.base import Check, CheckContext, Services, Verdict
from mailwarden.checks.chain import CheckChain
from mailwarden.config import Config
from mailwarden.events import Event
from mailwarden.smtp.data import DataDecoder
from mailwarden.smtp.gateway import Connection
from mailwarden.spool import Spool
from mailwarden.store import EventQuery, StoreError
from mailwarden.store.base import Committed
from mailwarden.store.parts import Store
from mailwarden.store.sqlite import SqliteStore
from tests.support.inprocess import config_for, converse, gateway_in_process
from tests.support.mailwarden import BASE_ORDER

MESSAGE = b"Subject: hi\r\n\r\nhello\r\n"


class UnwritableEvidence(SqliteStore):
    """A store whose disk fails exactly when a delivery's evidence is to be committed."""

    def commit_soon(self, events: Sequence[Event], done: Committed) -> None:
        if events:
            done(StoreError("event store write failed: database or disk is full"))
            return
        super().commit_soon(events, done)


def run_gateway(
    tmp_path: Path,
    store: Store,
    lines: list[bytes],
    chain: CheckChain | None = None,
    timeouts: dict[str, float] | None = None,
    smtp_settings: dict[str, object] | None = None,
) -> list[str]:
    config = config_for(tmp_path, list(BASE_ORDER), smtp={"timeouts": timeouts or {}, **(smtp_settings or {})})
    store.add_mailbox("bob@example.test", "hash")

    async def main() -> list[str]:
        async with gateway_in_process(config, store, chain=chain) as port:
            return await converse(port, lines)

    try:
        return asyncio.run(main())
    finally:
        store.flush()


TRANSACTION = [
    b"EHLO client.sender.test\r\n",
    b"MAIL FROM:<alice@sender.test>\r\n",
    b"RCPT TO:<bob@example.test>\r\n",
    b"DATA\r\n",
    MESSAGE + b".\r\n",
]


def test_evidence_that_cannot_be_committed_withdraws_the_delivery(tmp_path: Path) -> None:
    store = UnwritableEvidence(tmp_path / "store.db")
    replies = run_gateway(tmp_path, store, TRANSACTION)
    assert replies[-1].startswith("452 4.3.1 Temporary storage problem"), replies
    assert "ref=" in replies[-1]
    mailbox = tmp_path / "var" / "mail" / "example.test" / "bob"
    assert [p for sub in ("new", "cur", "tmp") for p in (mailbox / sub).iterdir()] == []
    kinds = [e.kind for e in store.query_events(EventQuery())]
    assert "accept" not in kinds and "deliver" not in kinds
    (refusal,) = store.query_events(EventQuery(reason="infra.storage"))
    assert refusal.smtp_code == 452
    store.close()


class Exploding(Check):
    name = "exploding"

    async def rcpt(self, ctx: CheckContext, recipient: str) -> Verdict | None:
        raise RuntimeError("bug in a check")


class StoreAway(Check):
    name = "greylist-on-a-database-away"

    async def rcpt(self, ctx: CheckContext, recipient: str) -> Verdict | None:
        raise StoreError("PostgreSQL store postgresql://mx@db/mail is away (connection refused); check that it runs")


class Hanging(Check):
    name = "hanging"

    async def data(self, ctx: CheckContext) -> Verdict | None:
        await asyncio.sleep(60)
        return None


def chain_of(tmp_path: Path, store: Store, *checks: Check) -> CheckChain:
    config = Config(checks={"order": list(BASE_ORDER)}, base_dir=tmp_path)  # type: ignore[arg-type]
    services = Services(config=config, store=store, local_domains=frozenset({"example.test"}))
    built = build_chain(services)
    return CheckChain([*built.checks, *checks], timeout=0.5)


def test_a_check_that_raises_gives_451_4_3_0_never_an_accept(
    tmp_path: Path, store: Store, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.ERROR, logger="mailwarden.checks.chain"):
        replies = run_gateway(tmp_path, store, TRANSACTION[:3], chain_of(tmp_path, store, Exploding()))
    (logged,) = [r for r in caplog.records if "exploding" in r.getMessage()]
    assert logged.exc_info is not None  # a bug: its traceback is what its author needs
    assert replies[-1].startswith("451 4.3.0 A filter check (exploding) failed temporarily"), replies
    (refusal,) = store.query_events(EventQuery(reason="infra.check_failed"))
    recorded = refusal.detail["checks"]
    assert recorded[0]["check"] == "recipients" and recorded[-1]["check"] == "exploding"
    assert recorded[-1]["result"] == "tempfail" and "ms" in recorded[-1]


def test_a_check_whose_store_is_away_is_logged_in_one_line_without_a_traceback(
    tmp_path: Path, store: Store, caplog: pytest.LogCaptureFixture
) -> None:
    """While PostgreSQL is away every session's greylisting fails alike: a traceback for each would
    bury the one line that says what to do (a bug in a check keeps its traceback: the test above)."""
    with caplog.at_level(logging.ERROR, logger="mailwarden.checks.chain"):
        replies = run_gateway(tmp_path, store, TRANSACTION[:3], chain_of(tmp_path, store, StoreAway()))
    assert replies[-1].startswith("451 4.3.0"), replies
    (line,) = [r for r in caplog.records if "greylist-on-a-database-away" in r.getMessage()]
    assert line.exc_info is None and "is away (connection refused); check that it runs" in line.getMessage()


def test_a_check_that_hangs_gives_451_4_3_0_after_its_timeout(tmp_path: Path) -> None:
    store = SqliteStore(tmp_path / "store.db")
    replies = run_gateway(tmp_path, store, TRANSACTION, chain_of(tmp_path, store, Hanging()))
    assert replies[-1].startswith("451 4.3.0 A filter check (hanging) failed temporarily"), replies
    mailbox = tmp_path / "var" / "mail" / "example.test" / "bob"
    assert not any(p.is_file() for p in mailbox.rglob("*"))
    store.close()


class Slow(Check):
    name = "slow"

    async def rcpt(self, ctx: CheckContext, recipient: str) -> Verdict | None:
        await asyncio.sleep(1.5)
        return None


def test_a_check_slower_than_the_idle_timeout_does_not_count_as_an_idle_client(tmp_path: Path) -> None:
    store = SqliteStore(tmp_path / "store.db")
    chain = CheckChain([*chain_of(tmp_path, store).checks, Slow()], timeout=10)
    replies = run_gateway(tmp_path, store, TRANSACTION, chain, timeouts={"command": 0.5, "data_block": 0.5})
    assert replies[3].startswith("250 2.1.5"), replies
    assert replies[-1].startswith("250 2.0.0 Message accepted"), replies
    store.close()


# A body of command lines: if any of them ran as a command, the replies after the end marker would show it.
BODY_OF_COMMANDS = b"Subject: x\r\n\r\n" + b"NOOP\r\n" * 20_000 + b"MAIL FROM:<mallory@evil.test>\r\n.\r\n"


def test_any_spool_failure_reads_the_message_to_its_end_and_answers_452_once(
    tmp_path: Path, store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Not only a full disk: any error while spooling is answered after the end marker, nothing run as a command."""

    def broken_mkstemp(*args: object, **kwargs: object) -> tuple[int, str]:
        raise RuntimeError("a bug in spooling")

    monkeypatch.setattr(spool.tempfile, "mkstemp", broken_mkstemp)
    lines = [*TRANSACTION[:4], BODY_OF_COMMANDS, b"NOOP\r\n"]
    replies = run_gateway(tmp_path, store, lines, smtp_settings={"memory_spool_limit": 65_536})
    assert replies[-2].startswith("452 4.3.1 Temporary storage problem"), replies
    assert replies[-1] == "250 2.0.0 OK"
    (refusal,) = store.query_events(EventQuery(reason="infra.storage"))
    assert refusal.detail["values"]["problem"] == "the spool for arriving messages failed: RuntimeError"
    assert not list((tmp_path / "var" / "spool").glob("msg-*"))
    assert [e.kind for e in store.query_events(EventQuery()) if e.kind in ("mail", "rcpt")] == ["mail", "rcpt"]


def test_a_fault_in_decoding_data_closes_the_connection_and_runs_nothing_of_the_message(
    tmp_path: Path, store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Where the message ends is unknown then: 421, recorded, and nothing more is read from that client."""

    def broken_feed(self: DataDecoder, chunk: bytes) -> bytes:
        raise ValueError("a bug in decoding")

    monkeypatch.setattr(DataDecoder, "feed", broken_feed)
    replies = run_gateway(tmp_path, store, [*TRANSACTION[:4], b"Subject: x\r\n\r\nNOOP\r\n", b"NOOP\r\n"])
    assert replies[-2].startswith("421 4.3.0 ") and "ref=" in replies[-2], replies
    assert replies[-1] == "", "the connection stays open"
    (refusal,) = store.query_events(EventQuery(reason="infra.check_failed"))
    assert (refusal.kind, refusal.smtp_code) == ("tempfail", 421)


def test_a_stop_between_a_transactions_end_and_its_reply_lets_the_250_out_before_hanging_up(
    tmp_path: Path, store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    """SIGTERM or a reload stops the gateway at any moment: also after a message was delivered and recorded,
    before its 250 is written. Hung up with 421 then, the sender would send the delivered message again."""
    ended = Connection.on_data_end
    stops: list[asyncio.Task[None]] = []

    async def stop_once_ended(self: Connection, spool: Spool, *, line_too_long: bool, bare_newlines: int) -> str:
        reply = await ended(self, spool, line_too_long=line_too_long, bare_newlines=bare_newlines)
        stops.append(asyncio.create_task(self.gateway.stop(grace=10)))
        await asyncio.sleep(0)  # the stop looks at the sessions now: the transaction is over, its 250 not yet sent
        return reply

    monkeypatch.setattr(Connection, "on_data_end", stop_once_ended)
    config = config_for(tmp_path, list(BASE_ORDER))
    store.add_mailbox("bob@example.test", "hash")

    async def main() -> list[str]:
        async with gateway_in_process(config, store) as port:
            replies = await converse(port, TRANSACTION)
            await stops[0]
            return replies

    replies = asyncio.run(main())
    assert replies[-1].startswith("250 2.0.0 "), replies
    store.flush()
    assert [e.kind for e in store.query_events(EventQuery()) if e.kind in ("deliver", "accept")] == [
        "deliver",
        "accept",
    ]
