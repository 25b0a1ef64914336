"""What every process of a node counts for Prometheus: SMTP decisions, check and scanner latency, POP3.

The gateway runs as several SMTP worker processes (workers/), and one scrape must see all of
them. prometheus_client's multiprocess mode does that: each process writes its values into
memory-mapped files of one directory (`use_directory`, made empty by the supervisor at every
start and handed to the workers in the environment), and the supervisor's /metrics sums the
files (exporter.py). A worker that died leaves its file behind, so totals never go backwards
when the supervisor restarts one. Without a directory (`[metrics] listen` unset, the CLI, the
tests' in-process gateways) the same counts stay in the process's memory and are not served.

Label values are bounded, whatever a stranger sends: a reason is a catalog code or "other", a
check one of our check classes, a scanner one of ours. No address, name or reply text ever
becomes a label (each new value would be a new time series in Prometheus).
"""

from __future__ import annotations

import os
from collections.abc import Collection
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any, Final, TypeVar, cast

from prometheus_client import Counter, Histogram, values

from mailwarden.catalog import CATALOG

DIRECTORY_ENV: Final = "PROMETHEUS_MULTIPROC_DIR"  # prometheus_client's name; the workers inherit it
Metric = TypeVar("Metric", Counter, Histogram)
OTHER: Final = "other"
OUTCOMES: Final = {"accept": "accepted", "reject": "rejected", "tempfail": "tempfailed"}
SCANNERS: Final = frozenset({"clamd", "rspamd", "spamassassin", "attachments", "dkim/dmarc"})
# Seconds: from a cache hit (a millisecond) to a scanner at its budget.
LATENCY_BUCKETS: Final = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)


def bounded(value: str | None, known: Collection[str]) -> str:
    """`value` as a label if it is one of `known`, else "other": a label set never grows with stranger input."""
    return value if value is not None and value in known else OTHER


@dataclass(frozen=True)
class Instruments:
    decisions: Counter
    check_seconds: Histogram
    scanner_seconds: Histogram
    pop3_sessions: Counter
    pop3_logins: Counter


@cache
def instruments() -> Instruments:
    """This process's instruments, made at first use (after `use_directory`, so they write where it says)."""
    return Instruments(
        decisions=Counter(
            "mailwarden_smtp_decisions",
            "SMTP decisions: each accepted message (accepted) and each refused command - MAIL, RCPT, DATA, "
            "protocol errors, connection limits - permanently (rejected, 5xx) or temporarily (tempfailed, 4xx), "
            "by catalog reason.",
            ["outcome", "reason"],
            registry=None,
        ),
        check_seconds=Histogram(
            "mailwarden_check_seconds",
            "Time a check took at one SMTP stage, timeouts included.",
            ["check"],
            buckets=LATENCY_BUCKETS,
            registry=None,
        ),
        scanner_seconds=Histogram(
            "mailwarden_scanner_seconds",
            "Time a content scanner took for one message (cut off at scan.budget).",
            ["scanner"],
            buckets=LATENCY_BUCKETS,
            registry=None,
        ),
        pop3_sessions=Counter("mailwarden_pop3_sessions", "POP3 connections served.", registry=None),
        pop3_logins=Counter(
            "mailwarden_pop3_logins",
            'POP3 logins by outcome: "ok", or the catalog reason of the refusal.',
            ["outcome"],
            registry=None,
        ),
    )


# The labelled series made so far: `labels()` validates and looks up on every call, which was five
# times the cost of the count itself (measured 2.8-3.9 us against 0.5-0.7 us).
_series: dict[tuple[object, ...], Any] = {}


def _series_of(metric: Metric, *labels: str) -> Metric:
    key = (id(metric), *labels)
    series = _series.get(key)
    if series is None:
        series = _series[key] = metric.labels(*labels)
    return cast(Metric, series)


def use_directory(directory: Path) -> None:
    """Count into `directory` from now on, in this process and the processes it starts (multiprocess mode)."""
    os.environ[DIRECTORY_ENV] = str(directory)
    values.ValueClass = values.MultiProcessValue()  # type: ignore[no-untyped-call]  # untyped in prometheus_client
    instruments.cache_clear()
    _series.clear()


def count_decision(kind: str, reason: str | None) -> None:
    """An accept, reject or tempfail the gateway decided (its event's kind and catalog reason)."""
    _series_of(instruments().decisions, OUTCOMES.get(kind, OTHER), bounded(reason, CATALOG)).inc()


def observe_check(check: str, seconds: float) -> None:
    """`check` is a check's class attribute `name` (a bounded set by construction)."""
    _series_of(instruments().check_seconds, check).observe(seconds)


def observe_scanner(scanner: str, seconds: float) -> None:
    _series_of(instruments().scanner_seconds, bounded(scanner, SCANNERS)).observe(seconds)


def count_pop3_session() -> None:
    instruments().pop3_sessions.inc()


def count_pop3_login(reason: str | None) -> None:
    """A POP3 login attempt: `reason` None when it succeeded, else its catalog reason."""
    _series_of(instruments().pop3_logins, "ok" if reason is None else bounded(reason, CATALOG)).inc()
