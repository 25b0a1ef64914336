"""Rate limits, greylisting and the pregreet pass cache, with a clock the test moves: no sleeping,
and the same answer wherever the wall clock's minute turns.

- The rate estimate is rounded up: an estimate of 3.96 events is four, and a limit of 3 refuses it.
- Greylisting through the real gateway: deferred at first, deferred again before the delay, accepted
  after it (and the trace explains both attempts), forgotten after the retry window and after
  `expire_days`.
- The pregreet check: an early talker is refused with what it sent; a client that waited is
  greeted at once until its pass expires; one that left is not remembered.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from mailwarden.checks.base import Action, CheckContext, Services, SessionInfo, Transaction, Verdict
from mailwarden.checks.pregreet import PregreetCheck
from mailwarden.checks.ratelimit import RateLimitCheck
from mailwarden.config import Config, PregreetConfig, RateLimitConfig
from mailwarden.smtp.clients import SharedCounts, create_table
from mailwarden.store import EventQuery, Store
from mailwarden.store.parts import RateLimitState
from mailwarden.store.rates import MemoryRates, SlidingCounter
from mailwarden.trace import report
from mailwarden.trace.search import AddressFilter, SearchSpec, search
from tests.support.clock import FakeClock
from tests.support.inprocess import config_for, converse, gateway_in_process
from tests.support.stores import Opener

MINUTE = 1_800_000_000.0  # FakeClock's default start: a whole minute


@pytest.fixture
def services(tmp_path: Path, store: Store) -> Services:
    return Services(config=Config(base_dir=tmp_path), store=store, local_domains=frozenset())


def context(services: Services, client_ip: str = "192.0.2.7", **session: object) -> CheckContext:
    return CheckContext(services, SessionInfo("s1", "test", client_ip, 25, **session), Transaction("r1"))  # type: ignore[arg-type]


# ---------------------------------------------------------------------------- rate limits
@pytest.fixture(params=["in the process", "shared by workers"])
def rates(request: pytest.FixtureRequest) -> Iterator[RateLimitState]:
    """The rate counters of one process (SQLite's), or of a worker whose counts live in the table the workers share."""
    if request.param == "in the process":
        yield MemoryRates()
        return
    fd = create_table(workers=2)
    shared = SharedCounts(fd, slot=1)
    try:
        yield shared
    finally:
        shared.close()
        os.close(fd)


def test_a_window_estimate_of_3_96_events_counts_as_four_not_three() -> None:
    counter = SlidingCounter()
    for second in range(4):  # four in the minute from 60 s on
        counter.hit("192.0.2.7", 60.0 + second)
    # 15.6 s into the next minute those four still weigh 0.74 each: 1 + 2.96 = 3.96 events
    assert counter.hit("192.0.2.7", 135.6) == 4


@pytest.mark.parametrize("first", [59.7, 59.8, 59.9, 60.0], ids=lambda s: f"first at :{s:04.1f}")
def test_the_fourth_connection_within_half_a_second_is_refused_wherever_the_minute_turns(
    services: Services, rates: RateLimitState, first: float
) -> None:
    clock = FakeClock(MINUTE - 60 + first)
    check = RateLimitCheck(RateLimitConfig(connections_per_minute=3), rates, clock)
    ctx = context(services)
    verdicts: list[Verdict | None] = []
    for _ in range(4):
        verdicts.append(asyncio.run(check.connect(ctx)))
        clock.advance(0.1)
    assert verdicts[:3] == [None, None, None]
    refused = verdicts[3]
    assert refused is not None and (refused.code, refused.enhanced_code) == (421, "4.7.0")
    assert refused.values["count"] == 4 and refused.values["limit"] == 3


def test_the_third_message_within_a_second_is_refused_across_a_minute_boundary(
    services: Services, rates: RateLimitState
) -> None:
    clock = FakeClock(MINUTE - 0.5)
    check = RateLimitCheck(RateLimitConfig(messages_per_minute=2), rates, clock)
    ctx = context(services)
    verdicts = []
    for _ in range(3):
        verdicts.append(asyncio.run(check.mail(ctx)))
        clock.advance(0.4)  # the second message is sent as the minute turns
    assert verdicts[:2] == [None, None]
    refused = verdicts[2]
    assert refused is not None and refused.reason == "rate_limited"
    assert (refused.code, refused.enhanced_code) == (451, "4.7.0")


def test_a_client_is_admitted_again_once_a_quiet_minute_has_passed(services: Services, rates: RateLimitState) -> None:
    clock = FakeClock()
    check = RateLimitCheck(RateLimitConfig(connections_per_minute=1), rates, clock)
    ctx = context(services)
    assert asyncio.run(check.connect(ctx)) is None
    assert asyncio.run(check.connect(ctx)) is not None
    clock.advance(59.9)  # the refused attempt counts too: almost a minute later it still weighs in
    assert asyncio.run(check.connect(ctx)) is not None
    clock.advance(120)
    assert asyncio.run(check.connect(ctx)) is None


# ---------------------------------------------------------------------------- greylisting
def transaction(sender: str, recipient: str, *, data: bool) -> list[bytes]:
    lines = [b"EHLO mail.example.org\r\n", f"MAIL FROM:<{sender}>\r\n".encode(), f"RCPT TO:<{recipient}>\r\n".encode()]
    if data:
        lines += [b"DATA\r\n", f"Subject: hi\r\nMessage-ID: <g-{recipient}>\r\n\r\nhello\r\n.\r\n".encode()]
    return [*lines, b"QUIT\r\n"]


def ref_of(reply: str) -> str:
    return reply.rpartition("ref=")[2].split()[0]


def greylisting(tmp_path: Path, open_node: Opener) -> tuple[Config, Store]:
    config = config_for(tmp_path, ["recipients", "greylist"], greylist={"delay": 300})
    store = open_node()
    for mailbox in ("bob@example.test", "carol@example.test"):
        store.add_mailbox(mailbox, "hash")
    return config, store


def test_greylisting_defers_the_first_attempt_and_accepts_the_retry_after_the_delay(
    tmp_path: Path, open_node: Opener
) -> None:
    config, store = greylisting(tmp_path, open_node)
    clock = FakeClock()

    async def attempts() -> list[list[str]]:
        async with gateway_in_process(config, store, clock=clock) as port:
            first = await converse(port, transaction("ann@example.org", "bob@example.test", data=False), "127.0.0.40")
            clock.advance(100)
            early = await converse(port, transaction("ann@example.org", "bob@example.test", data=False), "127.0.0.40")
            clock.advance(201)  # 301 seconds after the first attempt; the retry comes from the same /24
            retry = await converse(port, transaction("ann@example.org", "bob@example.test", data=True), "127.0.0.41")
            other = await converse(port, transaction("ann@example.org", "carol@example.test", data=True), "127.0.0.42")
            return [first, early, retry, other]

    first, early, retry, other = asyncio.run(attempts())
    store.flush()
    assert first[3].startswith("451 4.7.1 Greylisted") and "retry in 300 seconds" in first[3], first
    assert early[3].startswith("451 4.7.1") and "retry in 201 seconds" in early[3], early
    assert retry[3].startswith("250 2.1.5") and retry[5].startswith("250 2.0.0"), retry
    assert other[5].startswith("250 2.0.0"), other  # a sender that passed from this network: not delayed again
    (stored,) = (tmp_path / "var" / "mail" / "example.test" / "bob" / "new").iterdir()
    assert b"X-Greylist: delayed 301 seconds by mailwarden at mx.example.test; Fri, 15 Jan 2027" in stored.read_bytes()
    (rcpt,) = store.query_events(EventQuery(ref=ref_of(retry[5]), kinds=("rcpt",)))
    (passed,) = [c for c in rcpt.detail["checks"] if c["check"] == "greylist"]
    assert passed["result"] == "tag" and passed["detail"]["passed"] is True
    assert passed["detail"]["delayed_seconds"] == 301
    (deferred,) = store.query_events(EventQuery(ref=ref_of(first[3]), kinds=("tempfail",)))
    assert deferred.reason == "greylisted" and deferred.detail["first_seen"] == passed["detail"]["first_seen"]

    # the trace: the deferral and the delivery are two messages, each pointing to the other
    listing = search(store, SearchSpec(recipient=AddressFilter.parse("bob@example.test")), retention_days=90)
    assert [fate.status for _, fate in listing.rows] == ["delivered", "tempfailed", "tempfailed"]
    accepted = report.build(store, ref_of(retry[5]), domains=["example.test"]).diagnosis
    assert (accepted.status, accepted.responsibility) == ("delivered", "none")
    assert any("greylisting" in note and ref_of(first[3]) in note for note in accepted.notes), accepted.notes
    refused = report.build(store, ref_of(first[3]), domains=["example.test"]).diagnosis
    assert (refused.status, refused.reason, refused.responsibility) == ("tempfailed", "greylisted", "none")


def deferrals(tmp_path: Path, open_node: Opener, *pauses: float) -> list[str]:
    """The replies to RCPT of attempts of one triplet, with these pauses (seconds) between them."""
    config, store = greylisting(tmp_path, open_node)
    clock = FakeClock()
    attempt = transaction("ann@example.org", "bob@example.test", data=False)

    async def attempts() -> list[str]:
        async with gateway_in_process(config, store, clock=clock) as port:
            replies = [(await converse(port, attempt, "127.0.0.40"))[3]]
            for pause in pauses:
                clock.advance(pause)
                replies.append((await converse(port, attempt, "127.0.0.40"))[3])
            return replies

    return asyncio.run(attempts())


def test_a_retry_after_the_retry_window_starts_over(tmp_path: Path, open_node: Opener) -> None:
    first, late = deferrals(tmp_path, open_node, 172_801)
    assert first.startswith("451 4.7.1") and late.startswith("451 4.7.1") and "retry in 300 seconds" in late


def test_a_triplet_that_passed_is_forgotten_after_expire_days_without_mail(tmp_path: Path, open_node: Opener) -> None:
    first, passed, forgotten = deferrals(tmp_path, open_node, 301, 35 * 86_400 + 1)
    assert first.startswith("451 4.7.1") and passed.startswith("250 2.1.5")
    assert forgotten.startswith("451 4.7.1") and "retry in 300 seconds" in forgotten


# ---------------------------------------------------------------------------- pregreet
class Watch:
    """The protocol's offer before the greeting, answering as a scripted client would."""

    def __init__(self, sent: bytes | None) -> None:
        self.sent = sent
        self.waited: list[float] = []

    async def __call__(self, seconds: float) -> bytes | None:
        self.waited.append(seconds)
        return self.sent


def pregreet_check(services: Services, clock: FakeClock, **settings: object) -> PregreetCheck:
    config = PregreetConfig(**{"wait": 6.0, **settings})  # type: ignore[arg-type]
    return PregreetCheck(config, services.store, clock, check_timeout=30)


def test_a_client_that_waited_is_greeted_at_once_until_its_pass_expires(services: Services) -> None:
    clock = FakeClock()
    check = pregreet_check(services, clock)
    watch = Watch(b"")
    assert asyncio.run(check.connect(context(services, watch_input=watch))) is None
    assert watch.waited == [6.0]
    clock.advance(86_399)
    assert asyncio.run(check.connect(context(services, watch_input=watch))) is None
    assert watch.waited == [6.0]  # remembered: not watched, greeted at once
    clock.advance(2)
    assert asyncio.run(check.connect(context(services, watch_input=watch))) is None
    assert watch.waited == [6.0, 6.0]  # a day later it is watched again


def test_the_pass_cache_is_kept_in_the_store_across_a_restart(services: Services, open_node: Opener) -> None:
    clock = FakeClock()
    asyncio.run(pregreet_check(services, clock).connect(context(services, watch_input=Watch(b""))))
    services.store.close()
    reopened = Services(services.config, open_node(), frozenset())
    watch = Watch(b"EHLO x\r\n")
    assert asyncio.run(pregreet_check(reopened, clock).connect(context(reopened, watch_input=watch))) is None
    assert watch.waited == []


def test_an_early_talker_is_refused_with_what_it_sent_and_not_remembered(services: Services) -> None:
    clock = FakeClock()
    check = pregreet_check(services, clock)
    verdict = asyncio.run(check.connect(context(services, watch_input=Watch(b"EHLO bot.example\r\nMAIL FROM:<x>"))))
    assert verdict is not None and verdict.action is Action.REJECT
    assert (verdict.reason, verdict.code, verdict.enhanced_code) == ("client.pregreet", 550, "5.5.1")
    assert verdict.detail["sent"] == "EHLO bot.example\\x0d\\x0aMAIL FROM:<x>"
    assert check.store.pregreet_passed("192.0.2.7") is None
    watch = Watch(b"")
    asyncio.run(check.connect(context(services, watch_input=watch)))
    assert watch.waited == [6.0]


def test_a_client_that_leaves_before_the_greeting_is_neither_refused_nor_remembered(services: Services) -> None:
    check = pregreet_check(services, FakeClock())
    assert asyncio.run(check.connect(context(services, watch_input=Watch(None)))) is None
    assert check.store.pregreet_passed("192.0.2.7") is None


@pytest.mark.parametrize(
    ("settings", "client_ip"),
    [({"wait": 0}, "192.0.2.7"), ({"exempt_networks": ["192.0.2.0/24"]}, "192.0.2.7")],
    ids=["wait 0 turns it off", "exempt network"],
)
def test_a_client_is_not_watched_when_the_wait_is_off_or_it_is_exempt(
    services: Services, settings: dict[str, object], client_ip: str
) -> None:
    watch = Watch(b"EHLO x\r\n")
    check = pregreet_check(services, FakeClock(), **settings)
    assert asyncio.run(check.connect(context(services, client_ip, watch_input=watch))) is None
    assert watch.waited == []


def test_two_checks_on_one_rate_limit_state_count_together(services: Services) -> None:
    """What several nodes on one shared store do: the limit holds for their sum, not for each."""
    clock = FakeClock()
    shared = MemoryRates()
    first, second = (RateLimitCheck(RateLimitConfig(messages_per_minute=2), shared, clock) for _ in range(2))
    ctx = context(services)
    assert asyncio.run(first.mail(ctx)) is None
    assert asyncio.run(second.mail(ctx)) is None
    refused = asyncio.run(first.mail(ctx))
    assert refused is not None and refused.values["count"] == 3
