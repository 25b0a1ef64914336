"""The resolver against a real authoritative server (NSD) and rbldnsd on loopback."""

from __future__ import annotations

import asyncio

import pytest

from mailwarden.dns import MX, DnsTempError, Resolver, dnsbl_name
from tests.support.dns import CLIENTS, DnsServers

pytestmark = pytest.mark.integration


def test_definitive_answers_from_a_real_server(dns_servers: DnsServers) -> None:
    resolver = Resolver([dns_servers.nsd])

    async def scenario() -> None:
        good = await resolver.query("good.test", "MX")
        assert good.records == (MX(10, "mail.good.test"),) and good.ttl == 300
        assert (await resolver.query("good.test", "TXT")).records == (b"v=spf1 ip4:127.0.0.0/24 -all",)
        assert (await resolver.query("nullmx.test", "MX")).records == (MX(0, ""),)
        assert (await resolver.query("iplit.test", "MX")).records == (MX(10, "1.2.3.4"),)
        missing = await resolver.query("missing.test", "MX")
        assert missing.nxdomain and not missing.records
        nodata = await resolver.query("amx.test", "MX")
        assert not nodata.nxdomain and not nodata.records
        assert (await resolver.ptr(CLIENTS["clean"])).records == ("mail.good.test",)
        assert (await resolver.ptr(CLIENTS["no_ptr"])).nxdomain
        assert await resolver.host_addresses("mail.good.test") == ["127.0.0.10"]

    asyncio.run(scenario())


def test_refused_and_a_stopped_server_are_temporary_failures(dns_servers: DnsServers) -> None:
    resolver = Resolver([dns_servers.nsd], timeout=1.0)

    async def scenario() -> None:
        with pytest.raises(DnsTempError, match="refused"):
            await resolver.query("unserved.example", "MX")
        assert (await resolver.query("good.test", "MX")).records
        dns_servers.stop_server("nsd")
        with pytest.raises(DnsTempError):
            await resolver.query("amx.test", "A")
        # what was learnt before the outage is still known, for its TTL
        assert (await resolver.query("good.test", "MX")).records

    asyncio.run(scenario())


def test_dns_list_answers_and_their_txt(dns_servers: DnsServers) -> None:
    lists = Resolver([dns_servers.rbldnsd])

    async def scenario() -> None:
        name = dnsbl_name(CLIENTS["pbl"], "zen.dnsbl.test")
        assert (await lists.query(name, "A")).records == ("127.0.0.10",)
        assert b"query/ip/127.0.0.11" in (await lists.query(name, "TXT")).records[0]
        assert (await lists.query(dnsbl_name(CLIENTS["clean"], "zen.dnsbl.test"), "A")).nxdomain

    asyncio.run(scenario())


def test_a_burst_of_lookups_is_answered_completely(dns_servers: DnsServers) -> None:
    resolver = Resolver([dns_servers.rbldnsd], max_concurrency=64, cache_size=0)

    async def scenario() -> None:
        names = [dnsbl_name(f"10.{i // 256}.{i % 256}.1", "zen.dnsbl.test") for i in range(2000)]
        answers = await asyncio.gather(*(resolver.query(n, "A") for n in names))
        assert all(a.nxdomain for a in answers)

    asyncio.run(scenario())
    assert resolver.stats["tempfail"] == 0
