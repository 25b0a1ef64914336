"""Turning log timestamps into UTC microseconds.

Classic syslog stamps (`Dec 18 15:46:00`) have neither year nor zone, and Exim's and Dovecot's
own file stamps (`2026-11-28 04:40:54`) have no zone: they are local wall-clock times. A `Clock`
follows one input stream and places each stamp: the year is the one that keeps the stamp
nearest the previous line (so a log running from December into January rolls over, and a
line a few seconds out of order does not jump a year), and in the repeated hour when daylight
saving ends it picks the reading that does not run backwards. The first stamp of a stream is
placed no later than the reference time (a file's modification time, or now) plus a day.

Conversions are cached per distinct stamp text, because a busy log repeats each second many times,
and per minute: a new second of a minute placed before is its minute's time plus the seconds.
"""

from __future__ import annotations

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
# A stamp this far from the previous one is taken as a change of year, not a real jump.
_NEAR_US: Final = 120 * DAY_US
_CACHE_LIMIT: Final = 4096
# TAI64N labels (daemontools multilog) count from 2**62; TAI ran 10 s ahead of UTC in 1970
# and leap seconds have added more since (37 s in 2017); 10 s is the label's defined offset.
_TAI64_BASE: Final = 2**62 + 10


def local_zone(name: str = "") -> tzinfo:
    """The zone named `name` ("" = the system's local zone), for stamps written without an offset."""
    if not name:
        local = datetime.now().astimezone().tzinfo
        try:
            return ZoneInfo("localtime") if local is None else _system_zone(local)
        except ZoneInfoNotFoundError:
            return local or UTC
    if name.upper() == "UTC":
        return UTC
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError) as exc:
        raise ValueError(f"unknown time zone {name!r}: use an IANA name like Europe/Berlin or UTC") from exc


def _system_zone(fallback: tzinfo) -> tzinfo:
    """The system zone with its DST rules (a fixed offset from `astimezone` would miss them)."""
    try:
        return ZoneInfo("localtime")
    except (ZoneInfoNotFoundError, ValueError):
        return fallback


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

    __slots__ = ("_cache", "_last", "_minutes", "_reference", "zone")

    def __init__(self, zone: tzinfo, reference_us: int) -> None:
        self.zone = zone
        self._reference = reference_us
        self._last: int | None = None
        self._cache: dict[str, int] = {}  # stamp text -> UTC µs
        self._minutes: dict[str, int] = {}  # stamp text without `:SS` -> UTC µs of its second 0

    @property
    def last_us(self) -> int:
        """The most recent placed time, or the reference before the first stamp."""
        return self._reference if self._last is None else self._last

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

        A new second costs about 50 µs the long way (five candidate years, each through the zone),
        and a busy log starts one every hundred lines: 2 % of the parsing instructions (measured).
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
        """The cached time of a year-less stamp text, if it is near the previous one (the fast path)."""
        cached = self._cache.get(key)
        last = self._last
        if cached is not None and last is not None and -_NEAR_US < cached - last < _NEAR_US:
            self._last = cached
            return cached
        return None

    def classic(self, key: str, month: int, day: int, hour: int, minute: int, second: int) -> int | None:
        """A year-less stamp (`key` is its text, used for caching) as UTC µs, or None if impossible."""
        cached = self.recall(key)
        if cached is not None:
            return cached
        last = self._last
        # Near the previous stamp, the minute's year is the one the long way below would pick.
        cached = self._by_minute(key, second)
        if cached is not None and last is not None and -_NEAR_US < cached - last < _NEAR_US:
            self._last = cached
            self._remember(key, cached)
            return cached
        if last is None:
            year = datetime.fromtimestamp(self._reference / SECOND_US, tz=UTC).year
            limit = self._reference + DAY_US
            for candidate in (year + 1, year, year - 1, year - 2, year - 3, year - 4):
                value = self._local(candidate, month, day, hour, minute, second)
                if value is not None and value <= limit:
                    break
            else:
                return None
        else:
            year = datetime.fromtimestamp(last / SECOND_US, tz=UTC).year
            best: int | None = None
            for candidate in (year, year + 1, year - 1, year + 4, year - 4):
                guess = self._local(candidate, month, day, hour, minute, second)
                if guess is not None and (best is None or abs(guess - last) < abs(best - last)):
                    best = guess
            if best is None:
                return None
            value = best
        self._last = value
        if self._local_is_unambiguous(value):
            self._remember(key, value)
            self._remember_minute(key, second, value)
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
        if cached is not None:
            self._last = cached
            return cached
        value = self._local(year, month, day, hour, minute, second)
        if value is None:
            return None
        self._last = value
        if self._local_is_unambiguous(value):
            self._remember(key, value)
            self._remember_minute(key, second, value)
        return value

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
        self._last = cached
        return cached

    def seen(self, value: int) -> None:
        """Note a time placed elsewhere (TAI64N, an embedded stamp) as the stream's latest."""
        self._last = value
