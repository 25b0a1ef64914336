"""Log time stamps land on the right UTC instant: year-less stamps, rollover, DST, offsets, mixed shapes."""

from __future__ import annotations

import time
from collections.abc import Iterator
from datetime import UTC, datetime
from zoneinfo import ZoneInfo

import pytest

from mailwarden.ingest import parse_lines
from mailwarden.ingest.framing import Framer
from mailwarden.ingest.timestamps import Clock, local_zone

BERLIN = ZoneInfo("Europe/Berlin")


def _us(text: str) -> int:
    return int(datetime.fromisoformat(text).timestamp() * 1_000_000)


def _framer(reference: str, zone: ZoneInfo | None = None) -> Framer:
    return Framer(Clock(zone or ZoneInfo("UTC"), _us(reference)), "local")


def _times(framer: Framer, lines: list[str]) -> list[str]:
    out = []
    for line in lines:
        frame = framer.frame(line)
        assert frame is not None, line
        out.append(datetime.fromtimestamp(frame.ts / 1e6, UTC).isoformat())
    return out


def test_a_yearless_log_rolls_over_into_the_new_year() -> None:
    framer = _framer("2026-01-02T00:00:00+00:00")
    times = _times(
        framer,
        [
            "Dec 31 23:59:58 mx postfix/qmgr[1]: x",
            "Jan  1 00:00:01 mx postfix/qmgr[1]: x",
            "Dec 31 23:59:59 mx postfix/smtp[2]: a line written a little late",
            "Jan  1 00:00:02 mx postfix/qmgr[1]: x",
        ],
    )
    assert times == [
        "2025-12-31T23:59:58+00:00",
        "2026-01-01T00:00:01+00:00",
        "2025-12-31T23:59:59+00:00",
        "2026-01-01T00:00:02+00:00",
    ]


def test_the_first_yearless_stamp_is_not_placed_after_the_reference_time() -> None:
    framer = _framer("2026-03-01T00:00:00+00:00")
    assert _times(framer, ["Dec 18 15:46:00 pmg postfix/qmgr[1]: x"]) == ["2025-12-18T15:46:00+00:00"]


def test_the_repeated_hour_when_daylight_saving_ends_keeps_time_running_forward() -> None:
    # 2026-10-25: at 03:00 CEST the clocks go back to 02:00 CET in Berlin.
    framer = _framer("2026-10-26T00:00:00+00:00", BERLIN)
    times = _times(
        framer,
        [
            "Oct 25 02:30:00 mx postfix/qmgr[1]: first 02:30 (CEST)",
            "Oct 25 02:59:59 mx postfix/qmgr[1]: x",
            "Oct 25 02:00:05 mx postfix/qmgr[1]: second 02:00 (CET)",
            "Oct 25 02:30:00 mx postfix/qmgr[1]: second 02:30 (CET)",
            "Oct 25 03:10:00 mx postfix/qmgr[1]: x",
        ],
    )
    assert times == [
        "2026-10-25T00:30:00+00:00",
        "2026-10-25T00:59:59+00:00",
        "2026-10-25T01:00:05+00:00",
        "2026-10-25T01:30:00+00:00",
        "2026-10-25T02:10:00+00:00",
    ]


def test_the_missing_hour_when_daylight_saving_starts_does_not_crash() -> None:
    framer = _framer("2026-03-30T00:00:00+00:00", BERLIN)
    (when,) = _times(framer, ["Mar 29 02:30:00 mx postfix/qmgr[1]: a time that does not exist in Berlin"])
    assert when.startswith("2026-03-29T0")


def test_rfc3339_offsets_exim_and_dovecot_file_stamps_and_tai64n_mix_in_one_stream() -> None:
    framer = _framer("2026-11-28T12:00:00+00:00", BERLIN)
    times = _times(
        framer,
        [
            "2024-08-26T01:33:38.572449+02:00 machine postfix/smtpd[60203]: x",
            "2024-08-26T01:33:38Z machine postfix/smtpd[60203]: x",
            "2026-11-28 04:40:54 lmtp(6903): Info: Connect from 127.0.0.1",
            "2023-05-30 06:10:13.345 login authenticator failed for x [192.0.2.12]:5432: 535 Incorrect",
            "2013-06-10 18:33:32 +0100 [10099] H=(x) [202.132.70.178]:3755 rejected RCPT dir@ml3.ru: relay not permitted",
            "@400000004c91b044077a9e94 imap-login: Info: Aborted login",
        ],
    )
    assert times == [
        "2024-08-25T23:33:38.572449+00:00",
        "2024-08-26T01:33:38+00:00",
        "2026-11-28T03:40:54+00:00",
        "2023-05-30T04:10:13.345000+00:00",
        "2013-06-10T17:33:32+00:00",
        "2010-09-16T05:50:50.125476+00:00",
    ]


def test_hosts_come_from_each_line_and_hostless_lines_get_the_default_node() -> None:
    events = parse_lines(
        [
            "Nov 28 04:39:08 mx1 dovecot: pop3-login: Login: user=<a@x>, method=PLAIN, rip=192.0.2.1, lip=1.1.1.1, "
            "mpid=1, session=<A>",
            "Nov 28 04:39:09 mx2 dovecot: pop3-login: Login: user=<a@x>, method=PLAIN, rip=192.0.2.2, lip=1.1.1.1, "
            "mpid=1, session=<A>",
            "2026-11-28 04:40:54 imap-login: Info: Login: user=<b@x>, method=PLAIN, rip=192.0.2.3, lip=1.1.1.1, "
            "mpid=2, session=<B>",
        ],
        node="files-host",
        reference_us=_us("2026-11-28T12:00:00+00:00"),
    )
    assert [(e.node, e.client_ip) for e in events] == [
        ("mx1", "192.0.2.1"),
        ("mx2", "192.0.2.2"),
        ("files-host", "192.0.2.3"),
    ]


def test_an_impossible_date_is_an_unknown_line_not_a_crash() -> None:
    (event,) = parse_lines(["Feb 30 10:00:00 mx postfix/smtpd[1]: connect from x[1.2.3.4]"])
    assert event.kind == "unknown"


def test_a_log_that_jumps_forward_from_march_to_october_keeps_its_year() -> None:
    # A quiet mail gateway's log: nothing between spring and autumn (issue 12: dated a year early).
    events = parse_lines(
        [
            "Mar 28 01:53:05 gw postfix/smtpd[23385]: connect from bbs.example.net[192.0.2.245]",
            "Mar 28 01:53:05 gw postfix/smtpd[23385]: disconnect from bbs.example.net[192.0.2.245] commands=1",
            "Oct 31 02:26:30 gw postfix/smtpd[6264]: connect from unknown[192.0.2.214]",
            "Oct 31 02:26:30 gw postfix/smtpd[6264]: NOQUEUE: reject: RCPT from unknown[192.0.2.214]: 450 4.7.1 "
            "<list@example.org>: Recipient address rejected: Greylisted; from=<a@example.com> to=<list@example.org> "
            "proto=ESMTP helo=<spammer.example>",
            "Nov  2 09:00:00 gw postfix/smtpd[6264]: disconnect from unknown[192.0.2.214] commands=3/5",
        ],
        reference_us=_us("2021-01-01T23:59:59+00:00"),
    )
    assert [datetime.fromtimestamp(e.ts / 1e6, UTC).isoformat() for e in events] == [
        "2020-03-28T01:53:05+00:00",
        "2020-03-28T01:53:05+00:00",
        "2020-10-31T02:26:30+00:00",
        "2020-10-31T02:26:30+00:00",
        "2020-11-02T09:00:00+00:00",
    ]


def test_the_year_advances_when_the_month_goes_back_and_never_moves_back() -> None:
    framer = _framer("2027-03-01T00:00:00+00:00")
    times = _times(
        framer,
        [
            "Oct 30 10:00:00 mx postfix/qmgr[1]: x",
            "Dec 30 10:00:00 mx postfix/qmgr[1]: x",
            "Jan  2 10:00:00 mx postfix/qmgr[1]: December -> January: a new year",
            "Dec 25 10:00:00 mx postfix/qmgr[1]: a week back, January -> December: no year back",
            "Feb 14 10:00:00 mx postfix/qmgr[1]: x",
        ],
    )
    assert times == [
        "2026-10-30T10:00:00+00:00",
        "2026-12-30T10:00:00+00:00",
        "2027-01-02T10:00:00+00:00",
        "2027-12-25T10:00:00+00:00",
        "2028-02-14T10:00:00+00:00",
    ]


def test_a_line_written_late_stays_in_its_month_and_year() -> None:
    framer = _framer("2026-06-01T00:00:00+00:00")
    times = _times(
        framer,
        [
            "Feb  1 00:00:01 mx postfix/qmgr[1]: x",
            "Jan 31 23:59:58 mx postfix/smtp[2]: January -> February -> January, two seconds late",
            "Feb  1 00:00:02 mx postfix/qmgr[1]: x",
        ],
    )
    assert times == ["2026-02-01T00:00:01+00:00", "2026-01-31T23:59:58+00:00", "2026-02-01T00:00:02+00:00"]


@pytest.fixture
def tz_env(monkeypatch: pytest.MonkeyPatch) -> Iterator[pytest.MonkeyPatch]:
    """Sets $TZ for one test (and the C library's view of it) and restores both afterwards."""
    yield monkeypatch
    monkeypatch.undo()
    time.tzset()


@pytest.mark.parametrize(
    ("tz", "offset_h"),
    [
        ("Asia/Tokyo", 9),
        (":Asia/Tokyo", 9),
        ("/usr/share/zoneinfo/Asia/Tokyo", 9),
        ("CET-1CEST,M3.5.0,M10.5.0/3", 2),  # a POSIX rule, no zone file: summer time in July
        ("", 0),  # set but empty: UTC, as `date` has it
    ],
)
def test_tz_environment_is_the_zone_when_no_timezone_is_configured(
    tz_env: pytest.MonkeyPatch, tz: str, offset_h: int
) -> None:
    tz_env.setenv("TZ", tz)
    time.tzset()
    zone = local_zone("")
    (event,) = parse_lines(
        ["Jul 10 12:00:00 mx postfix/smtpd[1]: connect from x.example[192.0.2.1]"],
        zone=zone,
        reference_us=_us("2026-08-01T00:00:00+00:00"),
    )
    assert event.ts == _us("2026-07-10T12:00:00+00:00") - offset_h * 3_600_000_000
    assert local_zone("UTC") is UTC  # a configured zone still wins over $TZ


def test_a_tz_environment_that_names_no_zone_is_an_error_with_a_remedy(tz_env: pytest.MonkeyPatch) -> None:
    tz_env.setenv("TZ", "Nowhere/Land")
    time.tzset()
    with pytest.raises(ValueError, match=r"TZ environment variable .*Europe/Berlin.*\[ingest\] timezone"):
        local_zone("")
