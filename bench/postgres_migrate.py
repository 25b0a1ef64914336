"""`mailwarden store migrate` of the 10 M-event SQLite store into PostgreSQL, killed once and resumed
(issue 14: every event and index row arrives, and an interrupted run resumes).

    .venv/bin/python -m bench.postgres_migrate [--source /tmp/mailwarden-web-bench/store.db] [--kill-after 120]

The source is bench/trace_search.py's store (only read: the migration opens it as a store that
must exist). A private PostgreSQL 15 is started for the run (tests/support/postgres.py). The
command runs as an operator would run it, is killed with SIGKILL after `--kill-after` seconds,
and run again to the end; then both stores are counted: the events and their distinct
identities (time, node, kind, session, ref, recipient, key: the target gives new ids), and the
message index's rows, messages and statuses. Exit 1 when they differ.
"""

from __future__ import annotations

import argparse
import signal
import sqlite3
import subprocess
import sys
import time
from typing import Final

import psycopg
from tests.support.postgres import running_postgres

IDENTITY: Final = (
    "ts, node, kind, coalesce(session, ''), coalesce(ref, ''), coalesce(recipient, ''), coalesce(message_key, '')"
)
EVENTS: Final = (
    f"SELECT (SELECT count(*) FROM events), (SELECT count(*) FROM (SELECT DISTINCT {IDENTITY} FROM events) AS d)"
)
INDEX: Final = (
    "SELECT count(*), count(DISTINCT message_key), sum(CASE WHEN status = 'rejected' THEN 1 ELSE 0 END),"
    " sum(CASE WHEN status = 'deleted' THEN 1 ELSE 0 END), sum(CASE WHEN status = 'greylisted' THEN 1 ELSE 0 END)"
    " FROM message_index"
)
SHOWN: Final = "events {0[0]:,} ({0[1]:,} distinct); index rows {1[0]:,}, messages {1[1]:,}, rejected {1[2]:,}, deleted {1[3]:,}, greylisted {1[4]:,}"


def log(text: str) -> None:
    print(f"{time.strftime('%H:%M:%S')} {text}", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--source", default="/tmp/mailwarden-web-bench/store.db", help="the SQLite store to migrate")
    parser.add_argument("--kill-after", type=float, default=120.0, help="seconds before the first run is killed")
    args = parser.parse_args()
    with sqlite3.connect(f"file:{args.source}?mode=ro", uri=True) as source:
        source_counts = (tuple(source.execute(EVENTS).fetchone()), tuple(source.execute(INDEX).fetchone()))
    log("source: " + SHOWN.format(*source_counts))
    with running_postgres() as server:
        url = server.new_database()
        command = [sys.executable, "-m", "mailwarden", "store", "migrate", f"sqlite:///{args.source}", url]
        started = time.monotonic()
        first = subprocess.Popen(command, stdout=subprocess.DEVNULL)
        time.sleep(args.kill_after)
        first.send_signal(signal.SIGKILL)
        first.wait()
        with psycopg.connect(url) as conn:
            committed = conn.execute("SELECT count(*) FROM events").fetchone()
        log(
            f"first run killed (SIGKILL) after {time.monotonic() - started:.0f} s: {committed[0] if committed else 0:,} events in"
        )
        resumed = time.monotonic()
        second = subprocess.run(command, stdout=subprocess.PIPE, text=True, check=True)
        log(
            f"resumed: {second.stdout.strip()} (whole migration {time.monotonic() - started:.0f} s, resumed {time.monotonic() - resumed:.0f} s)"
        )
        with psycopg.connect(url) as conn:
            target_counts = (tuple(conn.execute(EVENTS).fetchone() or ()), tuple(conn.execute(INDEX).fetchone() or ()))
    log("target: " + SHOWN.format(*target_counts))
    same = target_counts == source_counts
    log("every event and index row arrived, none twice" if same else "DIFFERENT")
    sys.exit(0 if same else 1)


if __name__ == "__main__":
    main()
