"""DNS lookups/s (cold and warm cache) and the gateway's msgs/s with the network checks on vs off.

    .venv/bin/python -m bench.network_checks [--names 20000] [--messages 600] [--concurrency 20]

Starts NSD and rbldnsd on loopback (tests/support/dns.py) with the test zones plus `--names`
extra names, then:
1. resolves every name once (cold: each a real query) and again (warm: our cache), with our
   resolver (c-ares) and, side by side, dnspython's asyncio resolver (with its LRU cache);
2. runs two `mailwarden serve` instances, one with only `recipients` and `size`, one with all
   network and sender checks (ratelimit, dnsbl on two lists, rdns, helo, sender_domain, spf),
   warms them up, and sends `--messages` mails from 127.0.0.10, one connection per message as an
   MX sees them, `--concurrency` at a time; prints msgs/s of each and the ratio.
Client and servers share the machine's cores: compare the ratio, not the absolute figures.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import tempfile
import time
from pathlib import Path

import aiosmtplib
import dns.asyncresolver
import dns.resolver
from tests.support.dns import TEST_LISTS, TEST_ZONES, gateway_config, running_dns
from tests.support.mailwarden import running

from mailwarden.dns import Resolver

MESSAGE = "From: <alice@good.test>\r\nTo: <bob@example.test>\r\nSubject: bench\r\n\r\n" + "x" * 2000 + "\r\n"
ALL_CHECKS = ["ratelimit", "dnsbl", "rdns", "helo", "recipients", "sender_domain", "spf", "size"]


def bench_zone(names: int) -> str:
    lines = [
        "$ORIGIN bench.test.",
        "$TTL 3600",
        "@ IN SOA ns1.test. hostmaster.test. 1 3600 600 86400 60",
        "@ IN NS ns1.test.",
    ]
    lines += [f"h{i} IN A 10.{i >> 16 & 255}.{i >> 8 & 255}.{i & 255}" for i in range(names)]
    return "\n".join(lines) + "\n"


async def ours(server: str, names: list[str]) -> tuple[float, float]:
    resolver = Resolver([server], timeout=5.0)
    try:
        rates = []
        for _ in range(2):
            started = time.perf_counter()
            answers = await asyncio.gather(*(resolver.query(n, "A") for n in names))
            rates.append(len(names) / (time.perf_counter() - started))
            assert all(a.records for a in answers)
        return rates[0], rates[1]
    finally:
        resolver.close()


async def dnspython(server: str, names: list[str]) -> tuple[float, float]:
    host, port = server.split(":")
    resolver = dns.asyncresolver.Resolver(configure=False)
    resolver.nameservers = [host]
    resolver.port = int(port)
    resolver.lifetime = 5.0
    resolver.cache = dns.resolver.LRUCache(len(names) * 2)
    slots = asyncio.Semaphore(256)  # the same bound as ours

    async def one(name: str) -> None:
        async with slots:
            await resolver.resolve(name, "A")

    rates = []
    for _ in range(2):
        started = time.perf_counter()
        await asyncio.gather(*(one(n) for n in names))
        rates.append(len(names) / (time.perf_counter() - started))
    return rates[0], rates[1]


async def blast(port: int, messages: int, concurrency: int) -> float:
    slots = asyncio.Semaphore(concurrency)
    failures = 0

    async def one() -> None:
        nonlocal failures
        async with slots:
            client = aiosmtplib.SMTP(
                hostname="127.0.0.1",
                port=port,
                source_address=("127.0.0.10", 0),
                local_hostname="mail.good.test",
                timeout=60,
                start_tls=False,
            )
            await client.connect()
            try:
                await client.sendmail("alice@good.test", ["bob@example.test"], MESSAGE)
            except aiosmtplib.SMTPException:
                failures += 1
            finally:
                await client.quit()

    started = time.perf_counter()
    await asyncio.gather(*(one() for _ in range(messages)))
    elapsed = time.perf_counter() - started
    if failures:
        raise RuntimeError(f"{failures} of {messages} messages were not accepted")
    return messages / elapsed


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--names", type=int, default=20_000)
    parser.add_argument("--messages", type=int, default=600)
    parser.add_argument("--concurrency", type=int, default=20)
    args = parser.parse_args()
    names = [f"h{i}.bench.test" for i in range(args.names)]
    with tempfile.TemporaryDirectory(prefix="mailwarden-bench-") as tmp:
        root = Path(tmp)
        zones = {**TEST_ZONES, "bench.test": bench_zone(args.names)}
        with running_dns(root / "dns", zones, TEST_LISTS) as servers:
            print(f"DNS lookups/s, {args.names} distinct A names against NSD on loopback, 256 in flight")
            cold, warm = asyncio.run(ours(servers.nsd, names))
            peer_cold, peer_warm = asyncio.run(dnspython(servers.nsd, names))
            print(f"  {'':28} {'cold':>10} {'warm':>10}")
            print(f"  {'mailwarden (aiodns/c-ares)':28} {cold:10,.0f} {warm:10,.0f}")
            print(f"  {'dnspython asyncresolver':28} {peer_cold:10,.0f} {peer_warm:10,.0f}")
            print(f"  {'ratio mailwarden/dnspython':28} {cold / peer_cold:10.2f} {warm / peer_warm:10.2f}")

            off = {"checks": {"order": ["recipients", "size"]}}
            on = gateway_config(servers, ALL_CHECKS, ratelimit={"connections_per_minute": 0, "messages_per_minute": 0})
            results = {}
            for label, config in (("checks off", off), ("checks on", on)):
                with running(root / label.replace(" ", "-"), config) as gateway:
                    asyncio.run(blast(gateway.smtp_port, 50, args.concurrency))  # warm caches and code paths
                    results[label] = asyncio.run(blast(gateway.smtp_port, args.messages, args.concurrency))
            print()
            print(
                f"Gateway msgs/s, {args.messages} messages of 2 kB, one connection each, "
                f"{args.concurrency} at a time, warm DNS cache"
            )
            for label, rate in results.items():
                print(f"  {label:28} {rate:10,.0f}")
            print(f"  {'ratio on/off':28} {results['checks on'] / results['checks off']:10.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
