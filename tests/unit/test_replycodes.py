"""The one parser for SMTP reply codes and enhanced status codes (mailwarden.replycodes)."""

from __future__ import annotations

import pytest

from mailwarden import replycodes
from mailwarden.deliver.downstream import DownstreamReply
from mailwarden.smtp import replies
from mailwarden.trace import bounce, status_codes


@pytest.mark.parametrize(
    ("text", "code", "enhanced", "rest"),
    [
        ("550 5.1.1 <bob@x.test>: Recipient address rejected", 550, "5.1.1", "<bob@x.test>: Recipient"),
        ("450-4.7.25 Client host rejected", 450, "4.7.25", "Client host"),
        ("554 Service unavailable", 554, None, "Service"),
        ("5.7.1 Relay access denied", None, "5.7.1", "Relay"),
        ("250 2.0.0", 250, "2.0.0", ""),
        ("250 2.0.0x", 250, None, "2.0.0x"),  # not a code followed by words: text
        ("354 End data with <CR><LF>.<CR><LF>", None, None, "354 End"),  # not a reporting reply
        ("Recipient address rejected", None, None, "Recipient"),
    ],
)
def test_leading_codes_are_split_from_the_reply_text(text: str, code: int, enhanced: str, rest: str) -> None:
    found = replycodes.leading(text)
    assert (found.code, found.enhanced) == (code, enhanced)
    assert text[found.end :].startswith(rest)


def test_our_reply_a_downstream_answer_a_quoted_bounce_and_explain_read_the_same_codes() -> None:
    line = "550 5.1.1 The mailbox bob@x.test does not exist. ref=ABCDEFGHJKMN"
    ours = replies.parse(line)
    downstream = DownstreamReply(550, line[4:])
    quoted = bounce.parse(
        f"Subject: failure\n\n<bob@x.test>: host mx[192.0.2.1] said: {line} (in reply to RCPT TO)\n".encode()
    )
    assert (ours.code, ours.enhanced) == (550, "5.1.1")
    assert downstream.enhanced == "5.1.1"
    assert (quoted.smtp_code, quoted.enhanced) == (550, "5.1.1")
    assert status_codes.explain(" 5.1.1 ", "en")[2].startswith("Bad destination mailbox address")


def test_an_enhanced_code_inside_a_longer_number_is_not_one() -> None:
    assert replycodes.enhanced_in("version 1.5.1.1 of 10.4.4.4") is None
    assert replycodes.enhanced_in("Status: 4.2.2 (mailbox full)") == "4.2.2"
    assert replycodes.parts("5.7.25") == ("5", "7", "25")
    assert replycodes.parts("6.1.1") is None


def test_wire_lines_of_a_reply_carry_their_code_and_whether_more_follow() -> None:
    assert replycodes.wire_line(b"250-PIPELINING\r\n") == (250, False, b"PIPELINING")
    assert replycodes.wire_line(b"354 go ahead\n") == (354, True, b"go ahead")
    assert replycodes.wire_line(b"hello\r\n") is None
