"""The gateway's basic promises, shown against a real `mailwarden serve` process."""

from __future__ import annotations

import smtplib

from tests.support.mailwarden import Mailwarden

MESSAGE = b"From: Alice <alice@sender.test>\r\nTo: bob@example.test\r\nSubject: hello\r\nMessage-ID: <m1@sender.test>\r\n\r\nHello Bob.\r\n"


def test_known_mailbox_gets_the_message_byte_identical_after_our_trace_headers(gateway: Mailwarden) -> None:
    with smtplib.SMTP("127.0.0.1", gateway.smtp_port) as client:
        client.sendmail("alice@sender.test", ["bob@example.test"], MESSAGE)
    (stored,) = gateway.messages("bob@example.test")
    assert stored.endswith(MESSAGE)
    head = stored[: -len(MESSAGE)]
    assert head.startswith(b"Received: from ")
    assert b"X-Mailwarden-Ref: " in head


def test_unknown_mailbox_is_refused_with_550_5_1_1_and_a_ref(gateway: Mailwarden) -> None:
    with smtplib.SMTP("127.0.0.1", gateway.smtp_port) as client:
        client.ehlo("client.sender.test")
        client.mail("alice@sender.test")
        code, text = client.rcpt("nobody@example.test")
    assert code == 550
    assert text.startswith(b"5.1.1 The mailbox nobody@example.test does not exist here")
    assert b" ref=" in text
    (reject,) = [e for e in gateway.events() if e["kind"] == "reject"]
    assert reject["reason"] == "rcpt.unknown_user"
    assert reject["recipient"] == "nobody@example.test"
    assert text.decode().endswith(f"ref={reject['ref']}")
