"""Fuzzing every parser: any line, however broken or hostile, gives at most one event and never an exception.

Random text, real lines with random text spliced in where strangers write (addresses, HELO,
Message-IDs, subjects, reply texts), and long adversarial lines made to provoke regular
expression backtracking. A hang would end in the test's timeout; the state every parser keeps
is bounded, checked by feeding more sessions and queue files than the bounds allow.
"""

from __future__ import annotations

import math

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mailwarden.events import KINDS, Event
from mailwarden.ingest.pipeline import FORMATS, Ingester
from mailwarden.ingest.receiver import to_line

# Real shapes of every source; `{}` marks where a stranger's text goes.
TEMPLATES = [
    "Nov 28 04:44:17 mta postfix/smtpd[6917]: NOQUEUE: reject: RCPT from x[192.0.2.9]: 554 5.7.1 <{}>: "
    "Recipient address rejected: blocked; from=<{}> to=<{}> proto=ESMTP helo=<{}>",
    "Nov 28 04:43:17 mta postfix/smtp[19439]: A59FE214716: to=<{}>, relay=r[192.0.2.1]:25, delay=0.02, "
    "delays=0.01/0.01/0/0.01, dsn=5.7.1, status=bounced (host r[192.0.2.1] said: 550 5.7.1 {})",
    "Nov 28 04:43:17 mta postfix/cleanup[19438]: A59FE214716: message-id={}",
    "Nov 28 04:43:17 mta postfix/cleanup[19438]: A59FE214716: reject: header Subject: {} from x[1.2.3.4]; "
    "from=<{}> to=<{}> proto=ESMTP helo=<{}>: 5.7.1 rejected",
    "Nov 28 04:43:17 mta postfix/qmgr[19311]: A59FE214716: from=<{}>, size=430, nrcpt=2 (queue active)",
    "Nov 28 04:43:17 mta postfix/smtpd[19314]: A59FE214716: client={}[127.0.0.1], orig_client={}",
    "Oct 25 04:24:59 test postfix/postscreen[22244]: PREGREET 16 after 2.6 from [177.154.236.182]:41323: {}",
    "Oct 31 02:15:14 pmg postfix/postscreen[6185]: NOQUEUE: reject: RCPT from [192.0.2.213]:12641: 550 5.7.1 {}; "
    "from=<{}>, to=<{}>, proto=ESMTP, helo=<{}>",
    "Nov 28 04:43:17 mta postfix/smtpd[1]: warning: {}[192.0.2.1]: SASL LOGIN authentication failed: {}",
    "2026-11-28 04:40:54 pop3-login: Info: Login: user=<{}>, method=PLAIN, rip=192.0.2.7, lip=127.0.0.1, "
    "mpid=7463, secured, session=<{}>",
    "Oct 12 15:44:45 canyon dovecot: imap-login: Disconnected (auth failed, 1 attempts in 6 secs): user=<{}>, "
    "method=PLAIN, rip=1.1.1.1, lip=7.7.7.7, TLS, session=<{}>",
    "2026-11-28 04:40:54 pop3({})<7463><S1>: Info: expunge: box=INBOX, uid=1, msgid={}, size=451, from={}, subject={}",
    "2026-11-28 04:40:54 lmtp({})<6903><UP4QFFZbCmv3GgAAg+zDdQ>: Info: msgid={}: saved mail to {}",
    "Jan 29 05:13:40 mail dovecot: auth-worker(31326): pam({},{}): unknown user",
    '2026-11-28 05:47:22 stats: Info: {{"event":"mail_opened","categories":["service:pop3"],"fields":{}}}',
    "2026-11-28 09:44:33 10HmaX-000000005vi-0000 <= {} H={} [192.0.2.5] P=esmtp S=1234 id={}",
    "2026-11-28 09:45:00 H={} [203.0.113.9]:5000 F=<{}> rejected RCPT <{}>: {}",
    "2026-11-28 09:44:34 10HmaX-000000005vi-0000 ** {} R=dnslookup T=remote_smtp: {}",
    "2021-12-02 16:11:30 #44(normal) <8b329a>; task; rspamd_task_write_log: id: <{}>, qid: <{}>, ip: 1.2.3.4, "
    "from: <{}>, (default: F (no action): [-1.0/20.00] [{}]), len: 5000, rcpts: <{}>,",
    "Dec 27 16:05:18 mail amavis[17075]: (17075-16) Passed CLEAN {{RelayedInbound}}, [74.125.82.52]:35825 <{}> -> "
    "<{}>, Queue-ID: {}, Message-ID: {}, mail_id: x, Hits: -0.1, size: 2003, queued_as: {}, 1388 ms",
    "Nov 28 04:00:01 mx clamav-milter[55]: Message 4ABC123 from <{}> to <{}> with subject '{}' message-id '{}' "
    "date '{}' infected by {}",
]

HOSTILE = st.sampled_from(
    [
        "<",
        ">",
        '"',
        "\\",
        "; from=<x@y>",
        " to=<v@w>",
        ", status=sent (ok)",
        ">, relay=evil, delay=0, delays=0/0/0/0, dsn=2.0.0, status=sent (",
        ">, rip=6.6.6.6, lip=1.1.1.1",
        ", uid=999, box=Junk",
        ": saved mail to Evil",
        " H=evil [6.6.6.6]",
        "(default: T (reject): [99/1] [X])",
        "\r",
        "\n",
        "\x00",
        "\udcff",
        "\u2028",
        "]:",
        "[",
        "(",
        ")",
    ]
)
STRANGER = st.lists(st.one_of(HOSTILE, st.text(max_size=12)), max_size=6).map("".join)


def _feed(lines: list[str], fmt: str = "auto") -> list[Event]:
    events: list[Event] = []
    ingester = Ingester(events.append, fmt=fmt, default_node="fuzz", holdback_s=0)
    stream = ingester.stream("fuzz", 1_795_000_000_000_000)
    for offset, line in enumerate(lines):
        before = len(events) + len(ingester.holdback)
        ingester.feed(stream, line, offset)
        assert len(events) + len(ingester.holdback) - before <= 1, f"two events from one line: {line!r}"
    ingester.finish()
    return events


@settings(max_examples=300, suppress_health_check=[HealthCheck.too_slow], deadline=None)
@given(st.text(max_size=300), st.sampled_from(FORMATS))
def test_any_text_is_a_line_or_an_unknown_line_in_every_format(line: str, fmt: str) -> None:
    events = _feed([line], fmt)
    assert len(events) <= 1
    assert all(event.evidence == f"fuzz:0: {line}" for event in events)


@settings(max_examples=600, suppress_health_check=[HealthCheck.too_slow], deadline=None)
@given(st.sampled_from(TEMPLATES), st.lists(STRANGER, min_size=8, max_size=8))
def test_real_lines_with_a_strangers_text_spliced_in_never_fail(template: str, values: list[str]) -> None:
    line = template.format(*values[: template.count("{}")])
    (event,) = _feed([line.replace("\n", "#012")]) or [None]  # one line, one event at most
    if event is not None:
        assert event.kind in KINDS


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=300))
def test_any_syslog_message_becomes_one_line(data: bytes) -> None:
    line = to_line(data.decode("utf-8", "backslashreplace"))
    assert "\n" not in line
    assert len(_feed([line])) <= 1


NUMBERS_NO_EVENT_HOLDS = [
    "2026-11-28 09:44:33 10HmaX-000000005vi-0000 <= a@b.test H=x [192.0.2.5] P=esmtp S=² id=x@y",
    "2026-11-28 09:44:33 10HmaX-000000005vi-0000 <= a@b.test H=x [192.0.2.5] P=esmtp S=" + "9" * 5000 + " id=x@y",
    "2013-12-29 15:39:11 1VxHWD-000NuW-83 SA: Action: silently tossed message: score=1.5.8 required=5.0 trigger=30.0 "
    "(scanned in 6/6 secs | Message-Id: 1VxHWD-000NuW-83). From <> (host=NULL [178.123.108.196]) for me@my.com",
    "2013-12-29 15:39:11 1VxHWD-000NuW-83 SA: Action: silently tossed message: score=" + "9" * 400 + " required=5.0 "
    "trigger=30.0 (scanned in 6/6 secs | Message-Id: 1VxHWD-000NuW-83). From <> (host=NULL [178.123.108.196]) for a@b",
    "Nov 28 04:43:17 mta postfix/smtp[19439]: A59FE214716: to=<x@y.test>, relay=r[192.0.2.1]:25, delay=1.5.02, "
    "delays=0.01/0.01/0/0.01, dsn=5.7.1, status=bounced (host r[192.0.2.1] said: 550 5.7.1 no)",
    "Oct 13 09:22:59 canyon dovecot: pop3-login: Info: Login: user=<test@example.net>, method=PLAIN, rip=172.17.0.1, "
    "lip=172.17.0.2, mpid=" + "9" * 5000 + ", session=<x>",
]


@pytest.mark.parametrize(
    "line",
    NUMBERS_NO_EVENT_HOLDS,
    ids=["S=²", "S=5000 digits", "score=1.5.8", "score=inf", "delay=1.5.02", "mpid=5000 digits"],
)
def test_a_number_no_event_holds_is_left_out_not_an_exception_that_stops_the_ingest(line: str) -> None:
    """Such a line raised a ValueError out of the parser, and `mailwarden serve`'s ingest thread stopped."""
    for event in _feed([line]):
        numbers = [event.size, *(v for v in event.detail.values() if isinstance(v, int | float))]
        assert all(math.isfinite(n) and abs(n) < 1 << 63 for n in numbers if n is not None), event


@pytest.mark.timeout(120)
@pytest.mark.parametrize("fmt", FORMATS)
def test_long_adversarial_lines_finish(fmt: str) -> None:
    """Patterns repeated thousands of times, where a backtracking expression would take forever."""
    prefixes = [
        "Nov 28 04:44:17 mta postfix/smtpd[1]: NOQUEUE: reject: RCPT from x[1.2.3.4]: 554 5.7.1 ",
        "Nov 28 04:43:17 mta postfix/smtp[1]: A59FE214716: to=<",
        "2026-11-28 04:40:54 pop3-login: Info: Login: user=<",
        "2026-11-28 04:40:54 pop3(u)<1><S>: Info: expunge: box=",
        "2026-11-28 09:45:00 H=x [1.2.3.4] F=<",
        "2021-12-02 16:11:30 #44(normal) <1>; task; rspamd_task_write_log: id: <",
        "Dec 27 16:05:18 mail amavis[1]: (1-1) Passed CLEAN {R}, [1.2.3.4]:1 <",
        "Nov 28 04:00:01 mx clamav-milter[55]: Message Q from <",
    ]
    bodies = [
        "<" * 20_000,
        '"' * 20_000,
        "; from=<" * 5_000,
        ">, relay=a, " * 3_000,
        "rip=" * 10_000,
        ", uid=1" * 5_000,
        " H=" * 10_000,
        "(default: F (x): [1/1] [" * 2_000,
        "a" * 60_000,
        "<a>" * 10_000,
        "[1.2.3.4]" * 5_000,
        "x[" * 20_000,  # a host name before `[` is not the reply: cut word by word, not by a pattern
        '<"' + "\\" * 40_000,
        "Sender address rejected: " * 2_000,
        "said: mx " * 5_000,
    ]
    lines = [prefix + body for prefix in prefixes for body in bodies]
    events = _feed(lines, fmt)
    assert len(events) <= len(lines)


def test_the_state_kept_is_bounded() -> None:
    events: list[Event] = []
    ingester = Ingester(events.append, default_node="fuzz", holdback_s=0)
    ingester.postfix.QUEUE_LIMIT = ingester.postfix.SESSION_LIMIT = 500
    ingester.dovecot.SESSION_LIMIT = ingester.dovecot.UID_LIMIT = 500
    ingester.exim.MESSAGE_LIMIT = 500
    stream = ingester.stream("fuzz", 1_795_000_000_000_000)
    for n in range(5_000):
        for line in (
            f"Nov 28 04:00:00 mx postfix/smtpd[{n}]: connect from x[192.0.2.1]",
            f"Nov 28 04:00:00 mx postfix/smtpd[{n}]: {n:011X}: client=x[192.0.2.1]",
            f"Nov 28 04:00:00 mx dovecot: pop3-login: Login: user=<u{n}>, method=PLAIN, rip=192.0.2.1, mpid={n}, session=<S{n}>",
            f"Nov 28 04:00:00 mx dovecot: pop3(u{n})<{n}><S{n}>: expunge: box=INBOX, uid={n}, msgid=<m{n}@x>, size=1",
            f"2026-11-28 04:00:00 {n:06d}-{n:06d}-AA <= a@x H=h [192.0.2.1] S=1",
        ):
            ingester.feed(stream, line, n)
    ingester.finish()
    assert len(ingester.postfix.queues) <= 500 and len(ingester.postfix.sessions) <= 500
    assert len(ingester.dovecot.sessions) <= 500 and len(ingester.dovecot.message_ids) <= 500
    assert len(ingester.exim.messages) <= 500
    assert len(events) >= 5 * 5_000 - 5_000  # every line but the client= ones made an event


def test_held_events_are_bounded_even_when_time_stands_still() -> None:
    events: list[Event] = []
    ingester = Ingester(events.append, default_node="fuzz", holdback_s=3600)
    ingester.holdback.limit = 100
    stream = ingester.stream("fuzz", 1_795_000_000_000_000)
    for n in range(1_000):
        ingester.feed(stream, f"Nov 28 04:00:00 mx postfix/smtpd[{n}]: connect from x[192.0.2.1]", n)
        assert len(ingester.holdback) <= 101
    assert len(events) == 1_000 - len(ingester.holdback)
