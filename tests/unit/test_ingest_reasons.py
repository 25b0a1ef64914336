"""Ingested refusals get the catalog reason their text names, read from where the MTA puts its reply."""

from __future__ import annotations

import pytest

from mailwarden import catalog
from mailwarden.events import Event
from mailwarden.ingest import parse_lines

SMTPD = "Nov 28 04:44:17 mx postfix/smtpd[6917]: NOQUEUE: reject: RCPT from mail.example.net[192.0.2.66]: "
TAIL = "; from=<bob@sender.example> to=<alice@dest.example> proto=ESMTP helo=<mail.example.net>"
SMTP = (
    "Nov 28 04:45:00 mx postfix/smtp[7001]: 4C8E5214716: to=<alice@dest.example>, relay=mx.dest.example[192.0.2.80]:25, "
    "delay=1, delays=0/0/0/1, dsn={dsn}, status={status} (host mx.dest.example[192.0.2.80] said: {reply} "
    "(in reply to {command} command))"
)
EXIM = "2026-11-28 04:46:00 H=(spammer.example) [192.0.2.9]:5000 I=[192.0.2.1]:25 F=<bob@sender.example> "


def _only(lines: list[str]) -> Event:
    events = [e for e in parse_lines(lines) if e.kind in ("reject", "tempfail", "bounce", "defer")]
    assert len(events) == 1, events
    return events[0]


@pytest.mark.parametrize(
    ("line", "reason"),
    [
        # Postfix's own restrictions (smtpd_*_restrictions)
        (
            SMTPD + "550 5.7.27 <bob@nomail.example>: Sender address rejected: Domain nomail.example does not accept "
            "mail (nullMX)" + TAIL,
            "sender.null_mx",
        ),
        (
            SMTPD + "450 4.1.8 <bob@gone.example>: Sender address rejected: Domain not found" + TAIL,
            "sender.domain_missing",
        ),
        (
            SMTPD + "554 5.7.1 Service unavailable; Client host [192.0.2.66] blocked using zen.spamhaus.org; "
            "https://www.spamhaus.org/query/ip/192.0.2.66" + TAIL,
            "client.dnsbl",
        ),
        (
            SMTPD + "450 4.7.25 Client host rejected: cannot find your reverse hostname, [192.0.2.66]" + TAIL,
            "client.no_rdns",
        ),
        (SMTPD + "504 5.5.2 <WIN-PC>: Helo command rejected: need fully-qualified hostname" + TAIL, "helo.invalid"),
        (
            SMTPD
            + "550 5.1.1 <alice@dest.example>: Recipient address rejected: User unknown in virtual mailbox table"
            + TAIL,
            "rcpt.unknown_user",
        ),
        (SMTPD + "554 5.7.1 <alice@dest.example>: Relay access denied" + TAIL, "rcpt.relay_denied"),
        (
            SMTPD + "450 4.2.0 <alice@dest.example>: Recipient address rejected: Greylisted, see "
            "http://postgrey.schweikert.ch/help/dest.example.html" + TAIL,
            "greylisted",
        ),
        (
            SMTPD + "550 5.7.23 <alice@dest.example>: Recipient address rejected: Message rejected due to: SPF fail - "
            "not authorized. Please see http://www.openspf.net/Why?s=mfrom;id=bob@sender.example;ip=192.0.2.66" + TAIL,
            "sender.spf_fail",
        ),
        (
            SMTPD
            + "503 5.5.0 <alice@dest.example>: Recipient address rejected: Improper use of SMTP command pipelining"
            + TAIL,
            "protocol.violation",
        ),
        (
            "Nov 28 04:44:17 mx postfix/smtpd[6917]: NOQUEUE: reject: MAIL from mail.example.net[192.0.2.66]: 552 5.3.4 "
            "Message size exceeds fixed limit; proto=ESMTP helo=<mail.example.net>",
            "msg.too_big",
        ),
        # content filters answering through Postfix: milters (rspamd, clamav-milter), amavis after the queue
        (
            "Nov 28 04:44:18 mx postfix/cleanup[6920]: 4C8E5214716: milter-reject: END-OF-MESSAGE from "
            "mail.example.net[192.0.2.66]: 5.7.1 Spam message rejected" + TAIL,
            "msg.spam",
        ),
        (
            "Nov 28 04:44:18 mx postfix/smtpd[6917]: NOQUEUE: milter-reject: RCPT from mail.example.net[192.0.2.66]: "
            "451 4.7.1 Try again later" + TAIL,
            "greylisted",
        ),
        (
            "Nov 28 04:44:18 mx postfix/cleanup[6920]: 4C8E5214716: milter-reject: END-OF-MESSAGE from "
            "mail.example.net[192.0.2.66]: 5.7.1 Virus found: Eicar-Signature" + TAIL,
            "msg.virus",
        ),
        (
            SMTP.format(
                dsn="5.7.0",
                status="bounced",
                reply="554 5.7.0 Reject, id=12345-01 - INFECTED: Eicar-Signature",
                command="end of DATA",
            ),
            "msg.virus",
        ),
        (
            SMTP.format(
                dsn="5.7.0",
                status="bounced",
                reply="554 5.7.0 Reject, id=12345-02 - BANNED: P=p003,L=1,M=application/x-msdownload",
                command="end of DATA",
            ),
            "msg.dangerous_attachment",
        ),
        (
            SMTP.format(
                dsn="4.2.2",
                status="deferred",
                reply="452 4.2.2 <alice@dest.example> Quota exceeded (mailbox for user is full)",
                command="end of DATA",
            ),
            "rcpt.mailbox_full",
        ),
        # Exim
        (EXIM + "rejected RCPT <alice@dest.example>: Unrouteable address", "rcpt.unknown_user"),
        (EXIM + "rejected RCPT alice@elsewhere.example: relay not permitted", "rcpt.relay_denied"),
        (
            EXIM + "rejected RCPT <alice@dest.example>: rejected because 192.0.2.9 is in a black list at "
            "zen.spamhaus.org",
            "client.dnsbl",
        ),
        (EXIM + "rejected EHLO or HELO x_y: syntactically invalid argument(s): x_y", "helo.invalid"),
        (
            "2026-11-28 04:46:00 1Unmew-0000ea-SE H=(spammer.example) [192.0.2.9]:5000 F=<bob@sender.example> "
            "rejected after DATA: This message contains a virus (Eicar-Test-Signature).",
            "msg.virus",
        ),
        (
            "2026-11-28 04:46:00 1Unmew-0000eb-SE ** alice@dest.example R=dnslookup T=remote_smtp H=mx.dest.example "
            "[192.0.2.80]: SMTP error from remote mail server after RCPT TO:<alice@dest.example>: 550 5.1.1 "
            "<alice@dest.example>: Recipient address rejected: User unknown in local recipient table",
            "rcpt.unknown_user",
        ),
        # Dovecot's LMTP and LDA
        (
            "2026-11-28 04:47:00 lmtp(alice@dest.example)<6903><UP4QFFZbCmv3GgAAg+zDdQ>: Info: msgid=<m1@sender.example>: "
            "save failed to INBOX: Quota exceeded (mailbox for user is full)",
            "rcpt.mailbox_full",
        ),
    ],
)
def test_a_refusal_gets_the_reason_its_text_names(line: str, reason: str) -> None:
    assert _only([line]).reason == reason


def test_a_sender_refused_for_malformed_dns_after_a_numeric_mx_warning_has_an_ip_literal_mx() -> None:
    lines = [
        "Nov 28 04:44:16 mx postfix/smtpd[6917]: connect from mail.example.net[192.0.2.66]",
        "Nov 28 04:44:17 mx postfix/smtpd[6917]: warning: numeric domain name in resource data of MX record for "
        "ipmx.example: 192.0.2.10",
        SMTPD + "450 4.1.8 <bob@ipmx.example>: Sender address rejected: Malformed DNS server reply"
        "; from=<bob@ipmx.example> to=<alice@dest.example> proto=ESMTP helo=<mail.example.net>",
        "Nov 28 04:44:18 mx postfix/smtpd[6917]: NOQUEUE: reject: RCPT from mail.example.net[192.0.2.66]: 450 4.1.8 "
        "<carol@other.example>: Sender address rejected: Malformed DNS server reply"
        "; from=<carol@other.example> to=<alice@dest.example> proto=ESMTP helo=<mail.example.net>",
    ]
    events = [e for e in parse_lines(lines) if e.kind != "connect"]
    assert [(e.kind, e.reason) for e in events] == [
        ("check", None),  # an MX record that is an IP address: of a sender or a recipient, the refusal tells
        ("tempfail", "sender.mx_ip_literal"),
        ("tempfail", None),  # another domain: the warning was not about it
    ]
    assert (events[0].detail["domain"], events[0].detail["record"]) == ("ipmx.example", "192.0.2.10")


# Values a stranger chooses in our replies, made to look like other causes.
HOSTILE = 'x>: Relay access denied; virus spam "User unknown" blocked using [192.0.2.1] ref=Z'
ONE_WORD = {"client_ip": "192.0.2.66", "zone": "zen.example", "domain": "sender.example", "record": "192.0.2.10"}


@pytest.mark.parametrize("reason", [r for r in catalog.CATALOG.values() if r.smtp_code >= 400], ids=lambda r: r.code)
def test_our_own_refusal_relayed_by_a_postfix_in_front_gets_its_catalog_reason(reason: catalog.Reason) -> None:
    values = {
        name: ONE_WORD.get(name, "7" if name in ("limit", "size", "count", "seconds", "delay") else HOSTILE)
        for name in reason.params
    }
    text = catalog.render(reason.reply, reason.code, values)
    line = SMTP.format(
        dsn=reason.enhanced,
        status="deferred" if reason.temporary else "bounced",
        reply=f"{reason.smtp_code} {reason.enhanced} {text} ref=0R6ZK4QW2BNA https://mx.example/why/0R6ZK4QW2BNA",
        command="RCPT TO",
    )
    assert _only([line]).reason == reason.code


# ---------------------------------------------------------------- strangers' text is not the reply
def test_a_forged_address_holding_a_catalog_phrase_does_not_set_the_reason() -> None:
    forged = '"x>: Recipient address rejected: User unknown in local recipient table; y"@dest.example'
    line = (
        f"{SMTPD}554 5.7.1 <{forged}>: Relay access denied; from=<bob@sender.example> to=<{forged}> "
        "proto=ESMTP helo=<mail.example.net>"
    )
    event = _only([line])
    assert (event.reason, event.recipient) == ("rcpt.relay_denied", forged)


def test_a_forged_helo_holding_a_catalog_word_does_not_set_the_reason() -> None:
    helo = "a>: virus found in b"  # Postfix joins HELO's words with spaces and echoes them as they came
    line = (
        f"{SMTPD}504 5.5.2 <{helo}>: Helo command rejected: need fully-qualified hostname; from=<bob@sender.example> "
        f"to=<alice@dest.example> proto=ESMTP helo=<{helo}>"
    )
    event = _only([line])
    assert (event.reason, event.helo) == ("helo.invalid", helo)


def test_a_host_name_is_not_the_reply() -> None:
    line = (
        "Nov 28 04:45:00 mx postfix/smtp[7001]: 4C8E5214716: to=<alice@dest.example>, relay=none, delay=30, "
        "delays=0/0/30/0, dsn=4.4.1, status=deferred (connect to virus-free.spamhaus-listed.example[192.0.2.80]:25: "
        "Connection timed out)"
    )
    assert _only([line]).reason is None


def test_an_exim_address_holding_a_catalog_phrase_does_not_set_the_reason() -> None:
    bracketed = _only([EXIM + 'rejected RCPT <"a>: User unknown"@dest.example>: relay not permitted'])
    bare = _only([EXIM + 'rejected RCPT "a: User unknown"@dest.example: relay not permitted'])
    assert (bracketed.reason, bracketed.recipient) == ("rcpt.relay_denied", '"a>: User unknown"@dest.example')
    assert (bare.reason, bare.recipient, bare.reply) == (
        "rcpt.relay_denied",
        '"a: User unknown"@dest.example',
        "relay not permitted",
    )


def test_a_dovecot_message_id_holding_a_failure_does_not_turn_a_delivery_into_one() -> None:
    (event,) = parse_lines(
        [
            "2026-11-28 04:47:00 lmtp(alice@dest.example)<6903><UP4QFFZbCmv3GgAAg+zDdQ>: Info: "
            "msgid=<m1: save failed to INBOX: Quota exceeded@sender.example>: saved mail to INBOX"
        ]
    )
    assert (event.kind, event.reason, event.message_id) == (
        "deliver",
        "delivered",
        "<m1: save failed to INBOX: Quota exceeded@sender.example>",
    )
