"""Content filters (amavis, rspamd, clamav-milter) report on Postfix's queue id and join that message."""

from __future__ import annotations

from mailwarden.events import Event
from mailwarden.ingest import parse_lines

POSTFIX_START = [
    "Dec 27 16:05:16 mail postfix/smtpd[100]: B7DEA22066C: client=mail-wm0.google.com[74.125.82.52]",
    "Dec 27 16:05:16 mail postfix/cleanup[101]: B7DEA22066C: message-id=<CAARX@mail.gmail.com>",
]


def _events(lines: list[str]) -> list[Event]:
    return [e for e in parse_lines(POSTFIX_START + lines) if e.kind not in ("unknown", "accept")]


def test_amavis_passed_joins_the_postfix_message_and_links_the_reinjection() -> None:
    (scan,) = _events(
        [
            "Dec 27 16:05:18 mail amavis[17075]: (17075-16) Passed CLEAN {RelayedInbound}, [74.125.82.52]:35825 "
            "<example@gmail.com> -> <freddie@example.ca>, Queue-ID: B7DEA22066C, Message-ID: <CAARX@mail.gmail.com>, "
            "mail_id: DSnzfz0QF6Vd, Hits: -0.1, size: 2003, queued_as: 74FF5220670, dkim_sd=20161025:gmail.com, 1388 ms",
        ]
    )
    assert (scan.kind, scan.source, scan.queue_id, scan.session) == (
        "scan",
        "amavis",
        "B7DEA22066C",
        "postfix/smtpd[100]@1766851516",
    )
    assert (scan.sender, scan.recipient, scan.size, scan.detail["next_queue_id"]) == (
        "example@gmail.com",
        "freddie@example.ca",
        2003,
        "74FF5220670",
    )


def test_amavis_blocked_virus_is_a_reject_with_the_virus_name() -> None:
    (blocked,) = _events(
        [
            "Feb 23 04:55:57 mrelmx42 amavis[4051607]: (4051607-09) Blocked INFECTED (Porcupine.Phishing.55542.UNOFFICIAL) "
            "{DiscardedInbound,Quarantined}, [192.168.0.1]:1434 [192.168.0.1] <someone1@something1.com> -> "
            "<someon2@something2.com>, quarantine: 2/virus-26W2lJY63nCZ, Queue-ID: 83B741009CD35, Message-ID: "
            "<20240223075525.8CD9941B67@xxx.xxx.shop>, mail_id: 26W2lJY63nCZ, Hits: -, size: 28646, 104 ms",
        ]
    )
    assert (blocked.kind, blocked.reason, blocked.detail["virus"], blocked.client_ip) == (
        "reject",
        "msg.virus",
        "Porcupine.Phishing.55542.UNOFFICIAL",
        "192.168.0.1",
    )


def test_rspamd_scan_has_action_score_symbols_and_the_postfix_queue_id() -> None:
    (scan,) = _events(
        [
            "Dec 27 16:05:17 mail rspamd[12]: <8b329a>; proxy; rspamd_task_write_log: id: <CAARX@mail.gmail.com>, "
            "qid: <B7DEA22066C>, ip: 74.125.82.52, from: <example@gmail.com>, (default: F (no action): "
            "[-0.50/15.00] [ARC_NA(0.00){},DKIM_TRACE(0.00){gmail.com:+;}]), len: 2003, time: 64.1ms, dns req: 3, "
            "digest: <abc>, rcpts: <freddie@example.ca>, mime_rcpt: <freddie@example.ca>,",
        ]
    )
    assert (scan.kind, scan.queue_id, scan.client_name, scan.recipient) == (
        "scan",
        "B7DEA22066C",
        "mail-wm0.google.com",
        "freddie@example.ca",
    )
    assert scan.detail == {
        "action": "no action",
        "score": -0.5,
        "required": 15.0,
        "symbols": ["ARC_NA", "DKIM_TRACE"],
        "spam": False,
    }


def test_a_message_id_imitating_an_rspamd_verdict_does_not_replace_it() -> None:
    (scan,) = _events(
        [
            "Dec 27 16:05:17 mail rspamd[12]: <8b329a>; task; rspamd_task_write_log: id: <x>, qid: <FAKE>, ip: 6.6.6.6, "
            "(default: F (no action): [0/20] []), len: 1>, qid: <B7DEA22066C>, ip: 1.2.3.4, (default: T (reject): "
            "[30.00/15.00] [GTUBE(0.00){}]), len: 277",
        ]
    )
    assert (scan.queue_id, scan.client_ip, scan.detail["action"], scan.reason) == (
        "B7DEA22066C",
        "1.2.3.4",
        "reject",
        "msg.spam",
    )


def test_clamav_milter_infected_message_names_virus_queue_id_and_message_id() -> None:
    (scan,) = _events(
        [
            "Dec 27 16:05:17 mail clamav-milter[55]: Message B7DEA22066C from <example@gmail.com> to "
            "<freddie@example.ca> with subject 'x' message-id '<CAARX@mail.gmail.com>' date 'Sat' infected by "
            "Eicar-Test-Signature",
        ]
    )
    assert (scan.kind, scan.reason, scan.detail["virus"], scan.queue_id, scan.client_ip) == (
        "scan",
        "msg.virus",
        "Eicar-Test-Signature",
        "B7DEA22066C",
        "74.125.82.52",
    )
