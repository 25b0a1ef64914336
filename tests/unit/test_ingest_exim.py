"""Exim's mainlog: one message per Exim id, from arrival to Completed; rejects and failed logins by client."""

from __future__ import annotations

from mailwarden.events import Event
from mailwarden.ingest import parse_lines

MAINLOG = """\
2026-11-28 09:44:33 10HmaX-000000005vi-0000 <= alice@sender.test H=mail.sender.test (helo.sender.test) [192.0.2.5]:4321 P=esmtp S=1234 id=m1@sender.test
2026-11-28 09:44:34 10HmaX-000000005vi-0000 => bob@dest.test <Bob@Dest.test> R=dnslookup T=remote_smtp H=mx.dest.test [198.51.100.1] C="250 2.0.0 OK id=1"
2026-11-28 09:44:34 10HmaX-000000005vi-0000 -> carol@dest.test R=dnslookup T=remote_smtp H=mx.dest.test [198.51.100.1] C="250 OK"
2026-11-28 09:44:34 10HmaX-000000005vi-0000 ** nobody@dest.test R=dnslookup T=remote_smtp H=mx.dest.test [198.51.100.1]: SMTP error from remote mail server after RCPT TO:<nobody@dest.test>: 550 5.1.1 User unknown
2026-11-28 09:44:34 10HmaX-000000005vi-0000 == later@dest.test R=dnslookup T=remote_smtp defer (-44): SMTP error from remote mail server after RCPT TO:<later@dest.test>: 451 4.7.1 Greylisted
2026-11-28 09:44:34 10HmbD-000000005vi-0000 <= <> R=10HmaX-000000005vi-0000 U=Debian-exim P=local S=2200
2026-11-28 09:44:35 10HmaX-000000005vi-0000 Completed
2026-11-28 09:45:00 H=bad.example [203.0.113.9]:5000 F=<spam@bad.example> rejected RCPT <bob@dest.test>: "JunkMail rejected - bad.example [203.0.113.9]:5000 is in an RBL: https://www.spamhaus.org/sbl/query/SBLCSS"
2026-11-28 09:45:01 dovecot_login authenticator failed for (User) [192.0.2.37]:21298: 535 Incorrect authentication data (set_id=test@domain.com)
""".splitlines()


def _events() -> list[Event]:
    return [e for e in parse_lines(MAINLOG, node="exim1") if e.kind != "unknown"]


def test_arrival_gives_every_line_of_the_message_its_sender_client_and_message_id() -> None:
    message = [e for e in _events() if e.queue_id == "10HmaX-000000005vi-0000"]
    assert [e.kind for e in message] == ["accept", "deliver", "deliver", "bounce", "defer"]
    for event in message:
        assert (event.sender, event.message_id, event.client_ip, event.size) == (
            "alice@sender.test",
            "<m1@sender.test>",
            "192.0.2.5",
            1234,
        )
        assert (event.client_name, event.helo, event.source, event.node) == (
            "mail.sender.test",
            "helo.sender.test",
            "exim",
            "exim1",
        )


def test_deliveries_failures_and_deferrals_carry_recipient_code_and_reply() -> None:
    _, first, second, failed, deferred = [e for e in _events() if e.queue_id == "10HmaX-000000005vi-0000"]
    assert (first.recipient, first.smtp_code, first.reply, first.detail["orig_to"]) == (
        "bob@dest.test",
        250,
        "250 2.0.0 OK id=1",
        "Bob@Dest.test",
    )
    assert second.recipient == "carol@dest.test"
    assert (failed.recipient, failed.smtp_code, failed.enhanced_code, failed.reason) == (
        "nobody@dest.test",
        550,
        "5.1.1",
        "rcpt.unknown_user",
    )
    assert (deferred.recipient, deferred.smtp_code, deferred.reason) == ("later@dest.test", 451, "greylisted")


def test_a_bounce_names_its_parent_message() -> None:
    bounce = next(e for e in _events() if e.queue_id == "10HmbD-000000005vi-0000")
    assert (bounce.kind, bounce.sender, bounce.detail["bounce_of"]) == ("accept", "", "10HmaX-000000005vi-0000")


def test_rejects_and_failed_logins_are_keyed_by_the_client() -> None:
    rejected, login = [e for e in _events() if e.queue_id is None]
    assert (rejected.kind, rejected.client_ip, rejected.client_name, rejected.sender, rejected.recipient) == (
        "reject",
        "203.0.113.9",
        "bad.example",
        "spam@bad.example",
        "bob@dest.test",
    )
    assert rejected.reason == "client.dnsbl"
    assert (login.kind, login.detail["result"], login.client_ip, login.helo, login.recipient) == (
        "login",
        "failed",
        "192.0.2.37",
        "User",
        "test@domain.com",
    )


def test_a_command_quoting_a_forged_host_names_the_real_client() -> None:
    line = (
        '2017-11-28 14:14:32 SMTP protocol error in "aUtH lOgIn" H=(test) [8.8.8.8]" H=(roxzgj) [192.0.2.6] '
        "AUTH command used when not advertised"
    )
    (event,) = parse_lines([line])
    assert (event.kind, event.client_ip, event.reason) == ("reject", "192.0.2.6", "protocol.violation")


def test_a_message_id_forging_fields_does_not_replace_them() -> None:
    line = "2026-11-28 09:44:33 10HmaZ-000000005vi-0000 <= a@x.test H=h [192.0.2.5] P=esmtp S=10 id=m@x S=999999 H=evil [6.6.6.6]"
    (event,) = parse_lines([line])
    assert (event.size, event.client_ip) == (10, "192.0.2.5")
