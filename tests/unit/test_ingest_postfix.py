"""Postfix lines become one message per queue life, joined to its session, with every recipient's fate."""

from __future__ import annotations

from mailwarden.events import Event
from mailwarden.ingest import parse_lines
from mailwarden.messages.keys import hop, links_of
from tests.support.postfix import RELAY_LOG


def _events(lines: list[str]) -> list[Event]:
    return [e for e in parse_lines(lines) if e.kind != "unknown"]


def _of(events: list[Event], queue_id: str) -> list[Event]:
    return [e for e in events if e.queue_id == queue_id]


def test_every_event_of_a_queue_file_knows_its_message_id_sender_size_and_client() -> None:
    events = _of(_events(RELAY_LOG), "A59FE214716")
    assert [e.kind for e in events] == ["accept", "bounce", "deliver", "check"]
    for event in events:
        assert event.message_id == "<pf1@sender.test>"
        assert event.sender == "alice@sender.test"
        assert event.size == 430
        assert event.client_ip == "127.0.0.1" and event.client_name == "localhost"
        assert event.session == "postfix/smtpd[19314]@1795840997"
        assert event.node == "mta"


def test_each_recipient_gets_its_status_code_and_reply() -> None:
    events = _of(_events(RELAY_LOG), "A59FE214716")
    bounced = next(e for e in events if e.recipient == "reject-me@dest.test")
    delivered = next(e for e in events if e.recipient == "bob@dest.test")
    assert (bounced.kind, bounced.smtp_code, bounced.enhanced_code) == ("bounce", 550, "5.7.1")
    assert "test policy says no" in (bounced.reply or "")
    assert (delivered.kind, delivered.smtp_code, delivered.reason) == ("deliver", 250, "delivered")
    assert delivered.detail["next_queue_id"] == "TEST1"
    assert delivered.detail["relay"] == "127.0.0.1[127.0.0.1]:2525"


def test_the_bounce_notification_is_linked_both_ways() -> None:
    events = _events(RELAY_LOG)
    notice = next(e for e in events if e.detail.get("notification") == "non-delivery")
    assert (notice.kind, notice.queue_id, notice.detail["notification_queue_id"]) == (
        "check",
        "A59FE214716",
        "A987F214719",
    )
    child = _of(events, "A987F214719")
    assert [e.kind for e in child] == ["accept", "deliver"]
    assert all(e.sender == "" and e.detail["notification_of"] == "A59FE214716" for e in child)
    assert child[1].recipient == "alice@sender.test"


def test_a_noqueue_reject_belongs_to_its_session_without_a_queue_id() -> None:
    events = _events(
        [
            "Nov 28 04:44:17 mta postfix/smtpd[6917]: connect from client.example[192.0.2.9]",
            "Nov 28 04:44:17 mta postfix/smtpd[6917]: NOQUEUE: reject: RCPT from client.example[192.0.2.9]: 554 5.7.1 "
            "<blocked@dest.test>: Recipient address rejected: blocked by local policy; from=<alice@sender.test> "
            "to=<blocked@dest.test> proto=ESMTP helo=<client.test>",
            "Nov 28 04:44:18 mta postfix/smtpd[6917]: NOQUEUE: reject: RCPT from client.example[192.0.2.9]: 550 5.1.1 "
            "<nobody@dest.test>: Recipient address rejected: User unknown in virtual mailbox table; "
            "from=<alice@sender.test> to=<nobody@dest.test> proto=ESMTP helo=<client.test>",
            "Nov 28 04:44:18 mta postfix/smtpd[6917]: disconnect from client.example[192.0.2.9] ehlo=1 mail=1 "
            "rcpt=0/2 quit=1 commands=3/5",
        ]
    )
    connect, policy, unknown_user, disconnect = events
    assert {e.session for e in events} == {"postfix/smtpd[6917]@1795841057"}
    assert (policy.kind, policy.queue_id, policy.recipient, policy.sender, policy.helo) == (
        "reject",
        None,
        "blocked@dest.test",
        "alice@sender.test",
        "client.test",
    )
    assert (unknown_user.reason, unknown_user.smtp_code, unknown_user.enhanced_code) == (
        "rcpt.unknown_user",
        550,
        "5.1.1",
    )
    assert unknown_user.reply == (
        "550 5.1.1 <nobody@dest.test>: Recipient address rejected: User unknown in virtual mailbox table"
    )
    assert disconnect.detail["commands"] == "ehlo=1 mail=1 rcpt=0/2 quit=1 commands=3/5"
    assert connect.client_name == "client.example"


def test_reasons_for_dnsbl_relay_and_postscreen() -> None:
    events = _events(
        [
            "Dec 30 18:19:15 xxx postfix/smtpd[1574]: NOQUEUE: reject: RCPT from badguy.example.com[93.184.216.34]: "
            "454 4.7.1 Service unavailable; Client host [93.184.216.34] blocked using rbl.example.com; "
            "http://www.example.com/query?ip=93.184.216.34; from=<spammer@example.com> to=<goodguy@example.com> "
            "proto=ESMTP helo=<badguy.example.com>",
            "Jul 12 07:47:48 saturn postfix/smtpd[8738]: NOQUEUE: reject: RCPT from x[1.2.3.4]: 554 5.7.1 "
            "<smtp@example.com>: Relay access denied; from=<john@example.com> to=<smtp@example.org> proto=SMTP helo=<h>",
            "Oct 31 02:15:14 pmg postfix/postscreen[6185]: NOQUEUE: reject: RCPT from [192.0.2.213]:12641: 550 5.7.1 "
            "Service unavailable; client [192.0.2.213] blocked using zen.spamhaus.org; from=<contact@spammer1.example>, "
            "to=<list1@listserv.domain.example>, proto=ESMTP, helo=<spammer1.example>",
        ]
    )
    rbl, relay, postscreen = events
    assert (rbl.kind, rbl.reason, rbl.detail["zone"], rbl.recipient) == (
        "tempfail",
        "client.dnsbl",
        "rbl.example.com",
        "goodguy@example.com",
    )
    assert relay.reason == "rcpt.relay_denied"
    assert (postscreen.reason, postscreen.detail["zone"], postscreen.recipient, postscreen.helo) == (
        "client.dnsbl",
        "zen.spamhaus.org",
        "list1@listserv.domain.example",
        "spammer1.example",
    )


def test_a_queue_id_reused_after_removed_starts_a_new_message() -> None:
    events = _events(
        [
            "Nov 28 04:00:00 mx postfix/smtpd[1]: 1A2B3C4D5E: client=a.example[192.0.2.1]",
            "Nov 28 04:00:00 mx postfix/cleanup[2]: 1A2B3C4D5E: message-id=<first@a.example>",
            "Nov 28 04:00:00 mx postfix/qmgr[3]: 1A2B3C4D5E: from=<a@a.example>, size=100, nrcpt=1 (queue active)",
            "Nov 28 04:00:01 mx postfix/qmgr[3]: 1A2B3C4D5E: removed",
            "Nov 28 09:00:00 mx postfix/smtpd[7]: 1A2B3C4D5E: client=b.example[192.0.2.2]",
            "Nov 28 09:00:00 mx postfix/cleanup[2]: 1A2B3C4D5E: message-id=<second@b.example>",
            "Nov 28 09:00:00 mx postfix/qmgr[3]: 1A2B3C4D5E: from=<b@b.example>, size=200, nrcpt=1 (queue active)",
            "Nov 28 09:00:01 mx postfix/lmtp[9]: 1A2B3C4D5E: to=<u@x.test>, relay=mx[private/dovecot-lmtp], delay=1, "
            "delays=0/0/0/1, dsn=2.0.0, status=sent (250 2.0.0 <u@x.test> oJU8FT9sCmtKRAAAg+zDdQ Saved)",
        ]
    )
    first, second, delivered = events
    assert (first.message_id, first.client_ip, first.sender) == ("<first@a.example>", "192.0.2.1", "a@a.example")
    assert (second.message_id, second.client_ip, second.sender) == ("<second@b.example>", "192.0.2.2", "b@b.example")
    assert (delivered.message_id, delivered.client_ip) == ("<second@b.example>", "192.0.2.2")
    assert delivered.detail["downstream_session"] == "oJU8FT9sCmtKRAAAg+zDdQ"


def test_lines_out_of_order_within_a_second_stay_one_message() -> None:
    events = _events(
        [
            "Nov 28 04:00:00 mx postfix/smtpd[1]: 1A2B3C4D5F: client=a.example[192.0.2.1]",
            "Nov 28 04:00:00 mx postfix/qmgr[3]: 1A2B3C4D5F: removed",
            "Nov 28 04:00:00 mx postfix/lmtp[9]: 1A2B3C4D5F: to=<u@x.test>, relay=mx[private/dovecot-lmtp], "
            "delay=0.1, delays=0/0/0/0.1, dsn=2.0.0, status=sent (250 2.0.0 Ok)",
            "Nov 28 04:00:00 mx postfix/qmgr[3]: 1A2B3C4D5F: from=<a@a.example>, size=100, nrcpt=1 (queue active)",
            "Nov 28 04:00:00 mx postfix/cleanup[2]: 1A2B3C4D5F: message-id=<late@a.example>",
        ]
    )
    delivered, accepted = events
    assert delivered.kind == "deliver"
    assert (delivered.message_id, delivered.sender, delivered.client_ip) == (
        "<late@a.example>",
        "a@a.example",
        "192.0.2.1",
    )
    assert accepted.kind == "accept" and accepted.message_id == "<late@a.example>"


def test_a_content_filter_reinjection_continues_the_original_message() -> None:
    events = _events(
        [
            "Dec 27 16:05:16 mail postfix/smtpd[100]: connect from mail-wm0.google.com[74.125.82.52]",
            "Dec 27 16:05:16 mail postfix/smtpd[100]: B7DEA22066C: client=mail-wm0.google.com[74.125.82.52]",
            "Dec 27 16:05:16 mail postfix/cleanup[101]: B7DEA22066C: message-id=<CAARX@mail.gmail.com>",
            "Dec 27 16:05:16 mail postfix/qmgr[102]: B7DEA22066C: from=<example@gmail.com>, size=2003, nrcpt=1 (queue active)",
            "Dec 27 16:05:18 mail postfix/smtpd[200]: connect from localhost[127.0.0.1]",
            "Dec 27 16:05:18 mail postfix/smtpd[200]: 74FF5220670: client=localhost[127.0.0.1], "
            "orig_queue_id=B7DEA22066C, orig_client=mail-wm0.google.com[74.125.82.52]",
            "Dec 27 16:05:18 mail postfix/cleanup[101]: 74FF5220670: message-id=<CAARX@mail.gmail.com>",
            "Dec 27 16:05:18 mail postfix/smtp[103]: B7DEA22066C: to=<freddie@example.ca>, relay=127.0.0.1[127.0.0.1]:10024, "
            "delay=1.5, delays=0.1/0/0/1.4, dsn=2.0.0, status=sent (250 2.0.0 from MTA(smtp:[127.0.0.1]:10025): "
            "250 2.0.0 Ok: queued as 74FF5220670)",
            "Dec 27 16:05:18 mail postfix/qmgr[102]: 74FF5220670: from=<example@gmail.com>, size=2600, nrcpt=1 (queue active)",
            "Dec 27 16:05:18 mail postfix/lmtp[104]: 74FF5220670: to=<freddie@example.ca>, relay=mail[private/dovecot-lmtp], "
            "delay=0.1, delays=0/0/0/0.1, dsn=2.0.0, status=sent (250 2.0.0 <freddie@example.ca> 5GjrDafYTFE7WAAABf1gKA Saved)",
        ]
    )
    final = next(e for e in events if e.queue_id == "74FF5220670" and e.kind == "deliver")
    assert (final.client_ip, final.client_name, final.message_id) == (
        "74.125.82.52",
        "mail-wm0.google.com",
        "<CAARX@mail.gmail.com>",
    )
    assert final.detail["orig_queue_id"] == "B7DEA22066C"
    assert final.detail["via"] == "localhost[127.0.0.1]"
    handoff = next(e for e in events if e.queue_id == "B7DEA22066C" and e.kind == "deliver")
    assert handoff.detail["next_queue_id"] == "74FF5220670"


def test_multi_instance_names_long_queue_ids_and_milter_rejects() -> None:
    events = _events(
        [
            "May  6 09:30:12 mail postfix-in/smtpd[17001]: 4Zk8mP2gqRz1J0N: client=x.example[192.0.2.7]",
            "May  6 09:30:12 mail postfix-in/cleanup[17002]: 4Zk8mP2gqRz1J0N: milter-reject: END-OF-MESSAGE from "
            "x.example[192.0.2.7]: 5.7.1 Blocked by SpamAssassin; from=<a@x.example> to=<b@y.example> proto=ESMTP helo=<x>",
            "May  6 09:31:12 mail postfix/submission/smtpd[17005]: warning: unknown[203.0.113.30]: SASL LOGIN "
            "authentication failed: (reason unavailable), sasl_username=test@example.org",
        ]
    )
    milter, sasl = events
    assert (milter.kind, milter.queue_id, milter.enhanced_code, milter.reason, milter.recipient) == (
        "reject",
        "4Zk8mP2gqRz1J0N",
        "5.7.1",
        "msg.spam",
        "b@y.example",
    )
    assert milter.client_ip == "192.0.2.7"
    assert (sasl.kind, sasl.detail["result"], sasl.client_ip, sasl.recipient) == (
        "login",
        "failed",
        "203.0.113.30",
        "test@example.org",
    )


def test_a_forged_helo_cannot_set_sender_or_recipient() -> None:
    forged = "x; from=<forged@evil.test> to=<victim@dest.test> proto=ESMTP helo=<y"
    line = (
        f"Nov 28 04:44:17 mta postfix/smtpd[6917]: NOQUEUE: reject: RCPT from unknown[192.0.2.66]: 504 5.5.2 "
        f"<{forged}>: Helo command rejected: need fully-qualified hostname; from=<real@sender.test> "
        f"to=<real@dest.test> proto=ESMTP helo=<{forged}>"
    )
    (event,) = _events([line])
    assert (event.sender, event.recipient, event.helo) == ("real@sender.test", "real@dest.test", forged)
    assert event.reason == "helo.invalid"


def test_a_forged_address_or_reply_cannot_turn_a_bounce_into_a_delivery() -> None:
    quoted = '"x>, relay=evil, delay=0, delays=0/0/0/0, dsn=2.0.0, status=sent (ok"@dest.test'
    lines = [
        f"Nov 28 04:00:00 mx postfix/smtp[1]: 1A2B3C4D60: to=<{quoted}>, relay=r[192.0.2.1]:25, delay=1, "
        "delays=0/0/0/1, dsn=5.1.1, status=bounced (host r[192.0.2.1] said: 550 5.1.1 no such user)",
        "Nov 28 04:00:00 mx postfix/smtp[1]: 1A2B3C4D61: to=<bob@dest.test>, relay=r[192.0.2.1]:25, delay=1, "
        "delays=0/0/0/1, dsn=5.1.1, status=bounced (host r[192.0.2.1] said: 550 x>, relay=evil, delay=0, "
        "delays=0/0/0/0, dsn=2.0.0, status=sent (ok))",
    ]
    first, second = _events(lines)
    assert (first.kind, first.recipient, first.enhanced_code) == ("bounce", quoted, "5.1.1")
    assert (second.kind, second.recipient, second.enhanced_code) == ("bounce", "bob@dest.test", "5.1.1")


def test_one_line_never_makes_two_events_even_with_a_newline_inside() -> None:
    line = (
        "Nov 28 04:44:17 mta postfix/smtpd[6917]: NOQUEUE: reject: RCPT from unknown[192.0.2.66]: 550 5.1.1 "
        "<a\rNov 28 04:44:17 mta postfix/smtp[1]: 1A2B3C4D62: to=<v@x>, relay=r, delay=0, delays=0/0/0/0, dsn=2.0.0, "
        "status=sent (ok)>: Recipient address rejected: User unknown; from=<s@x> to=<a@x> proto=ESMTP helo=<h>"
    )
    events = parse_lines([line])
    assert [e.kind for e in events] == ["reject"]


# mailwarden as this Postfix's milter (docs/postfix.md): the lines Postfix logs of one test run,
# our refs in the refusals and in our header field logged through milter_header_checks.
MILTER_LOG = [
    "Dec 07 03:33:31 mta postfix/smtpd[12567]: A469A228285: client=unknown[127.0.0.10]",
    "Dec 07 03:33:31 mta postfix/cleanup[12575]: A469A228285: milter-header-info: header X-Mailwarden-Ref: "
    "1C4525SHG001 from unknown[127.0.0.10]; from=<alice@good.test> to=<bob@example.test> proto=ESMTP "
    "helo=<mail.good.test>: ",
    "Dec 07 03:33:31 mta postfix/virtual[12577]: A469A228285: to=<bob@example.test>, relay=virtual, delay=0.11, "
    "delays=0.08/0.02/0/0, dsn=2.0.0, status=sent (delivered to maildir)",
    "Dec 07 03:33:31 mta postfix/smtpd[12568]: NOQUEUE: milter-reject: RCPT from unknown[127.0.0.10]: 550 5.1.1 "
    "The mailbox nobody@example.test does not exist here; please check the address for typing errors. "
    "ref=1C4525SHG002; from=<alice@good.test> to=<nobody@example.test> proto=ESMTP helo=<mail.good.test>",
    "Dec 07 03:33:32 mta postfix/smtpd[12567]: B7C992281C2: client=unknown[127.0.0.10]",
    "Dec 07 03:33:32 mta postfix/cleanup[12575]: B7C992281C2: milter-reject: END-OF-MESSAGE from "
    "unknown[127.0.0.10]: 5.7.1 Virus Eicar-Test-Signature.UNOFFICIAL found in the attachment invoice.com; "
    "the message was not accepted. Clean the sender's computer and send the message again without the "
    "infected file. ref=1C4525SHG003; from=<alice@good.test> to=<bob@example.test> proto=ESMTP helo=<mail.good.test>",
]


def test_our_ref_in_a_milter_reject_or_our_header_field_links_postfixs_message_to_our_transaction() -> None:
    events = _events(MILTER_LOG)
    linked = {e.detail["prev_key"]: e.message_key for e in events if "prev_key" in e.detail}
    clean = next(e.message_key for e in _of(events, "A469A228285") if e.kind == "deliver")
    refused = next(e.message_key for e in events if e.recipient == "nobody@example.test")
    virus = next(e.message_key for e in _of(events, "B7C992281C2"))
    assert linked == {"1C4525SHG001": clean, "1C4525SHG002": refused, "1C4525SHG003": virus}
    assert all(links_of(e) == hop(e.detail["prev_key"], e.message_key, None) for e in events if "prev_key" in e.detail)


def test_a_ref_a_stranger_wrote_links_nothing() -> None:
    events = _events(
        [
            # Postfix's own refusal echoing a HELO, not a reply of our milter
            "Dec 07 03:40:01 mta postfix/smtpd[300]: NOQUEUE: reject: RCPT from unknown[192.0.2.9]: 504 5.5.2 "
            "<x ref=1C4525SHG001>: Helo command rejected: need fully-qualified hostname; "
            "from=<a@b.test> to=<bob@example.test> proto=ESMTP helo=<x ref=1C4525SHG001>",
            # a ref inside the reply's text, not ours at its end
            "Dec 07 03:40:02 mta postfix/smtpd[300]: NOQUEUE: milter-reject: RCPT from unknown[192.0.2.9]: 550 5.7.1 "
            "said ref=1C4525SHG001 and more; from=<a@b.test> to=<bob@example.test> proto=ESMTP helo=<x>",
            # the sender's own field, seen by header_checks rather than milter_header_checks
            "Dec 07 03:40:03 mta postfix/smtpd[301]: C0FFEE12345: client=unknown[192.0.2.9]",
            "Dec 07 03:40:03 mta postfix/cleanup[302]: C0FFEE12345: info: header X-Mailwarden-Ref: 1C4525SHG001 "
            "from unknown[192.0.2.9]; from=<a@b.test> to=<bob@example.test> proto=ESMTP helo=<x>",
        ]
    )
    assert len(events) == 3
    assert not any("prev_key" in e.detail for e in events)


def test_each_of_our_transactions_refused_before_a_queue_file_stays_a_message_of_its_own() -> None:
    refusal = (
        "Dec 07 03:50:0{second} mta postfix/smtpd[400]: NOQUEUE: milter-reject: RCPT from unknown[127.0.0.10]: 550 5.1.1 "
        "The mailbox {to} does not exist here; please check the address for typing errors. ref={ref}; "
        "from=<alice@good.test> to=<{to}> proto=ESMTP helo=<mail.good.test>"
    )
    events = _events(
        [
            "Dec 07 03:50:00 mta postfix/smtpd[400]: connect from unknown[127.0.0.10]",
            refusal.format(second=1, to="a@example.test", ref="1C4525SHG004"),
            refusal.format(second=1, to="b@example.test", ref="1C4525SHG004"),  # one transaction, two recipients
            refusal.format(second=2, to="a@example.test", ref="1C4525SHG005"),  # the same sender after RSET
        ]
    )
    first, second, third = (e for e in events if e.kind == "reject")
    assert first.message_key == second.message_key != third.message_key
    assert (first.detail["prev_key"], third.detail["prev_key"]) == ("1C4525SHG004", "1C4525SHG005")
