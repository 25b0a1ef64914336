"""The dashboard: today's and the last 30 days' traffic by outcome (status) and by reason, in the account's scope.

Each UTC day is one count on the message index (`trace.search.count` with the day as the period
and the account's domains as `allowed_domains`), kept for a while: today's for a minute, earlier
days' for ten minutes (their messages still change status when they are fetched or deleted). A
customer's day is read from the index of its recipient domains alone; an unscoped day of a large
store is a scan of that day's rows (about 0.3 s for 85,000 messages), so thirty of them are worth
keeping rather than counting again on every view.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Final

from mailwarden.catalog import CATALOG, Lang
from mailwarden.events import us_to_iso
from mailwarden.store import Store
from mailwarden.trace.model import STATUSES
from mailwarden.trace.search import Counts, SearchSpec, count
from mailwarden.web import charts
from mailwarden.web.i18n import t

DAY_US: Final = 86400 * 1_000_000
DAYS: Final = 30
TODAY_FRESH: Final = 60.0  # seconds today's counts are kept
PAST_FRESH: Final = 600.0  # seconds an earlier day's counts are kept
TOP_REASONS: Final = 12


@dataclass(frozen=True)
class Day:
    start_us: int
    counts: Counts


@dataclass(frozen=True)
class Traffic:
    """The counts of the last `DAYS` UTC days, oldest first; the last is today (so far)."""

    days: list[Day]

    @property
    def today(self) -> Counts:
        return self.days[-1].counts

    @property
    def month(self) -> Counts:
        summed: dict[tuple[str, str | None], int] = {}
        for day in self.days:
            for status, reason, number in day.counts.rows:
                summed[(status, reason)] = summed.get((status, reason), 0) + number
        return Counts(
            sorted(((s, r, n) for (s, r), n in summed.items()), key=lambda row: (-row[2], row[0], row[1] or ""))
        )


@dataclass
class DayCounts:
    """Counts per scope and day, each kept until it is no longer fresh (`TODAY_FRESH`, `PAST_FRESH`)."""

    clock: Callable[[], float]  # seconds, for freshness
    _kept: dict[tuple[frozenset[str] | None, int], tuple[float, Counts]] = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def traffic(self, store: Store, scope: frozenset[str] | None, now_us: int) -> Traffic:
        today = now_us - now_us % DAY_US
        starts = [today - n * DAY_US for n in range(DAYS - 1, -1, -1)]
        with self._lock:  # one counts a day while the others wait for it, instead of counting it again
            now = self.clock()
            for key in [key for key, (until, _) in self._kept.items() if until <= now]:
                del self._kept[key]
            days = []
            for start in starts:
                kept = self._kept.get((scope, start))
                if kept is None:
                    spec = SearchSpec(since_us=start, until_us=start + DAY_US, allowed_domains=scope)
                    fresh = TODAY_FRESH if start == today else PAST_FRESH
                    kept = (now + fresh, count(store, spec))
                    self._kept[(scope, start)] = kept
                days.append(Day(start, kept[1]))
        return Traffic(days)


def status_name(status: str, lang: Lang) -> str:
    return t(f"state.{status}", lang)


def reason_name(reason: str | None, lang: Lang) -> str:
    """A reason's catalog title (the code itself when the catalog has none)."""
    if not reason:
        return t("dashboard.no_reason", lang)
    entry = CATALOG.get(reason)
    return entry.title[lang] if entry is not None else reason


Link = Callable[..., str]  # the search of a chart's period, narrowed by status= or reason=


def by_status(counts: Counts, lang: Lang, link: Link) -> charts.BarChart:
    found = counts.by_status()
    return charts.bars(
        [
            charts.Item(
                status_name(s, lang), found[s], f"status-{s}", f"{status_name(s, lang)}: {found[s]:,}", link(status=s)
            )
            for s in STATUSES
            if found.get(s)
        ]
    )


def by_reason(counts: Counts, lang: Lang, link: Link) -> charts.BarChart:
    found = sorted(counts.by_reason().items(), key=lambda item: (-item[1], item[0]))[:TOP_REASONS]
    return charts.bars(
        [
            charts.Item(reason or "-", n, "reason", f"{reason_name(reason, lang)}: {n:,}", link(reason=reason))
            for reason, n in found
        ]
    )


def by_day(traffic: Traffic, lang: Lang, link: Callable[[int, str], str]) -> charts.ColumnChart:
    """A column per day, its parts the statuses; `link(day start, status)` is a part's search."""
    days = []
    for day in traffic.days:
        found = day.counts.by_status()
        date = us_to_iso(day.start_us)[:10]
        parts = [
            charts.Item(
                status_name(s, lang),
                found[s],
                f"status-{s}",
                f"{date} {status_name(s, lang)}: {found[s]:,}",
                link(day.start_us, s),
            )
            for s in STATUSES
            if found.get(s)
        ]
        days.append((date[5:], parts))
    return charts.columns(days)
