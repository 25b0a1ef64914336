"""PostgreSQL stopped for 30 s under load: mail keeps flowing, every event arrives once (issue 14).

    .venv/bin/python -m bench.postgres_outage [--clients 8] [--before 10] [--outage 30] [--after 15]
    .venv/bin/python -m bench.postgres_outage --spool-max-mb 1     # the spool fills: 451 4.3.0

A private PostgreSQL 15 (tests/support/postgres.py) and one real `mailwarden serve` node on it
(workers as default, the event spool in var/event-spool). `--clients` threads send small messages
to one mailbox, one per connection, the whole time; after `--before` seconds PostgreSQL is stopped,
`--outage` seconds later started again, `--after` seconds later the load stops. When the node's
spool is empty the node is stopped (its writer flushes) and the database counted: every 250's ref
has exactly one accept event and its file in the Maildir, no event id and no (ref, kind, recipient)
is in the database twice. A 4xx is allowed only as 451 4.3.0 with its refusal event (the spool
was full). Exits 1 when an invariant fails.
"""

from __future__ import annotations

import argparse
import os
import re
import smtplib
import sys
import tempfile
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from tests.support.crash import BOB, ref_of
from tests.support.mailwarden import Mailwarden
from tests.support.postgres import Postgres, running_postgres

REF = re.compile(r"ref=([0-9A-Z]{12})")
DUPLICATES = """
SELECT (SELECT count(*) FROM events), (SELECT count(DISTINCT id) FROM events),
       (SELECT count(*) FROM events WHERE ref IS NOT NULL),
       (SELECT count(*) FROM (SELECT DISTINCT ref, kind, recipient FROM events WHERE ref IS NOT NULL) AS keys)
"""


@dataclass
class Load:
    """Threads sending one small message per connection to BOB until stopped; every final reply kept."""

    port: int
    clients: int
    accepted: list[str] = field(default_factory=list)  # refs of the 250s
    deferred: Counter[str] = field(default_factory=Counter)  # "451 4.3.0" -> count
    deferred_refs: list[str] = field(default_factory=list)
    failed_connections: int = 0
    _stop: threading.Event = field(default_factory=threading.Event)
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _threads: list[threading.Thread] = field(default_factory=list)

    @property
    def sent(self) -> int:
        return len(self.accepted) + sum(self.deferred.values())

    def start(self) -> None:
        self._threads = [threading.Thread(target=self._send, args=(n,), daemon=True) for n in range(self.clients)]
        for thread in self._threads:
            thread.start()

    def stop(self) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(timeout=60)

    def _send(self, client: int) -> None:
        number = 0
        while not self._stop.is_set():
            number += 1
            content = f"From: c{client}@sender.test\r\nSubject: outage {client}/{number}\r\n\r\nhello\r\n"
            try:
                with smtplib.SMTP("127.0.0.1", self.port, timeout=60) as smtp:
                    smtp.ehlo("client.sender.test")
                    code, text = smtp.mail(f"c{client}@sender.test")
                    if code == 250:
                        code, text = smtp.rcpt(BOB)
                    if code == 250:
                        try:
                            code, text = smtp.data(content)
                        except smtplib.SMTPDataError as refused:
                            code, text = refused.smtp_code, refused.smtp_error
            except (OSError, smtplib.SMTPException):
                with self._lock:
                    self.failed_connections += 1
                time.sleep(0.05)
                continue
            self._record(code, text.decode(errors="replace"))

    def _record(self, code: int, text: str) -> None:
        found = REF.search(text)
        with self._lock:
            if code == 250:
                assert found is not None, text
                self.accepted.append(found.group(1))
            else:
                self.deferred[f"{code} {text.split()[0]}"] += 1
                if found is not None:
                    self.deferred_refs.append(found.group(1))


def spool_depth(server: Mailwarden) -> int:
    directory = server.root / "var" / "event-spool"
    return len(list(directory.glob("*.batch"))) if directory.is_dir() else 0


def event_count(postgres: Postgres, database: str) -> int:
    return int(postgres.psql("SELECT count(*) FROM events", database))


def run(clients: int, before: float, outage: float, after: float, spool_max_mb: int, workdir: Path) -> bool:
    with running_postgres() as postgres:
        url = postgres.new_database()
        database = url.rsplit("/", 1)[1]
        server = Mailwarden(
            workdir / "node",
            {"store": {"url": url, "spool_max_mb": spool_max_mb}, "smtp": {"max_connections_per_ip": 1000}},
        )
        server.add_user(BOB)
        server.start()
        load = Load(server.smtp_port, clients)
        max_depth = 0

        def wait(seconds: float) -> None:
            nonlocal max_depth
            deadline = time.monotonic() + seconds
            while time.monotonic() < deadline:
                max_depth = max(max_depth, spool_depth(server))
                time.sleep(0.2)

        try:
            load.start()
            wait(before)
            events_at_stop = event_count(postgres, database)
            accepted_at_stop = len(load.accepted)
            postgres.stop()
            wait(outage)
            accepted_during = len(load.accepted) - accepted_at_stop
            postgres.start()
            events_at_start = event_count(postgres, database)
            wait(after)
            load.stop()
            drained_in = time.monotonic()
            while spool_depth(server) and time.monotonic() - drained_in < 120:
                wait(0.2)
            drained_in = time.monotonic() - drained_in
        finally:
            load.stop()
            server.stop()
        left_in_spool = spool_depth(server)
        total, distinct_ids, with_ref, distinct_keys = (
            int(n) for n in postgres.psql(DUPLICATES, database).strip().split("|")
        )
        accept_events = Counter(postgres.psql("SELECT ref FROM events WHERE kind = 'accept'", database).split())
        full_refusals = set(
            postgres.psql("SELECT ref FROM events WHERE reason = 'infra.event_spool_full'", database).split()
        )
    delivered = {ref_of(path) for path in (server.maildir(BOB) / "new").iterdir()}
    without_accept = [ref for ref in load.accepted if accept_events[ref] != 1]
    without_file = [ref for ref in load.accepted if ref not in delivered]
    bad_deferrals = sum(n for reply, n in load.deferred.items() if reply != "451 4.3.0")
    unrecorded_deferrals = [ref for ref in load.deferred_refs if ref not in full_refusals]
    print(
        f"clients {clients}, PostgreSQL stopped after {before:.0f} s for {outage:.0f} s, load {after:.0f} s more, "
        f"spool_max_mb {spool_max_mb}"
    )
    print(f"messages sent {load.sent:,} (connections failed before a reply {load.failed_connections})")
    print(f"250s {len(load.accepted):,} (while PostgreSQL was down: {accepted_during:,})")
    print(
        f"4xx {dict(load.deferred) or 0} (of them without their infra.event_spool_full event: "
        f"{len(unrecorded_deferrals)})"
    )
    print(
        f"events in the database: at the stop {events_at_stop:,}, at the restart {events_at_start:,}, "
        f"after the spool drained {total:,}"
    )
    print(
        f"max spool depth {max_depth} batches; drained {drained_in:.1f} s after the load stopped; "
        f"left in the spool {left_in_spool}"
    )
    print(f"duplicate event ids {total - distinct_ids}, duplicate (ref, kind, recipient) {with_ref - distinct_keys}")
    print(
        f"250s without exactly one accept event {len(without_accept)}, without their file in the Maildir "
        f"{len(without_file)}"
    )
    checks = (
        len(load.accepted) > 0 and accepted_during > 0,
        left_in_spool == 0,
        total == distinct_ids,
        with_ref == distinct_keys,
        not without_accept,
        not without_file,
        bad_deferrals == 0,
        not unrecorded_deferrals,
    )
    print("PASS" if all(checks) else f"FAIL {checks}")
    return all(checks)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--before", type=float, default=10.0, help="seconds of load before PostgreSQL stops")
    parser.add_argument("--outage", type=float, default=30.0, help="seconds PostgreSQL stays stopped")
    parser.add_argument("--after", type=float, default=15.0, help="seconds of load after it is back")
    parser.add_argument("--spool-max-mb", type=int, default=1024, help="[store] spool_max_mb (default as config.py)")
    args = parser.parse_args()
    print(f"load average {' '.join(f'{n:.1f}' for n in os.getloadavg())}")
    with tempfile.TemporaryDirectory(prefix="mailwarden-outage-") as workdir:
        passed = run(args.clients, args.before, args.outage, args.after, args.spool_max_mb, Path(workdir))
    print(f"load average {' '.join(f'{n:.1f}' for n in os.getloadavg())}")
    sys.exit(0 if passed else 1)


if __name__ == "__main__":
    main()
