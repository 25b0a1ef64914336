"""Trace search latency on PostgreSQL at 100 million events, next to the 10-million-event SQLite store
of bench/trace_search.py, in the same run (issue 14's target: p95 < 100 ms warm at 100 M).

    .venv/bin/python -m bench.postgres_trace [--dir /tmp/mailwarden-pg-bench] [--events 100000000]
        [--sqlite-dir /tmp/mailwarden-bench] [--runs 20] [--cold-runs 10]

A private PostgreSQL 15 cluster lives in DIR/cluster (tests/support/postgres.py, fsync on, loopback)
and is kept between runs. The first run generates the events there, once: the same population
and distributions as trace_search.py's generator (70 % spam refused at RCPT, 10 % greylisted,
20 % delivered then fetched over POP3 and mostly deleted; 500 customer domains, one with a tenth
of the mailboxes; 30 days), made by PostgreSQL itself (INSERT ... SELECT over generate_series, a
day at a time) instead of row by row from Python, which would take hours at this size. The
database is the store's own (`PostgresStore` migrates it first); the indexes of `events` and
`message_index` are dropped for the load and made again from their own definitions after it,
so the schema is exactly the store's. The message-index rows are made by SQL too, and a sample
of messages is folded again by the store's code (`postgres_messages.refold`) to check that they
are the rows the store writes itself.

Then the query kinds of trace_search.py (`query_cases`, `measure_cases`: the same code) run through
the real trace code on both stores, warm and cold. Cold on PostgreSQL: the server restarted (its
shared buffers gone) and the cluster's files evicted from the page cache with
posix_fadvise(DONTNEED) - only ours, the machine is shared - before each query.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import psycopg
from tests.support.postgres import Postgres, kept_postgres

from bench.trace_search import DAY_US, DAYS, START_US, measure_cases, measure_sqlite, query_cases
from mailwarden.store import Store, postgres_messages
from mailwarden.store.postgres import PostgresStore

EVENTS_PER_MESSAGE = 0.7 * 6 + 0.1 * 5 + 0.2 * 9.8  # spam 3+1..3+1, greylisted 5, delivered 9 + 80 % a delete
SLOTS = 12  # event ids: message serial * SLOTS + the event's place in its message
# For the bench cluster: memory for the index builds, fewer checkpoints during the load, and index
# builds without WAL (wal_level minimal: 13 GB less to write at 100 M). fsync stays on.
SETTINGS = (
    "shared_buffers = 1GB\nmaintenance_work_mem = 1GB\nmax_wal_size = 4GB\ncheckpoint_timeout = 30min\n"
    "wal_level = minimal\nmax_wal_senders = 0\n"
)

# The population, as trace_search.World makes it (addresses from numbers drawn with random()).
FUNCTIONS = """
CREATE FUNCTION pg_temp.pick(n integer) RETURNS integer LANGUAGE sql AS $$ SELECT floor(random() * n)::integer $$;
CREATE FUNCTION pg_temp.mailbox(n integer) RETURNS text LANGUAGE sql IMMUTABLE AS $$
    SELECT 'user' || n || '@' || CASE WHEN n % 10 = 0 THEN 'customer0.example' ELSE 'customer' || (n % 499 + 1) || '.example' END $$;
CREATE FUNCTION pg_temp.spam_ip(k integer) RETURNS text LANGUAGE sql IMMUTABLE AS $$
    SELECT (1 + (h & 255) % 223) || '.' || ((h >> 8) & 255) || '.' || ((h >> 16) & 255) || '.' || (1 + ((h >> 24) & 255) % 254)
    FROM (SELECT hashint4(k) AS h) AS x $$;
CREATE FUNCTION pg_temp.ref(v bigint) RETURNS text LANGUAGE sql IMMUTABLE AS $$
    SELECT string_agg(substr('0123456789ABCDEFGHJKMNPQRSTVWXYZ', ((v >> (5 * (11 - i))) & 31)::integer + 1, 1), '' ORDER BY i)
    FROM generate_series(0, 11) AS i $$;
CREATE UNLOGGED TABLE bench_messages (
    serial bigint, ts bigint, shape integer, ref text, ip text, sender text, helo text,
    targets text[], reasons text[], msgid text, uid text, fetched bigint, pop_ip text, deleted boolean
);
"""

# One day's messages (%(first)s .. %(last)s are serials, %(day_start)s its first microsecond):
# shape 0 spam refused at RCPT, 1 greylisted, 2 delivered and fetched.
MESSAGES = """
INSERT INTO bench_messages
SELECT serial, ts, shape, pg_temp.ref(((ts / 1000000 - 1704067200) << 29) | (serial %% 536870912)),
    CASE WHEN shape = 0 THEN pg_temp.spam_ip(pg_temp.pick(100000))
         ELSE '198.51.' || (g / 250) || '.' || (g %% 250 + 1) END,
    CASE WHEN shape = 0 THEN (ARRAY['info', 'sales', 'x', 'promo'])[1 + pg_temp.pick(4)] || (1 + pg_temp.pick(99999))
                             || '@spam' || (1 + pg_temp.pick(5000)) || '.example'
         WHEN shape = 1 THEN 'news' || (1 + pg_temp.pick(999)) || '@sender' || (1 + pg_temp.pick(900)) || '.example'
         ELSE 'person' || (1 + pg_temp.pick(99999)) || '@sender' || (1 + pg_temp.pick(900)) || '.example' END,
    CASE WHEN shape = 0 THEN 'host' || (1 + pg_temp.pick(9999)) ELSE 'mail.sender.example' END,
    CASE WHEN shape = 0 THEN ARRAY(
            SELECT CASE WHEN random() < 0.5 THEN pg_temp.mailbox(pg_temp.pick(20000))
                        ELSE 'nobody' || (1 + pg_temp.pick(1000000)) || '@customer' || pg_temp.pick(500) || '.example' END
            FROM generate_series(1, targets) AS t)
         ELSE ARRAY[pg_temp.mailbox(pg_temp.pick(20000))] END,
    ARRAY(SELECT (ARRAY['rcpt.unknown_user', 'client.dnsbl', 'client.dynamic_rdns'])[1 + pg_temp.pick(3)]
          FROM generate_series(1, targets) AS t),
    '<' || serial || '.' || (1 + pg_temp.pick(1000000000)) || '@sender.example>',
    (ts / 1000000) || '.M' || serial || 'P1.mx1,S=4000',
    ts + (60 + pg_temp.pick(3 * 3600 - 59))::bigint * 1000000,
    '203.0.' || (p / 250) || '.' || (p %% 250 + 1),
    random() < 0.8
FROM (
    SELECT serial, %(day_start)s + floor(random() * 86400000000)::bigint AS ts,
        CASE WHEN k < 0.7 THEN 0 WHEN k < 0.8 THEN 1 ELSE 2 END AS shape,
        CASE WHEN k < 0.7 THEN 1 + pg_temp.pick(3) ELSE 1 END AS targets,
        pg_temp.pick(2000) AS g, pg_temp.pick(5000) AS p
    FROM (SELECT serial, random() AS k FROM generate_series(%(first)s::bigint, %(last)s::bigint) AS serial OFFSET 0) AS drawn
    OFFSET 0
) AS m
"""

# Their events, as the gateway and the POP3 server write them (trace_search.messages).
_EVENT_COLUMNS = (
    "id, ts, node, source, kind, session, ref, client_ip, helo, sender, recipient,"
    " smtp_code, enhanced_code, reply, reason, detail, size, message_id, message_key"
)
EVENTS = f"""
INSERT INTO events ({_EVENT_COLUMNS})
SELECT serial * {SLOTS}, ts, 'mx1', 'gateway', 'connect', ref, ref, ip, NULL::text, NULL::text, NULL::text,
    NULL::integer, NULL::text, NULL::text, NULL::text, CASE WHEN shape = 0 THEN '{{"port":40000}}' END, NULL::bigint,
    NULL::text, NULL::text FROM bench_messages
UNION ALL
SELECT serial * {SLOTS} + 1, ts + 50, 'mx1', 'gateway', 'helo', ref, ref, ip, helo, NULL, NULL, NULL, NULL, NULL, NULL,
    NULL, NULL, NULL, NULL FROM bench_messages
UNION ALL
SELECT serial * {SLOTS} + 2, ts + 100, 'mx1', 'gateway', 'mail', ref, ref, ip, NULL, sender, NULL, NULL, NULL, NULL, NULL,
    NULL, NULL, NULL, ref FROM bench_messages
UNION ALL
SELECT serial * {SLOTS} + 2 + n, ts + 199 + n, 'mx1', 'gateway', 'reject', ref, ref, ip, NULL, sender, target, 550, '5.7.1',
    '550 5.7.1 refused (' || reason || ') ref=' || ref, reason, '{{"stage":"rcpt"}}', NULL, NULL, ref
FROM bench_messages, unnest(targets, reasons) WITH ORDINALITY AS r (target, reason, n) WHERE shape = 0
UNION ALL
SELECT serial * {SLOTS} + 3, ts + 200, 'mx1', 'gateway', 'tempfail', ref, ref, ip, NULL, sender, targets[1], 451, '4.7.1',
    '451 4.7.1 Greylisted ref=' || ref, 'greylisted', '{{"stage":"rcpt"}}', NULL, NULL, ref FROM bench_messages WHERE shape = 1
UNION ALL
SELECT serial * {SLOTS} + 10, ts + 900, 'mx1', 'gateway', 'disconnect', ref, ref, ip, NULL, NULL, NULL, NULL, NULL, NULL,
    NULL, NULL, NULL, NULL, NULL FROM bench_messages WHERE shape < 2
UNION ALL
SELECT serial * {SLOTS} + 3, ts + 150, 'mx1', 'gateway', 'rcpt', ref, ref, ip, NULL, sender, targets[1], NULL, NULL, NULL,
    NULL, '{{"mailbox":"' || targets[1] || '"}}', NULL, NULL, ref FROM bench_messages WHERE shape = 2
UNION ALL
SELECT serial * {SLOTS} + 4, ts + 300, 'mx1', 'gateway', 'data', ref, ref, ip, NULL, sender, NULL, NULL, NULL, NULL,
    NULL, NULL, 4000, msgid, ref FROM bench_messages WHERE shape = 2
UNION ALL
SELECT serial * {SLOTS} + 5, ts + 400, 'mx1', 'gateway', 'deliver', ref, ref, ip, NULL, sender, targets[1], NULL, NULL,
    NULL, 'delivered', '{{"mailbox":"' || targets[1] || '","folder":"INBOX","uid":"' || uid || '"}}', NULL, msgid, ref
FROM bench_messages WHERE shape = 2
UNION ALL
SELECT serial * {SLOTS} + 6, ts + 410, 'mx1', 'gateway', 'accept', ref, ref, ip, NULL, sender, NULL, 250, '2.0.0',
    '250 2.0.0 Message accepted ref=' || ref, 'delivered', NULL, NULL, msgid, ref FROM bench_messages WHERE shape = 2
UNION ALL
SELECT serial * {SLOTS} + 7, ts + 500, 'mx1', 'gateway', 'disconnect', ref, ref, ip, NULL, NULL, NULL, NULL, NULL, NULL,
    NULL, NULL, NULL, NULL, NULL FROM bench_messages WHERE shape = 2
UNION ALL
SELECT serial * {SLOTS} + 8, fetched, 'mx1', 'pop3', 'retrieve', 'P' || serial, ref, pop_ip, NULL, NULL, targets[1], NULL,
    NULL, NULL, NULL, '{{"uid":"' || uid || '"}}', NULL, NULL, ref FROM bench_messages WHERE shape = 2
UNION ALL
SELECT serial * {SLOTS} + 9, fetched + 1000, 'mx1', 'pop3', 'delete', 'P' || serial, ref, pop_ip, NULL, NULL, targets[1],
    NULL, NULL, NULL, NULL, '{{"uid":"' || uid || '"}}', NULL, NULL, ref FROM bench_messages WHERE shape = 2 AND deleted
"""

# Their rows of the message index, as `messages.index.message_rows` folds them (checked by `verify`).
_DOMAIN = "lower(nullif(split_part({0}, '@', 2), ''))"
INDEX = f"""
INSERT INTO message_index
SELECT DISTINCT ON (ref, lower(target)) ref, target, ts + 100, ts + 199 + cardinality(targets), 'mx1', sender,
    {_DOMAIN.format("sender")}, {_DOMAIN.format("target")}, ip, NULL::text, ref, NULL::text, 'rejected', reason, 550, NULL::bigint
FROM bench_messages, unnest(targets, reasons) WITH ORDINALITY AS r (target, reason, n) WHERE shape = 0
UNION ALL
SELECT ref, targets[1], ts + 100, ts + 200, 'mx1', sender, {_DOMAIN.format("sender")}, {_DOMAIN.format("targets[1]")},
    ip, NULL::text, ref, NULL::text, 'tempfailed', 'greylisted', 451, NULL::bigint FROM bench_messages WHERE shape = 1
UNION ALL
SELECT ref, targets[1], ts + 100, fetched + CASE WHEN deleted THEN 1000 ELSE 0 END, 'mx1', sender,
    {_DOMAIN.format("sender")}, {_DOMAIN.format("targets[1]")}, ip, msgid, ref, NULL,
    CASE WHEN deleted THEN 'deleted' ELSE 'retrieved' END,
    CASE WHEN deleted THEN 'access.deleted' ELSE 'access.retrieved' END, 250, 4000
FROM bench_messages WHERE shape = 2
"""


def log(text: str) -> None:
    print(f"  {time.strftime('%H:%M:%S')} {text}", file=sys.stderr, flush=True)


def generate(url: str, total: int) -> None:
    """The store's schema, then `total` events (about) and their index rows, then the indexes."""
    PostgresStore(url).close()  # every migration: the store's own schema
    with psycopg.connect(url, autocommit=True) as conn:
        indexes = conn.execute(
            "SELECT indexname, indexdef FROM pg_indexes WHERE tablename IN ('events', 'message_index')"
            " AND indexname NOT IN (SELECT conname FROM pg_constraint)"
        ).fetchall()
        constraints = conn.execute(
            "SELECT conname, pg_get_constraintdef(oid) FROM pg_constraint"
            " WHERE conrelid = 'message_index'::regclass AND contype = 'u'"
        ).fetchall()
        for name, _ in constraints:
            conn.execute(f"ALTER TABLE message_index DROP CONSTRAINT {name}".encode())
        for name, _ in indexes:
            conn.execute(f"DROP INDEX {name}".encode())
        first_day = START_US // DAY_US
        postgres_messages.ensure_partitions(conn, range(first_day, first_day + DAYS + 1), set())
        conn.execute(FUNCTIONS.encode())
        per_day = round(total / EVENTS_PER_MESSAGE / DAYS)
        started = time.monotonic()
        for day in range(DAYS):
            with conn.transaction():
                conn.execute("TRUNCATE bench_messages")
                params = {"first": day * per_day + 1, "last": (day + 1) * per_day, "day_start": START_US + day * DAY_US}
                conn.execute(MESSAGES, params)
                events = conn.execute(EVENTS.encode()).rowcount
                rows = conn.execute(INDEX.encode()).rowcount
            log(f"day {day + 1}/{DAYS}: {events:,} events, {rows:,} index rows ({time.monotonic() - started:,.0f} s)")
        conn.execute("DROP TABLE bench_messages")
        conn.execute("SELECT setval('events_id_seq', (SELECT max(id) FROM events))")
        for name, definition in [*indexes, *constraints]:
            began = time.monotonic()
            if name in dict(constraints):
                conn.execute(f"ALTER TABLE message_index ADD CONSTRAINT {name} {definition}".encode())
            else:  # a partitioned table's index is defined ON ONLY the parent: here it is built on every partition
                conn.execute(definition.replace(" ON ONLY ", " ON ", 1).encode())
            log(f"{name}: {time.monotonic() - began:,.0f} s")
        began = time.monotonic()
        conn.execute("ANALYZE events")
        conn.execute("VACUUM ANALYZE message_index")  # its visibility map: index-only scans, as autovacuum leaves it
        log(f"ANALYZE: {time.monotonic() - began:,.0f} s")


def verify(url: str, sample: int = 300) -> None:
    """The generated index rows of `sample` messages against what the store's own fold makes of their
    events (rolled back): the bench measures the rows the store would have written."""
    with psycopg.connect(url) as conn:
        rows = int(conn.execute("SELECT count(*) FROM message_index").fetchone()[0])  # type: ignore[index]
        keys = [
            row[0]
            for row in conn.execute(
                "SELECT DISTINCT message_key FROM message_index TABLESAMPLE BERNOULLI (%s) REPEATABLE (7) LIMIT %s",
                (min(100.0, 100 * 2 * sample / max(rows, 1)), sample),
            )
        ]
        select = "SELECT * FROM message_index WHERE message_key = ANY(%s) ORDER BY message_key, lower(recipient)"
        generated = conn.execute(select, (keys,)).fetchall()
        postgres_messages.refold(conn, keys)
        folded = conn.execute(select, (keys,)).fetchall()
        conn.rollback()
    if generated != folded:
        differing = [pair for pair in zip(generated, folded, strict=False) if pair[0] != pair[1]][:3]
        raise SystemExit(f"generated index rows differ from the store's fold: {differing}")
    log(f"{len(keys)} messages' index rows equal the store's own fold")


def evict(directory: Path) -> None:
    """Push the cluster's files out of the page cache (only ours: the machine is shared)."""
    for folder, _, files in os.walk(directory):
        for name in files:
            try:
                fd = os.open(Path(folder, name), os.O_RDONLY)
            except OSError:
                continue  # gone meanwhile (a temporary file)
            try:
                os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
            finally:
                os.close(fd)


@contextmanager
def bench_cluster(directory: Path) -> Iterator[Postgres]:
    with kept_postgres(directory / "cluster", SETTINGS) as server:
        yield server


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dir", default="/tmp/mailwarden-pg-bench", help="where the cluster lives (reused)")
    parser.add_argument("--events", type=int, default=100_000_000)
    parser.add_argument("--sqlite-dir", default="/tmp/mailwarden-bench", help="trace_search.py's store, measured too")
    parser.add_argument("--runs", type=int, default=20, help="queries per kind, warm")
    parser.add_argument("--cold-runs", type=int, default=10, help="queries per kind after a restart and eviction")
    parser.add_argument("--generate-only", action="store_true", help="make the data and stop")
    args = parser.parse_args()
    directory = Path(args.dir)
    marker = directory / "complete"
    with bench_cluster(directory) as server:
        if not marker.exists() or marker.read_text() != str(args.events):
            marker.unlink(missing_ok=True)
            log(f"generating about {args.events:,} events in {directory} (once) ...")
            server.psql("DROP DATABASE IF EXISTS bench")
            server.psql("CREATE DATABASE bench")
            generate(server.url("bench"), args.events)
            verify(server.url("bench"))
            marker.write_text(str(args.events))
        if args.generate_only:
            return
        url = server.url("bench")
        with psycopg.connect(url, autocommit=True) as conn:
            total, indexed, size = conn.execute(
                "SELECT (SELECT count(*) FROM events), (SELECT count(*) FROM message_index),"
                " pg_database_size(current_database())"
            ).fetchone() or (0, 0, 0)
            cases = query_cases(
                lambda sql, params: conn.execute(sql.replace("?", "%s").encode(), params).fetchone(),
                max(args.runs, args.cold_runs),
                None,
            )
        print(f"PostgreSQL store: {total:,} events, {indexed:,} index rows, {size / 1e9:,.1f} GB")

        def cold_store() -> Store:
            server.stop()
            evict(directory / "cluster")
            server.start()
            return PostgresStore(url, pool_size=2)

        store = PostgresStore(url)
        measure_cases(cases, store, cold_store, args.runs, args.cold_runs, 0)
        store.close()
    print("SQLite store of bench/trace_search.py, same run:")
    measure_sqlite(Path(args.sqlite_dir), args.runs, args.cold_runs, 0)


if __name__ == "__main__":
    main()
