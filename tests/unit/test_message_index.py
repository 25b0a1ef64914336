"""The message index (issue 12, item 2): one row per message and recipient, kept up to date as events
are written, and `store reindex` rebuilding exactly the same rows from the events.

The incremental path folds each message again whenever a batch of events (or a new link) touches
it; the rebuild folds every message once. Both call `messages.index.message_rows`, the trace's own
fold, so a row's status is the trace's status for that recipient.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from bench.ingest_log import Generator

from mailwarden.checks import build_chain
from mailwarden.checks.base import Action, Check, CheckContext, Services, Verdict
from mailwarden.checks.chain import CheckChain
from mailwarden.cli import main
from mailwarden.config import Config
from mailwarden.events import KINDS, Event
from mailwarden.ingest import parse_lines
from mailwarden.messages.fates import DECIDING_KINDS, build
from mailwarden.messages.index import INDEX_FIELDS, message_rows
from mailwarden.store import Store
from mailwarden.trace.correlate import load
from tests.support.corpora import all_lines
from tests.support.mailwarden import BASE_ORDER
from tests.support.stores import Handles, Opener, index_rows, run_sql
from tests.unit.test_gateway_in_process import MESSAGE, run_gateway
from tests.unit.test_ingest_postfix import MILTER_LOG
from tests.unit.test_message_keys import FILTERED, MX1, STORE1
from tests.unit.test_message_keys_writers import pop3_session

T0 = 1_764_979_200_000_000  # 2025-12-06 00:00:00 UTC


def write_in_small_batches(store: Store, events: list[Event], size: int = 7) -> None:
    """Hand the events over a few at a time, as a follower or the gateway does (many small commits).

    Not fewer than 300 commits: Exim's test suite reuses message ids in every script, so some of
    its "messages" have thousands of events, folded again at every commit.
    """
    size = max(size, len(events) // 300)
    for start in range(0, len(events), size):
        store.append_many(events[start : start + size])
        store.flush()


def generated_log(scenes: int = 600) -> list[str]:
    """The ingest benchmark's mixed Postfix + Dovecot log: refusals, LMTP hand-offs, bounces, accesses."""
    generator = Generator(seed=3)
    actions = [
        generator.postscreen_reject,
        generator.smtpd_reject,
        generator.delivery,
        generator.delivery,
        generator.bounce,
        generator.pop3,
        generator.imap_and_noise,
    ]
    for number in range(scenes):
        generator.rng.choice(actions)("mx1" if number % 2 else "mx2")
    return [line.rstrip("\n") for line in generator.lines]


def linked() -> list[Event]:
    """A content filter's re-injections, and Dovecot's log before Postfix's: links written after the events."""
    return [
        *parse_lines(STORE1, node="store1", reference_us=T0),
        *parse_lines(FILTERED + MX1, node="mx1", reference_us=T0),
    ]


def milter_run(order: str) -> list[Event]:
    """mailwarden as Postfix's milter: our events (keyed by our refs, with Postfix's queue id once
    it is known) and Postfix's log of the same messages, ingested before or after them."""
    ours = [
        Event(
            "accept", "milter", "mta", T0 + 1, ref="1C4525SHG001", queue_id="A469A228285", recipient="bob@example.test"
        ),
        Event("reject", "milter", "mta", T0 + 2, ref="1C4525SHG002", recipient="nobody@example.test", smtp_code=550),
        Event("reject", "milter", "mta", T0 + 3, ref="1C4525SHG003", queue_id="B7C992281C2", smtp_code=554),
    ]
    for event in ours:
        event.message_key = event.ref
    postfix = parse_lines(MILTER_LOG, node="mta", reference_us=T0)
    return [*ours, *postfix] if order == "milter first" else [*postfix, *ours]


CORPORA = ["fail2ban", "crowdsec-hub", "postfix-grok-patterns", "exim-testsuite"]


@pytest.mark.parametrize("source", [*CORPORA, "generated", "linked", "milter first", "postfix first"])
@pytest.mark.parametrize("batches", ["small", "bulk"])
def test_the_index_rebuilt_from_the_events_equals_the_one_kept_as_they_were_written(
    store_handles: Handles, store: Store, source: str, batches: str
) -> None:
    if (store_handles.backend, source, batches) == ("postgresql", "exim-testsuite", "small"):
        pytest.skip(
            "PostgreSQL folds a message again from all its events at every commit, and Exim's test suite"
            " reuses message ids in every script: 300 small commits take 35-125 s (its bulk write runs)"
        )
    if source in CORPORA:
        events = parse_lines([line for _, line in all_lines(source)], node="corpus")
    elif source == "generated":
        events = parse_lines(generated_log(), node="mx", reference_us=T0)
    elif source == "linked":
        events = linked()
    else:
        events = milter_run(source)
    if batches == "small":
        write_in_small_batches(store, events)
    else:
        store.append_bulk(events)
        store.flush()
    kept = index_rows(store)
    assert kept or source == "postfix-grok-patterns"  # its lines lack the syslog head: no message
    store.reindex()
    assert index_rows(store) == kept


@pytest.mark.parametrize("order", ["milter first", "postfix first"])
def test_our_milter_events_and_postfixs_lines_are_one_message_whichever_is_written_first(
    store: Store, order: str
) -> None:
    write_in_small_batches(store, milter_run(order), size=1)
    refs = ["1C4525SHG001", "1C4525SHG002", "1C4525SHG003"]
    traces = load(store, refs)
    assert sorted(t.key or "" for t in traces) == refs
    assert all({e.source for e in t.events} == {"milter", "postfix"} for t in traces)
    assert {str(row[0]) for row in index_rows(store)} == set(refs)


def test_index_rows_are_the_traces_own_statuses(store: Store) -> None:
    events = [*parse_lines(generated_log(), node="mx", reference_us=T0), *linked()]
    write_in_small_batches(store, events, size=50)
    rows = index_rows(store)
    keys = sorted({str(row[0]) for row in rows})
    statuses = {(str(row[0]), str(row[1]).lower()): row[INDEX_FIELDS.index("status")] for row in rows}
    traced = {(t.key, f.address.lower()): f.status for t in load(store, keys) for f in t.fates}
    assert traced == statuses
    assert {"rejected", "delivered", "deleted", "deferred", "bounced"} <= set(statuses.values())


def test_store_reindex_rebuilds_a_lost_index_and_shows_its_progress(
    store_url: str, open_node: Opener, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = tmp_path / "config.toml"
    config.write_text(f'[store]\nurl = "{store_url}"\n[node]\nname = "t"\n[ingest]\ntimezone = "UTC"\n')
    log = tmp_path / "mail.log"
    log.write_text("\n".join(FILTERED + MX1) + "\n")
    assert main(["-c", str(config), "ingest", "--no-progress", str(log)]) == 0
    kept = index_rows(open_node())
    run_sql(store_url, "DELETE FROM message_index")  # lost, or made by an older mailwarden
    capsys.readouterr()
    assert main(["-c", str(config), "store", "reindex", "--progress"]) == 0
    captured = capsys.readouterr()
    assert "message index rebuilt: 3 rows from" in captured.out
    assert "of" in captured.err and "events (100%)" in captured.err
    assert index_rows(open_node()) == kept and len(kept) == 3


class Filing(Check):
    """Files mail from junk@ into Junk and refuses mail from spammer@ at MAIL: two more outcomes."""

    name = "filing"

    async def mail(self, ctx: CheckContext) -> Verdict | None:
        sender = ctx.txn.sender if ctx.txn is not None else None
        if sender is None:
            return None
        if sender.startswith("junk@"):
            return Verdict(Action.TAG, "msg.spam", folder="Junk")
        if sender.startswith("spammer@"):
            return Verdict.reject("sender.domain_missing", sender=sender, domain="nowhere.test")
        return None


def transaction(sender: str, *recipients: str, data: bool = True) -> list[bytes]:
    lines = [f"MAIL FROM:<{sender}>\r\n".encode(), *(f"RCPT TO:<{r}>\r\n".encode() for r in recipients)]
    return [*lines, b"DATA\r\n", MESSAGE + b".\r\n"] if data else [*lines, b"RSET\r\n"]


def test_a_gateway_run_with_every_outcome_keeps_the_index_a_rebuild_makes(tmp_path: Path, store: Store) -> None:
    store.add_mailbox("carol@example.test", "x")
    config = Config(base_dir=tmp_path, checks={"order": list(BASE_ORDER)})  # type: ignore[arg-type]  # no DNS checks
    services = Services(config=config, store=store, local_domains=frozenset({"example.test"}))
    chain = CheckChain([*build_chain(services).checks, Filing()], timeout=5)
    script = [
        b"EHLO client.sender.test\r\n",
        *transaction("alice@sender.test", "bob@example.test", "nobody@example.test"),  # delivered + rejected
        *transaction("junk@sender.test", "bob@example.test"),  # junk
        *transaction("alice@sender.test", "carol@example.test", data=False),  # tempfailed: never sent
        *transaction("spammer@sender.test", "bob@example.test"),  # rejected at MAIL: no recipient
        *transaction("alice@sender.test", "carol@example.test"),  # retrieved, then deleted
        *transaction("alice@sender.test", "carol@example.test"),  # retrieved
        b"QUIT\r\n",
    ]
    run_gateway(tmp_path, store, script, chain)
    pop3_session(tmp_path, store, "carol@example.test", [b"RETR 1", b"RETR 2", b"DELE 1", b"QUIT"])
    kept = index_rows(store)
    statuses = sorted(str(row[INDEX_FIELDS.index("status")]) for row in kept)
    assert statuses == sorted(["delivered", "rejected", "junk", "tempfailed", "rejected", "deleted", "retrieved"])
    store.reindex()
    assert index_rows(store) == kept


def test_two_writers_of_one_store_keep_the_index_a_rebuild_makes(open_node: Opener) -> None:
    """A daemon and a `mailwarden ingest` run write the same store: neither folds from a stale memory."""
    daemon, importer = open_node(batch_interval=0.001), open_node(batch_interval=0.001)
    key = "1AAAAAAAAAW0"

    def ours(kind: str, at: int, **fields: object) -> Event:
        return Event(
            kind,
            "pop3" if kind in ("retrieve", "delete") else "gateway",
            "mx1",
            T0 + at,
            ref=key,
            message_key=key,
            session=key,
            **fields,
        )  # type: ignore[arg-type]

    daemon.append_many(
        [
            ours("rcpt", 1, recipient="bob@example.test"),
            ours("deliver", 2, recipient="bob@example.test", reason="delivered"),
        ]
    )
    daemon.flush()  # the daemon's writer remembers the message
    importer.append(ours("retrieve", 3, recipient="bob@example.test", reason="access.retrieved"))
    importer.flush()
    daemon.append(ours("data", 4, size=10))  # folded again by the daemon: it must see the retrieval
    daemon.flush()
    kept = index_rows(daemon)
    assert [row[INDEX_FIELDS.index("status")] for row in kept] == ["retrieved"]
    daemon.reindex()
    assert index_rows(daemon) == kept


@pytest.mark.parametrize("kind", sorted(KINDS - DECIDING_KINDS))
def test_a_message_of_events_that_decide_nothing_has_no_fate_and_no_row(kind: str) -> None:
    """`message_rows` skips the fold of such messages: the trace's fold must agree that they have no fate."""
    common = {"recipient": "bob@example.test", "smtp_code": 550, "reason": "rcpt.unknown_user", "message_key": "K"}
    events = [
        Event(kind, source, "mx1", T0, id=n, detail={"stage": "rcpt"}, **common)
        for n, source in enumerate(("gateway", "postfix", "dovecot", "pop3"))
    ]  # type: ignore[arg-type]
    assert build("K", list(events)).fates == []
    assert message_rows("K", events) == []
