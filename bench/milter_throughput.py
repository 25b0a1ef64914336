"""What mailwarden as a milter costs Postfix: its throughput into the queue with and without us, same run.

    python bench/milter_throughput.py                 # 5 alternating rounds of 5,000 messages each way
    python bench/milter_throughput.py --rounds 3 --messages 2000

Postfix's smtp-source sends 10 kB messages over 20 sessions (one message per connection, as
smtp_throughput.py does) to a private Postfix that only receives into its queue (its queue
manager is off: smtpd, cleanup, fsync of the queue file). Once as it is, once with
`smtpd_milters` pointing at `mailwarden serve` over TCP on loopback with the test base config's
checks (recipients, size, content) and no scanners configured - so the figure is what the
milter protocol, the session handling, spooling, the content check's own file inspection and
our events cost, not clamd's or rspamd's time. Every message must reach the queue (counted),
and with the milter every one must have our accept event. The two runs alternate (which comes
first rotates), each with a fresh Postfix and mailwarden; the ratio is per round, its median
and spread are printed with the load average. Target (issue 15): with/without >= 0.7.
"""

from __future__ import annotations

import argparse
import os
import sqlite3
import statistics
import sys
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.support.mailwarden import Mailwarden  # noqa: E402
from tests.support.net import free_port  # noqa: E402
from tests.support.postfix import Postfix, running_postfix  # noqa: E402

from bench.smtp_throughput import MESSAGE_BYTES, MESSAGES, RECIPIENT, SESSIONS, smtp_source  # noqa: E402

WARM_UP = 300


@contextmanager
def milter(root: Path) -> Iterator[tuple[Mailwarden, int]]:
    port = free_port()
    overrides: dict[str, dict[str, object]] = {
        "smtp": {"max_connections": 5000, "max_connections_per_ip": 5000},
        "milter": {"listen": [f"127.0.0.1:{port}"]},
        "tls": {"enabled": False},
        "log": {"level": "warning"},
        # No DNS in this benchmark (bench/network_checks.py measures it): DKIM and DMARC need it.
        "scan.auth": {"dkim": False, "dmarc": False},
    }
    instance = Mailwarden(root, overrides)
    instance.add_user(RECIPIENT)
    instance.start()
    try:
        yield instance, port
    finally:
        instance.stop()


@contextmanager
def postfix(milter_port: int | None) -> Iterator[Postfix]:
    settings = {
        "master_service_disable": "qmgr.unix",  # receive into the queue, deliver nothing
        "in_flow_delay": "0",
        "smtpd_client_connection_count_limit": "0",
        "smtpd_client_connection_rate_limit": "0",
    }
    if milter_port is not None:
        settings |= {
            "smtpd_milters": f"inet:127.0.0.1:{milter_port}",
            "milter_default_action": "tempfail",
            "milter_protocol": "6",
        }
    with running_postfix(settings=settings) as instance:
        yield instance


def queued(instance: Postfix) -> int:
    return sum(1 for path in (instance.queue / "incoming").rglob("*") if path.is_file())


def run(workdir: Path, messages: int, with_milter: bool) -> float:
    if not with_milter:
        with postfix(None) as plain:
            smtp_source(plain.smtp_port, WARM_UP)
            rate = smtp_source(plain.smtp_port, messages)
            found = queued(plain)
        if found != WARM_UP + messages:
            raise RuntimeError(f"Postfix queued {found} of {WARM_UP + messages}")
        return rate
    with milter(workdir) as (instance, port), postfix(port) as filtered:
        smtp_source(filtered.smtp_port, WARM_UP)
        rate = smtp_source(filtered.smtp_port, messages)
        found = queued(filtered)
    accepts = accept_events(instance.root / "var" / "mailwarden.db")  # after stop: all are committed
    if found != WARM_UP + messages or accepts != WARM_UP + messages:
        raise RuntimeError(f"with the milter: {found} queued, {accepts} accept events, of {WARM_UP + messages}")
    return rate


def accept_events(store: Path) -> int:
    with sqlite3.connect(store) as db:
        (count,) = db.execute("SELECT count(*) FROM events WHERE kind = 'accept' AND source = 'milter'").fetchone()
    return int(count)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--messages", type=int, default=MESSAGES)
    args = parser.parse_args()
    print(
        f"smtp-source: {args.messages} messages of {MESSAGE_BYTES} bytes over {SESSIONS} sessions; "
        f"load {' '.join(f'{x:.2f}' for x in os.getloadavg())}",
        flush=True,
    )
    plain: list[float] = []
    filtered: list[float] = []
    with tempfile.TemporaryDirectory(prefix="mw-milter-bench-") as tmp:
        for number in range(args.rounds):
            order = (False, True) if number % 2 == 0 else (True, False)
            for with_milter in order:
                rate = run(Path(tmp) / f"round-{number}-{with_milter}", args.messages, with_milter)
                (filtered if with_milter else plain).append(rate)
            print(
                f"round {number + 1}: postfix {plain[-1]:.0f} msg/s, postfix + mailwarden milter "
                f"{filtered[-1]:.0f} msg/s, ratio {filtered[-1] / plain[-1]:.2f}; load {os.getloadavg()[0]:.2f}",
                flush=True,
            )
    ratios = [f / p for f, p in zip(filtered, plain, strict=True)]
    print(
        f"median: postfix {statistics.median(plain):.0f} msg/s, with the milter {statistics.median(filtered):.0f} "
        f"msg/s; ratio {statistics.median(ratios):.2f} (rounds {min(ratios):.2f}-{max(ratios):.2f}); target >= 0.7"
    )


if __name__ == "__main__":
    main()
