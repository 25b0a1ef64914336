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


FORGED = b"Authentication-Results: mx.example.test;\r\n\tspf=pass smtp.mailfrom=alice@sender.test;\r\n\tdmarc=pass\r\n"
FOREIGN = b"Authentication-Results: relay.sender.test; spf=pass smtp.mailfrom=alice@sender.test\r\n"


def test_forged_authentication_results_with_our_authserv_id_are_left_out_and_all_else_is_byte_identical(
    gateway: Mailwarden,
) -> None:
    """RFC 8601 section 5, also for a message large enough to be spooled to disk and streamed."""
    body = b"".join(b"line %06d of a long message\r\n" % n for n in range(45_000))  # about 1.4 MB
    sent = {
        "small": b"Received: from relay.sender.test\r\n" + FORGED + FOREIGN + MESSAGE,
        "spooled": FOREIGN + FORGED + MESSAGE.replace(b"Hello Bob.\r\n", body) + FORGED,  # the last is body
    }
    with smtplib.SMTP("127.0.0.1", gateway.smtp_port) as client:
        for content in sent.values():
            client.sendmail("alice@sender.test", ["bob@example.test"], content)
    stored = sorted(gateway.messages("bob@example.test"), key=len)
    for (name, content), copy in zip(sent.items(), stored, strict=True):
        expected = content.replace(FORGED, b"", 1)
        assert copy.endswith(expected), name
        ours = copy[: -len(expected)]
        assert ours.startswith(b"Received: from ") and ours.count(b"\r\nX-Mailwarden-Ref: ") == 1, name
        assert FORGED not in copy[: copy.index(b"\r\n\r\n")], name  # ours (from the DMARC check) may be there
    accepted = [e for e in gateway.events() if e["kind"] == "accept"]
    assert [e["detail"]["forged_fields_removed"] for e in accepted] == [1, 1]
    assert sorted(e["size"] for e in accepted) == [len(copy) for copy in stored]
