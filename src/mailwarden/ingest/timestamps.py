"""Turning log timestamps into UTC microseconds.

Classic syslog stamps (`Dec 18 15:46:00`) have neither year nor zone, and Exim's and Dovecot's
own file stamps (`2026-11-28 04:40:54`) have no zone: they are local wall-clock times. A `Clock`
follows one input stream and places each stamp the way the file itself runs (docs/ingest.md, Time):

* the first year-less stamp gets the year that puts it no later than the reference time (a
  file's modification time, or now for standard input, followed files and syslog) plus a day;
* after that the year is the stream's: it advances when the month goes backwards (December ->
  January) and never moves back, so a log that jumps forward from March to October stays in its
  year. A line up to a day older than the latest (written late, or by a host whose clock lags)
  keeps the year that puts it there, also on New Year's Eve;
* in the repeated hour when daylight saving ends, the reading that does not run backwards.

Conversions are cached per distinct stamp text, because a busy log repeats each second many times,
and per minute: a new second of a minute placed before is its minute's time plus the seconds.
"""

from __future__ import annotations

import io
import os
import struct
from datetime import UTC, datetime, tzinfo
from typing import Final
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

MONTHS: Final = {
    name: number
    for number, name in enumerate(
        ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"), 1
    )
}

SECOND_US: Final = 1_000_000
DAY_US: Final = 86_400 * SECOND_US
# A year-less stamp at most this much older than the stream's latest is a late line of the same
# moment, not a new year (syslog writes lines of different processes a little out of order).
_LATE_US: Final = DAY_US
# A cached stamp is reused while it lies within this window ahead of the stream's latest time (and
# at most _LATE_US behind it): there the year rule gives the cached year again (a new year starts
# at least nine months after the latest stamp of the same month in the old one).
_AHEAD_US: Final = 120 * DAY_US
_CACHE_LIMIT: Final = 4096
# TAI64N labels (daemontools multilog) count from 2**62; TAI ran 10 s ahead of UTC in 1970
# and leap seconds have added more since (37 s in 2017); 10 s is the label's defined offset.
_TAI64_BASE: Final = 2**62 + 10


def local_zone(name: str = "") -> tzinfo:
    """The zone named `name`, for stamps written without an offset; "" = the zone `date` would use:
    `$TZ` when it is set, else the system's zone (/etc/localtime)."""
    if not name:
        return _environment_zone(os.environ.get("TZ"))
    if name.upper() == "UTC":
        return UTC
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError) as exc:
        raise ValueError(f"unknown time zone {name!r}: use an IANA name like Europe/Berlin or UTC") from exc


def _environment_zone(tz: str | None) -> tzinfo:
    """`$TZ` read as the C library reads it: unset = the system's zone; empty = UTC; `:NAME`
    or `NAME` a zone name; `/PATH` a zone file; else a POSIX rule like `CET-1CEST,M3.5.0,M10.5.0/3`."""
    if tz is None:
        return _system_zone()
    name = tz.removeprefix(":")
    if not name:
        return UTC if not tz else _system_zone()
    try:
        if name.startswith("/"):
            with open(name, "rb") as handle:
                return ZoneInfo.from_file(handle, key=name)
        return ZoneInfo(name)
    except (OSError, ValueError, ZoneInfoNotFoundError):
        pass
    try:
        return _posix_rule_zone(name)
    except ValueError as exc:
        raise ValueError(
            f"the TZ environment variable ({tz!r}) names no time zone: set it to an IANA name like "
            "Europe/Berlin, or set [ingest] timezone"
        ) from exc


def _posix_rule_zone(rule: str) -> tzinfo:
    """A zone that follows the POSIX TZ rule `rule` at all times: a zone file without transitions
    whose footer is the rule (RFC 8536; zoneinfo reads the footer for times after the last one)."""
    # Header ('TZif', version '2', 15 unused bytes, then the counts: UT/local and standard/wall
    # indicators, leap seconds, transitions, local time types, abbreviation bytes) and one type.
    block = b"TZif2" + bytes(15) + struct.pack(">6l", 0, 0, 0, 0, 1, 4) + struct.pack(">lBB", 0, 0, 0) + b"UTC\0"
    return ZoneInfo.from_file(io.BytesIO(block + block + b"\n" + rule.encode("ascii", "replace") + b"\n"), key=rule)


def _system_zone() -> tzinfo:
    """The system zone with its DST rules (a fixed offset from `astimezone` would miss them)."""
    try:
        return ZoneInfo("localtime")
    except (ZoneInfoNotFoundError, ValueError):
        return datetime.now().astimezone().tzinfo or UTC


def _offset_us(text: str) -> int:
    """`Z`, `+02:00`, `+0200` or `-0530` as microseconds east of UTC."""
    if text in ("Z", "z"):
        return 0
    sign = -1 if text[0] == "-" else 1
    digits = text[1:].replace(":", "")
    return sign * (int(digits[:2]) * 3600 + int(digits[2:4]) * 60) * SECOND_US


def fraction_us(text: str | None) -> int:
    """Digits after the decimal point of a seconds value, as microseconds."""
    if not text:
        return 0
    return int((text + "00000")[:6])


def tai64n_us(label: str) -> int:
    """A TAI64N label (`@4000000063b4c3f1...`, 24 hex digits) as UTC microseconds."""
    seconds = int(label[1:17], 16) - _TAI64_BASE
    nanos = int(label[17:25], 16) if len(label) >= 25 else 0
    return seconds * SECOND_US + nanos // 1000


class Clock:
    """Places the timestamps of one input stream on the UTC time line (see the module docstring)."""

    __slots__ = ("_cache", "_last", "_latest", "_minutes", "_reference", "zone")

    def __init__(self, zone: tzinfo, reference_us: int) -> None:
        self.zone = zone
        self._reference = reference_us
        self._last: int | None = None  # the previous line's time
        self._latest: int | None = None  # the latest time placed: the stream's position
        self._cache: dict[str, int] = {}  # stamp text -> UTC µs
        self._minutes: dict[str, int] = {}  # stamp text without `:SS` -> UTC µs of its second 0

    @property
    def last_us(self) -> int:
        """The most recent placed time, or the reference before the first stamp."""
        return self._reference if self._last is None else self._last

    def _placed(self, value: int) -> int:
        """Note `value` as the previous line's time and, if it is the latest, the stream's position."""
        self._last = value
        latest = self._latest
        if latest is None or value > latest:
            self._latest = value
        return value

    def _remember(self, key: str, value: int) -> None:
        if len(self._cache) >= _CACHE_LIMIT:
            self._cache.clear()
        self._cache[key] = value

    def _remember_minute(self, key: str, second: int, value: int) -> None:
        """Note the minute of `key` (a stamp ending in `:SS`), placed at `value` away from any change of offset."""
        if len(self._minutes) >= _CACHE_LIMIT:
            self._minutes.clear()
        self._minutes[key[:-3]] = value - second * SECOND_US

    def _by_minute(self, key: str, second: int) -> int | None:
        """`key`'s time from its minute's, if that minute was placed before: no zone arithmetic.

        A new second costs tens of µs the long way (zone arithmetic), and a busy log starts one
        every hundred lines: 2 % of the parsing instructions (measured).
        """
        base = self._minutes.get(key[:-3]) if second < 60 else None  # `:60` is no second (datetime refuses it)
        return None if base is None else base + second * SECOND_US

    def _local(self, year: int, month: int, day: int, hour: int, minute: int, second: int) -> int | None:
        """Local wall time as UTC µs; in the repeated hour, the reading that keeps time running forward."""
        try:
            first = datetime(year, month, day, hour, minute, second, tzinfo=self.zone)
        except ValueError:  # 29 February in a common year, 31 April, 25:00 ...
            return None
        early = int(first.timestamp()) * SECOND_US
        late = int(first.replace(fold=1).timestamp()) * SECOND_US
        if early == late or self._last is None:
            return early
        # Ambiguous (daylight saving just ended): the later reading if the earlier one would go back.
        return late if self._last > early + 60 * SECOND_US else early

    def recall(self, key: str) -> int | None:
        """The cached time of a year-less stamp text, if the stream's year is still its year (the fast path)."""
        cached = self._cache.get(key)
        latest = self._latest
        if cached is not None and latest is not None and -_LATE_US <= cached - latest <= _AHEAD_US:
            self._last = cached
            if cached > latest:
                self._latest = cached
            return cached
        return None

    def classic(self, key: str, month: int, day: int, hour: int, minute: int, second: int) -> int | None:
        """A year-less stamp (`key` is its text, used for caching) as UTC µs, or None if impossible."""
        cached = self.recall(key)
        if cached is not None:
            return cached
        latest = self._latest
        # Near the stream's position, the minute's year is the one the long way below would pick.
        cached = self._by_minute(key, second)
        if cached is not None and latest is not None and -_LATE_US <= cached - latest <= _AHEAD_US:
            self._remember(key, cached)
            return self._placed(cached)
        if latest is None:
            value = self._first(month, day, hour, minute, second)
        else:
            value = self._following(latest, month, day, hour, minute, second)
        if value is None:
            return None
        if self._local_is_unambiguous(value):
            self._remember(key, value)
            self._remember_minute(key, second, value)
        return self._placed(value)

    def _first(self, month: int, day: int, hour: int, minute: int, second: int) -> int | None:
        """The stream's first year-less stamp: in the latest year that keeps it no later than a day
        after the reference time (a file is written before its modification time)."""
        year = datetime.fromtimestamp(self._reference / SECOND_US, tz=UTC).year
        limit = self._reference + DAY_US
        for candidate in (year + 1, year, year - 1, year - 2, year - 3, year - 4):
            value = self._local(candidate, month, day, hour, minute, second)
            if value is not None and value <= limit:
                return value
        return None

    def _following(self, latest: int, month: int, day: int, hour: int, minute: int, second: int) -> int | None:
        """A later year-less stamp: in the stream's year, the next one when the month went back
        (December -> January), the one before for a late line of New Year's Eve."""
        position = datetime.fromtimestamp(latest / SECOND_US, tz=self.zone)
        year = position.year
        if month > position.month:  # `Dec 31 23:59:59` written just after `Jan 1 00:00:01`?
            before = self._local(year - 1, month, day, hour, minute, second)
            if before is not None and before >= latest - _LATE_US:
                return before
        value = self._local(year, month, day, hour, minute, second)
        if month < position.month and (value is None or value < latest - _LATE_US):
            value = self._local(year + 1, month, day, hour, minute, second)
        return value

    def _local_is_unambiguous(self, value: int) -> bool:
        """False within a day of a change of UTC offset, where the cache could pick the wrong reading."""
        before = datetime.fromtimestamp(value / SECOND_US - 43_200, tz=self.zone).utcoffset()
        after = datetime.fromtimestamp(value / SECOND_US + 43_200, tz=self.zone).utcoffset()
        return before == after

    def local(self, key: str, year: int, month: int, day: int, hour: int, minute: int, second: int) -> int | None:
        """A local stamp with its year (Exim's and Dovecot's files) as UTC µs."""
        cached = self._cache.get(key)
        if cached is None and (cached := self._by_minute(key, second)) is not None:
            self._remember(key, cached)
        if cached is not None:  # the usual case, inlined: `_placed`
            self._last = cached
            if self._latest is None or cached > self._latest:
                self._latest = cached
            return cached
        value = self._local(year, month, day, hour, minute, second)
        if value is None:
            return None
        if self._local_is_unambiguous(value):
            self._remember(key, value)
            self._remember_minute(key, second, value)
        return self._placed(value)

    def absolute(
        self, key: str, year: int, month: int, day: int, hour: int, minute: int, second: int, offset: str
    ) -> int | None:
        """A stamp with an explicit UTC offset (RFC 3339) as UTC µs."""
        cached = self._cache.get(key)
        if cached is None:
            try:
                naive = datetime(year, month, day, hour, minute, second, tzinfo=UTC)
            except ValueError:
                return None
            cached = int(naive.timestamp()) * SECOND_US - _offset_us(offset)
            self._remember(key, cached)
        return self._placed(cached)

    def seen(self, value: int) -> None:
        """Note a time placed elsewhere (TAI64N, an embedded stamp) as the previous line's."""
        self._placed(value)
