"""Trace search latency on a 10-million-event SQLite store (the message index), against zgrep over the
same events as logs.

    .venv/bin/python bench/trace_search.py [--dir /tmp/mailwarden-bench] [--events 10000000] [--runs 20]

Generates (once; reused on later runs) a store with ~1.4 M messages over 30 days: most of them
spam refused at RCPT, some greylisted, a fifth delivered and then fetched (and mostly deleted)
over POP3, for 500 customer domains of which one (customer0.example) has a tenth of the
mailboxes - the events as our gateway and POP3 server write them (with their message keys),
then the message index built from them (`Store.reindex`, the same fold the writer uses) - plus
the same events as daily gzip-compressed log files, one line per event.

Then it times, warm (after one untimed pass) and cold (the store's pages evicted from the page
cache before each query with posix_fadvise(DONTNEED), and a new connection), each kind of query
through the real code - the page of the message index (`search_index`, what the web center
calls) and the page with its 50 messages loaded in full (`search`, what `mailwarden trace`
prints) - and prints p50/p95; and zgrep over the logs for the kinds it can answer.
"""

from __future__ import annotations

import argparse
import gzip
import json
import os
import random
import sqlite3
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from mailwarden.events import FIELDS, us_to_iso
from mailwarden.messages.keys import CONNECTION_KINDS
from mailwarden.refs import encode
from mailwarden.store import Store
from mailwarden.store.sqlite import SqliteStore
from mailwarden.trace.search import AddressFilter, SearchSpec, count, search, search_index

DAY_US = 86400 * 1_000_000
DAYS = 30
START_US = 1_800_000_000_000_000
END_US = START_US + DAYS * DAY_US
BIG = "customer0.example"
INSERT = f"INSERT INTO events ({', '.join(FIELDS)}) VALUES ({', '.join('?' for _ in FIELDS)})"


class World:
    """The population: our mailboxes (a tenth of them at one big customer), spam targets, sending servers."""

    def __init__(self, rng: random.Random) -> None:
        self.rng = rng
        self.domains = [f"customer{n}.example" for n in range(500)]
        self.mailboxes = [f"user{n}@{BIG if n % 10 == 0 else self.domains[n % 499 + 1]}" for n in range(20_000)]
        self.spam_ips = [
            f"{rng.randint(1, 223)}.{rng.randint(0, 255)}.{rng.randint(0, 255)}.{rng.randint(1, 254)}"
            for _ in range(100_000)
        ]
        self.good_ips = [f"198.51.{n // 250}.{n % 250 + 1}" for n in range(2_000)]
        self.pop_ips = [f"203.0.{n // 250}.{n % 250 + 1}" for n in range(5_000)]


def row(ts: int, kind: str, ref: str, client_ip: str, **f: Any) -> tuple[Any, ...]:
    detail = f.pop("detail", None)
    values = {
        "ts": ts,
        "node": "mx1",
        "source": f.pop("source", "gateway"),
        "kind": kind,
        "session": f.pop("session", ref),
        "ref": ref,
        "client_ip": client_ip,
        "message_key": None if kind in CONNECTION_KINDS else ref,  # as the gateway and POP3 stamp them
        **f,
    }
    values["detail"] = json.dumps(detail, separators=(",", ":")) if detail else None
    return tuple(values.get(name) for name in FIELDS)


def messages(world: World, total_events: int) -> Iterator[list[tuple[Any, ...]]]:
    rng = world.rng
    produced, serial = 0, 0
    while produced < total_events:
        serial += 1
        ts = START_US + int(rng.random() * DAYS * DAY_US)
        ref = encode((ts // 1_000_000 - 1_704_067_200) << 29 | serial % (1 << 29))
        kind = rng.random()
        rows: list[tuple[Any, ...]] = []
        if kind < 0.70:  # spam, refused at RCPT (unknown users, blocklisted clients)
            ip = rng.choice(world.spam_ips)
            sender = f"{rng.choice(['info', 'sales', 'x', 'promo'])}{rng.randint(1, 99999)}@spam{rng.randint(1, 5000)}.example"
            rows += [
                row(ts, "connect", ref, ip, detail={"port": 40000}),
                row(ts + 50, "helo", ref, ip, helo=f"host{rng.randint(1, 9999)}"),
            ]
            rows.append(row(ts + 100, "mail", ref, ip, sender=sender))
            for n in range(rng.randint(1, 3)):
                target = (
                    rng.choice(world.mailboxes)
                    if rng.random() < 0.5
                    else f"nobody{rng.randint(1, 10**6)}@{rng.choice(world.domains)}"
                )
                reason = rng.choice(["rcpt.unknown_user", "client.dnsbl", "client.dynamic_rdns"])
                reply = f"550 5.7.1 refused ({reason}) ref={ref}"
                rows.append(
                    row(
                        ts + 200 + n,
                        "reject",
                        ref,
                        ip,
                        sender=sender,
                        recipient=target,
                        smtp_code=550,
                        enhanced_code="5.7.1",
                        reply=reply,
                        reason=reason,
                        detail={"stage": "rcpt"},
                    )
                )
        elif kind < 0.80:  # greylisted first attempt
            ip = rng.choice(world.good_ips)
            sender = f"news{rng.randint(1, 999)}@sender{rng.randint(1, 900)}.example"
            target = rng.choice(world.mailboxes)
            rows += [
                row(ts, "connect", ref, ip),
                row(ts + 50, "helo", ref, ip, helo="mail.sender.example"),
                row(ts + 100, "mail", ref, ip, sender=sender),
            ]
            rows.append(
                row(
                    ts + 200,
                    "tempfail",
                    ref,
                    ip,
                    sender=sender,
                    recipient=target,
                    smtp_code=451,
                    enhanced_code="4.7.1",
                    reply=f"451 4.7.1 Greylisted ref={ref}",
                    reason="greylisted",
                    detail={"stage": "rcpt"},
                )
            )
        else:  # delivered, later fetched over POP3 and mostly deleted
            ip = rng.choice(world.good_ips)
            sender = f"person{rng.randint(1, 99999)}@sender{rng.randint(1, 900)}.example"
            target = rng.choice(world.mailboxes)
            msgid = f"<{serial}.{rng.randint(1, 10**9)}@sender.example>"
            uid = f"{ts // 1_000_000}.M{serial}P1.mx1,S=4000"
            rows += [
                row(ts, "connect", ref, ip),
                row(ts + 50, "helo", ref, ip, helo="mail.sender.example"),
                row(ts + 100, "mail", ref, ip, sender=sender),
            ]
            rows.append(row(ts + 150, "rcpt", ref, ip, sender=sender, recipient=target, detail={"mailbox": target}))
            rows.append(row(ts + 300, "data", ref, ip, sender=sender, size=4000, message_id=msgid))
            rows.append(
                row(
                    ts + 400,
                    "deliver",
                    ref,
                    ip,
                    sender=sender,
                    recipient=target,
                    message_id=msgid,
                    reason="delivered",
                    detail={"mailbox": target, "folder": "INBOX", "uid": uid},
                )
            )
            rows.append(
                row(
                    ts + 410,
                    "accept",
                    ref,
                    ip,
                    sender=sender,
                    message_id=msgid,
                    smtp_code=250,
                    enhanced_code="2.0.0",
                    reply=f"250 2.0.0 Message accepted ref={ref}",
                    reason="delivered",
                )
            )
            rows.append(row(ts + 500, "disconnect", ref, ip))
            fetch = ts + rng.randint(60, 3 * 3600) * 1_000_000
            pop_ip = rng.choice(world.pop_ips)
            session = f"P{serial}"
            rows.append(
                row(
                    fetch,
                    "retrieve",
                    ref,
                    pop_ip,
                    source="pop3",
                    session=session,
                    recipient=target,
                    detail={"uid": uid},
                )
            )
            if rng.random() < 0.8:
                rows.append(
                    row(
                        fetch + 1000,
                        "delete",
                        ref,
                        pop_ip,
                        source="pop3",
                        session=session,
                        recipient=target,
                        detail={"uid": uid},
                    )
                )
        if kind < 0.80:
            rows.append(row(ts + 900, "disconnect", ref, ip))
        produced += len(rows)
        yield rows


def log_line(values: tuple[Any, ...]) -> str:
    e = dict(zip(FIELDS, values, strict=True))
    parts = [
        us_to_iso(e["ts"]),
        "mx1",
        f"mailwarden/{e['source']}:",
        e["kind"],
        f"ref={e['ref']}",
        f"client={e['client_ip']}",
    ]
    for name in ("helo", "sender", "recipient", "message_id", "reason"):
        if e[name] is not None:
            parts.append(f"{name}=<{e[name]}>" if name in ("sender", "recipient") else f"{name}={e[name]}")
    if e["reply"]:
        parts.append(f'reply="{e["reply"]}"')
    return " ".join(parts) + "\n"


def generate(directory: Path, total: int) -> None:
    db_path = directory / "events.db"
    for stale in directory.glob("events.db*"):
        stale.unlink()
    SqliteStore(db_path).close()  # the schema with every migration (indexes included)
    conn = sqlite3.connect(db_path, isolation_level=None)
    conn.execute("PRAGMA synchronous=OFF")
    conn.execute("PRAGMA cache_size=-2000000")  # 2 GB: index pages stay in memory while 10 M rows go in
    logs = {day: gzip.open(directory / f"mail.log.{day:02d}.gz", "wt", compresslevel=6) for day in range(DAYS)}  # noqa: SIM115
    batch: list[tuple[Any, ...]] = []
    started, written = time.monotonic(), 0
    for rows in messages(World(random.Random(7)), total):
        batch.extend(rows)
        for values in rows:
            logs[min((values[0] - START_US) // DAY_US, DAYS - 1)].write(log_line(values))
        if len(batch) >= 200_000:
            conn.execute("BEGIN")
            conn.executemany(INSERT, batch)
            conn.execute("COMMIT")
            written += len(batch)
            batch.clear()
            print(f"  {written:,} events, {written / (time.monotonic() - started):,.0f}/s", file=sys.stderr, flush=True)
    conn.execute("BEGIN")
    conn.executemany(INSERT, batch)
    conn.execute("COMMIT")
    conn.close()
    for handle in logs.values():
        handle.close()
    store = SqliteStore(db_path)
    started = time.monotonic()
    rows_written = store.reindex(
        lambda done: print(f"  indexed {done:,} events", file=sys.stderr, flush=True) if done % 500_000 < 10 else None
    )
    print(f"  message index: {rows_written:,} rows in {time.monotonic() - started:.0f} s", file=sys.stderr)
    store.close()
    conn = sqlite3.connect(db_path, isolation_level=None)
    conn.execute("ANALYZE")
    conn.close()
    (directory / "complete").write_text(str(total))


def percentile(values: list[float], pct: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(pct / 100 * (len(ordered) - 1)))]


def timed(action: Callable[[], object]) -> float:
    started = time.perf_counter()
    action()
    return (time.perf_counter() - started) * 1000


def evict(directory: Path) -> None:
    """Push the store's pages out of the page cache (only ours: the machine is shared)."""
    for path in directory.glob("events.db*"):
        fd = os.open(path, os.O_RDONLY)
        try:
            os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
        finally:
            os.close(fd)


def zgrep(pattern: str, files: list[Path]) -> None:
    subprocess.run(["zgrep", "-hF", pattern, *map(str, files)], stdout=subprocess.DEVNULL, check=False)


Case = tuple[str, list[SearchSpec], Callable[[SearchSpec], tuple[str, list[Path]]] | None]
Lookup = Callable[[str, tuple[Any, ...]], tuple[Any, ...] | None]  # one row of `?`-placeholder SQL


def query_cases(lookup: Lookup, per_kind: int, logs: Path | None) -> list[Case]:
    """The kinds of query, each with `per_kind` specs drawn from the store's own events (`lookup` runs SQL
    on it), and the zgrep that answers the same from the daily logs in `logs` where one can."""
    rng = random.Random(11)
    max_id = (lookup("SELECT max(id) FROM events", ()) or (0,))[0]

    def sample(kind: str, column: str) -> list[tuple[Any, int]]:
        found: list[tuple[Any, int]] = []
        while len(found) < per_kind:
            hit = lookup(
                f"SELECT {column}, ts FROM events WHERE id >= ? AND kind = ? AND {column} IS NOT NULL"
                " ORDER BY id LIMIT 1",
                (rng.randint(1, max_id), kind),
            )
            if hit:
                found.append((hit[0], hit[1]))
        return found

    all_logs = sorted(logs.glob("mail.log.*.gz")) if logs else []

    def window_logs(ts: int) -> list[Path]:
        last = min((ts - START_US) // DAY_US, DAYS - 1)
        return [p for p in all_logs if last - 6 <= int(p.name.split(".")[2]) <= last]

    month = START_US
    recipients = sample("deliver", "recipient")
    domains = [str(address).rpartition("@")[2] for address, _ in sample("reject", "recipient")]
    networks = [str(ip).rpartition(".")[0] + ".0/24" for ip, _ in sample("reject", "client_ip")]
    return [
        (
            "recipient + 7 days",
            [
                SearchSpec(
                    recipient=AddressFilter("exact", v),
                    since_us=ts - 7 * DAY_US + DAY_US // 2,
                    until_us=ts + DAY_US // 2,
                )
                for v, ts in recipients
            ],
            (lambda s: (f"recipient=<{s.recipient.value if s.recipient else ''}>", window_logs(s.until_us or END_US)))
            if logs
            else None,
        ),
        (
            "domain + status + 30 days",
            [
                SearchSpec(
                    recipient=AddressFilter("domain", d),
                    status=rng.choice(("rejected", "delivered", "deleted")),
                    since_us=month,
                )
                for d in domains
            ],
            None,
        ),
        ("client network /24", [SearchSpec(client=n) for n in networks], None),
        (
            "ref",
            [SearchSpec(ref=v) for v, _ in sample("deliver", "ref")],
            (lambda s: (f"ref={s.ref}", all_logs)) if logs else None,
        ),
    ]


HEADER = (
    f"{'query':28} {'index p50':>9} {'p95':>7} {'cold p50':>9} {'p95':>7}"
    f" {'+traces p50':>12} {'p95':>7} {'cold p50':>9} {'p95':>7} {'zgrep p50':>10}"
)


def measure_cases(
    cases: list[Case],
    store: Store,
    cold_store: Callable[[], Store],
    runs: int,
    cold_runs: int,
    grep_runs: int,
) -> None:
    """Time each kind through the real trace code and print a line each: warm on `store` (after one
    untimed pass), cold on a store `cold_store` opens after evicting what it caches; then page 1
    against page 100 of the big customer and the status counts. The same for every backend."""

    def measure(
        action: Callable[[Store, SearchSpec], object], specs: list[SearchSpec]
    ) -> tuple[list[float], list[float]]:
        for spec in specs[:runs]:
            action(store, spec)  # warm-up pass
        warm = [timed(lambda s=spec: action(store, s)) for spec in specs[:runs]]
        cold = []
        for spec in specs[:cold_runs]:
            fresh = cold_store()
            cold.append(timed(lambda s=spec, f=fresh: action(f, s)))
            fresh.close()
        return warm, cold

    def index_page(db: Store, spec: SearchSpec) -> object:
        return search_index(db, spec)

    def full_page(db: Store, spec: SearchSpec) -> object:
        return search(db, spec, retention_days=3650)

    print(HEADER)
    for name, specs, grep_of in cases:
        warm, cold = measure(index_page, specs)
        traced_warm, traced_cold = measure(full_page, specs)
        grep = [timed(lambda s=spec, g=grep_of: zgrep(*g(s))) for spec in specs[:grep_runs]] if grep_of else []
        print(
            f"{name:28} {percentile(warm, 50):7.1f}ms {percentile(warm, 95):5.1f}ms"
            f" {percentile(cold, 50):7.1f}ms {percentile(cold, 95):5.1f}ms"
            f" {percentile(traced_warm, 50):10.1f}ms {percentile(traced_warm, 95):5.1f}ms"
            f" {percentile(traced_cold, 50):7.1f}ms {percentile(traced_cold, 95):5.1f}ms"
            + (f" {percentile(grep, 50):8.0f}ms" if grep else f" {'-':>10}"),
            flush=True,
        )

    # page 1 against page 100 of the big customer's messages (keyset: the cursor of page 99's last message)
    month = START_US
    domain = SearchSpec(recipient=AddressFilter("domain", BIG), since_us=month)
    cursor = None
    for _ in range(99):
        cursor = search_index(store, SearchSpec(recipient=domain.recipient, since_us=month, cursor=cursor)).next_cursor
    page100 = SearchSpec(recipient=domain.recipient, since_us=month, cursor=cursor)
    first = [timed(lambda: search_index(store, domain)) for _ in range(runs)]
    hundredth = [timed(lambda: search_index(store, page100)) for _ in range(runs)]
    print(
        f"{BIG}, 30 days, 50 per page: page 1 p50 {percentile(first, 50):.1f}ms p95 {percentile(first, 95):.1f}ms;"
        f" page 100 p50 {percentile(hundredth, 50):.1f}ms p95 {percentile(hundredth, 95):.1f}ms"
        f" ({percentile(hundredth, 50) / percentile(first, 50):.2f}x)"
    )
    small = next(s.recipient for name, specs, _ in cases if name.startswith("domain") for s in specs)
    for name, spec in (
        (f"counts by status and reason, {BIG}, 30 days", domain),
        ("counts by status and reason, a small domain, 30 days", SearchSpec(recipient=small, since_us=month)),
    ):
        counted = count(store, spec)
        warm = [timed(lambda s=spec: count(store, s)) for _ in range(runs)]
        cold = []
        for _ in range(cold_runs):
            fresh = cold_store()
            cold.append(timed(lambda s=spec, f=fresh: count(f, s)))
            fresh.close()
        print(
            f"{name}: {counted.total:,} recipients; warm p50 {percentile(warm, 50):.1f}ms p95 {percentile(warm, 95):.1f}ms,"
            f" cold p50 {percentile(cold, 50):.1f}ms p95 {percentile(cold, 95):.1f}ms",
            flush=True,
        )


def measure_sqlite(directory: Path, runs: int, cold_runs: int, grep_runs: int) -> None:
    """The store in `directory` (made by `generate`), with zgrep over its logs for comparison."""
    conn = sqlite3.connect(directory / "events.db")
    total = conn.execute("SELECT count(*) FROM events").fetchone()[0]
    indexed = conn.execute("SELECT count(*) FROM message_index").fetchone()[0]
    cases = query_cases(lambda sql, params: conn.execute(sql, params).fetchone(), max(runs, cold_runs), directory)
    conn.close()
    all_logs = sorted(directory.glob("mail.log.*.gz"))
    size_mb = (directory / "events.db").stat().st_size / 1e6
    logs_mb = sum(p.stat().st_size for p in all_logs) / 1e6
    print(
        f"store: {total:,} events, {indexed:,} index rows, {size_mb:,.0f} MB SQLite; "
        f"logs: {len(all_logs)} daily gzip files, {logs_mb:,.0f} MB"
    )

    def cold_store() -> Store:
        fresh = SqliteStore(directory / "events.db")
        evict(directory)
        return fresh

    store = SqliteStore(directory / "events.db")
    measure_cases(cases, store, cold_store, runs, cold_runs, grep_runs)
    store.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dir", default="/tmp/mailwarden-bench", help="where the store and logs live (reused)")
    parser.add_argument("--events", type=int, default=10_000_000)
    parser.add_argument("--runs", type=int, default=20, help="queries per kind, warm")
    parser.add_argument(
        "--cold-runs", type=int, default=10, help="queries per kind with the store's pages evicted first"
    )
    parser.add_argument("--grep-runs", type=int, default=3, help="zgrep runs per kind (each reads the logs)")
    args = parser.parse_args()
    directory = Path(args.dir)
    directory.mkdir(parents=True, exist_ok=True)
    marker = directory / "complete"
    if not marker.exists() or marker.read_text() != str(args.events):
        print(f"generating {args.events:,} events in {directory} (once) ...", file=sys.stderr)
        generate(directory, args.events)
    measure_sqlite(directory, args.runs, args.cold_runs, args.grep_runs)


if __name__ == "__main__":
    main()
