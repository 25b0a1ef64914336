"""The resolver's promises that do not need a DNS server: cache, negative cache, sharing, deadlines."""

from __future__ import annotations

import asyncio
import socket
from typing import Any

import pytest

from mailwarden.dns import MX, Answer, DnsTempError, Resolver, dnsbl_name, reverse_name, valid_name
from tests.support.fakedns import ScriptedResolver


def run(coro: Any) -> Any:
    return asyncio.run(coro)


def test_answers_are_cached_until_their_ttl_runs_out(monkeypatch: pytest.MonkeyPatch) -> None:
    now = [1000.0]
    monkeypatch.setattr("mailwarden.dns.time.monotonic", lambda: now[0])
    answer = Answer("good.test", "MX", (MX(10, "mail.good.test"),), ttl=300)
    resolver = ScriptedResolver({("good.test", "MX"): answer})

    async def scenario() -> None:
        assert await resolver.query("Good.Test.", "MX") == answer
        now[0] += 299
        assert await resolver.query("good.test", "MX") == answer
        assert resolver.asked == [("good.test", "MX")]
        now[0] += 2
        await resolver.query("good.test", "MX")
        assert len(resolver.asked) == 2

    run(scenario())
    assert resolver.stats["cache_hits"] == 1


def test_nxdomain_is_cached_for_the_negative_ttl(monkeypatch: pytest.MonkeyPatch) -> None:
    now = [0.0]
    monkeypatch.setattr("mailwarden.dns.time.monotonic", lambda: now[0])
    missing = Answer("missing.test", "MX", (), nxdomain=True, ttl=60)
    resolver = ScriptedResolver({("missing.test", "MX"): missing}, negative_ttl=60)

    async def scenario() -> None:
        for _ in range(3):
            assert (await resolver.query("missing.test", "MX")).nxdomain
        now[0] += 61
        await resolver.query("missing.test", "MX")

    run(scenario())
    assert len(resolver.asked) == 2


def test_temporary_failures_are_never_cached() -> None:
    failure = DnsTempError("flaky.test", "A", "SERVFAIL")
    resolver = ScriptedResolver({("flaky.test", "A"): failure})

    async def scenario() -> None:
        for _ in range(2):
            with pytest.raises(DnsTempError):
                await resolver.query("flaky.test", "A")

    run(scenario())
    assert len(resolver.asked) == 2


def test_a_zero_cache_size_turns_the_cache_off() -> None:
    answer = Answer("good.test", "A", ("127.0.0.10",), ttl=300)
    resolver = ScriptedResolver({("good.test", "A"): answer}, cache_size=0)

    async def scenario() -> None:
        await resolver.query("good.test", "A")
        await resolver.query("good.test", "A")

    run(scenario())
    assert len(resolver.asked) == 2


def test_the_cache_stays_within_its_size() -> None:
    script = {(f"h{i}.test", "A"): Answer(f"h{i}.test", "A", ("127.0.0.1",), ttl=300) for i in range(10)}
    resolver = ScriptedResolver(script, cache_size=4)

    async def scenario() -> None:
        for i in range(10):
            await resolver.query(f"h{i}.test", "A")

    run(scenario())
    assert len(resolver._cache) <= 4


def test_identical_lookups_in_flight_share_one_query() -> None:
    answer = Answer("good.test", "A", ("127.0.0.10",), ttl=300)
    resolver = ScriptedResolver({("good.test", "A"): answer})

    async def scenario() -> None:
        resolver.gate = asyncio.Event()
        tasks = [asyncio.create_task(resolver.query("good.test", "A")) for _ in range(20)]
        await asyncio.sleep(0.01)
        resolver.gate.set()
        assert all(result == answer for result in await asyncio.gather(*tasks))

    run(scenario())
    assert resolver.asked == [("good.test", "A")]


def test_a_shared_failure_reaches_every_waiter() -> None:
    failure = DnsTempError("flaky.test", "A", "timeout")
    resolver = ScriptedResolver({("flaky.test", "A"): failure})

    async def scenario() -> None:
        resolver.gate = asyncio.Event()
        tasks = [asyncio.create_task(resolver.query("flaky.test", "A")) for _ in range(5)]
        await asyncio.sleep(0.01)
        resolver.gate.set()
        results = await asyncio.gather(*tasks, return_exceptions=True)
        assert [r is failure for r in results] == [True] * 5

    run(scenario())
    assert resolver.asked == [("flaky.test", "A")]  # one query went out: its failure is what every waiter got


def test_a_cancelled_asker_does_not_cancel_the_others_waiting_for_the_same_name() -> None:
    answer = Answer("good.test", "A", ("127.0.0.10",), ttl=300)
    resolver = ScriptedResolver({("good.test", "A"): answer})

    async def scenario() -> None:
        resolver.gate = asyncio.Event()
        first = asyncio.create_task(resolver.query("good.test", "A"))
        await asyncio.sleep(0.01)
        second = asyncio.create_task(resolver.query("good.test", "A"))
        await asyncio.sleep(0.01)
        first.cancel()
        await asyncio.sleep(0.01)
        resolver.gate.set()
        assert await second == answer

    run(scenario())


def test_names_that_cannot_exist_are_nxdomain_without_a_query() -> None:
    resolver = ScriptedResolver({})

    async def scenario() -> None:
        assert (await resolver.query("a" * 64 + ".test", "A")).nxdomain
        assert (await resolver.query("two..dots.test", "A")).nxdomain
        assert (await resolver.query("", "MX")).nxdomain

    run(scenario())
    assert resolver.asked == []


def test_a_name_idna_refuses_is_nxdomain_not_a_traceback() -> None:
    """Found by the web API's schema tests: check-sender of a control character raised from inside c-ares."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as silent:
        silent.bind(("127.0.0.1", 0))
        resolver = Resolver([f"127.0.0.1:{silent.getsockname()[1]}"], timeout=0.3)

        async def scenario() -> None:
            try:
                assert (await resolver.query("\x81", "MX")).nxdomain
                assert (await resolver.query("a\u0085b.test", "A")).nxdomain
            finally:
                resolver.close()

        run(scenario())


def test_a_server_that_never_answers_is_a_temporary_failure_after_the_timeout() -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as silent:
        silent.bind(("127.0.0.1", 0))
        port = silent.getsockname()[1]
        resolver = Resolver([f"127.0.0.1:{port}"], timeout=0.3)

        async def scenario() -> None:
            try:
                with pytest.raises(DnsTempError) as caught:
                    await resolver.query("good.test", "A")
            finally:
                resolver.close()
            assert "timeout" in caught.value.problem.lower() or "seconds" in caught.value.problem

        run(scenario())


def test_a_closed_port_is_a_temporary_failure() -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    resolver = Resolver([f"127.0.0.1:{port}"], timeout=1.0)

    async def scenario() -> None:
        with pytest.raises(DnsTempError):
            await resolver.query("good.test", "A")

    run(scenario())


def test_reverse_and_list_names() -> None:
    assert reverse_name("192.0.2.7") == "7.2.0.192.in-addr.arpa"
    assert dnsbl_name("192.0.2.7", "zen.spamhaus.org.") == "7.2.0.192.zen.spamhaus.org"
    assert dnsbl_name("2001:db8::1", "bl.test").startswith("1.0.0.0.")
    assert dnsbl_name("2001:db8::1", "bl.test").endswith(".8.b.d.0.1.0.0.2.bl.test")
    assert valid_name("mail.example.test")
    assert not valid_name("x" * 254)


@pytest.mark.parametrize(
    ("server", "used"),
    [("127.0.0.1:5353", "127.0.0.1:5353"), ("127.0.0.1", "127.0.0.1:53"), ("[::1]:5353", "[::1]:5353")],
)
def test_nameservers_take_host_and_port(server: str, used: str) -> None:
    assert Resolver([server]).nameservers == [used]
