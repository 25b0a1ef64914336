"""SMTP replies: enhanced status codes everywhere, lines under 512 octets, ref and why-URL last."""

from __future__ import annotations

import pytest

from mailwarden.checks.base import Verdict
from mailwarden.smtp.replies import Reply, for_verdict, with_enhanced_code, with_ref


@pytest.mark.parametrize(
    ("reply", "expected"),
    [
        ("250 OK", "250 2.0.0 OK"),
        ("503 Error: send HELO first", "503 5.5.1 Error: send HELO first"),
        ("500 Error: bad syntax", "500 5.5.2 Error: bad syntax"),
        ("501 Syntax: MAIL FROM:<address>", "501 5.5.4 Syntax: MAIL FROM:<address>"),
        ("454 TLS not available", "454 4.7.0 TLS not available"),
        ("220 Ready to start TLS", "220 2.0.0 Ready to start TLS"),
        ("599 odd", "599 5.0.0 odd"),
        ("250-mx.example.test", "250-2.0.0 mx.example.test"),
        ("550 5.1.1 already has one", "550 5.1.1 already has one"),
        ("421 4.4.2 already has one", "421 4.4.2 already has one"),
        ("not a reply", "not a reply"),
    ],
)
def test_replies_get_an_enhanced_code_when_they_lack_one(reply: str, expected: str) -> None:
    assert with_enhanced_code(reply) == expected


def test_a_long_reply_is_wrapped_into_continuation_lines_under_512_octets() -> None:
    reply = Reply(550, "5.7.1", " ".join(["word"] * 400) + " ref=1BRDBB9HG000")
    lines = reply.wire().split("\r\n")
    assert len(lines) > 1
    assert all(line.startswith("550-5.7.1 ") for line in lines[:-1])
    assert lines[-1].startswith("550 5.7.1 ") and lines[-1].endswith("ref=1BRDBB9HG000")
    assert all(len(line.encode()) + 2 <= 512 for line in lines)


def test_utf8_text_is_wrapped_by_octets_not_characters() -> None:
    lines = Reply(554, "5.7.1", "ü" * 1000).wire().split("\r\n")
    assert all(len(line.encode()) + 2 <= 512 for line in lines)
    assert "".join(line[10:] for line in lines) == "ü" * 1000


def test_a_refusal_ends_with_the_ref_and_the_why_url() -> None:
    reply = for_verdict(
        Verdict.reject("rcpt.unknown_user", recipient="x@example.test"),
        "1BRDBB9HG000",
        "https://mx.example.test/why/",
        utf8=True,
    )
    assert (reply.code, reply.enhanced) == (550, "5.1.1")
    assert reply.text.endswith(" ref=1BRDBB9HG000 https://mx.example.test/why/1BRDBB9HG000")
    assert reply.wire().startswith("550 5.1.1 The mailbox x@example.test does not exist here")


def test_without_a_why_url_the_ref_comes_last() -> None:
    reply = for_verdict(Verdict.tempfail("infra.storage", problem="disk full"), "1BRDBB9HG000", "", utf8=True)
    assert reply.line.startswith("452 4.3.1 ")
    assert reply.line.endswith(" ref=1BRDBB9HG000")


def test_stranger_text_cannot_end_the_reply_or_add_a_line() -> None:
    reply = for_verdict(
        Verdict.reject("rcpt.unknown_user", recipient="x@example.test\r\n250 2.0.0 OK"), "1BRDBB9HG000", "", utf8=True
    )
    assert "\r" not in reply.text and "\n" not in reply.text
    assert reply.wire().count("\r\n") == 0


def test_clients_without_smtputf8_get_ascii_only() -> None:
    reply = for_verdict(
        Verdict.reject("rcpt.unknown_user", recipient="bøb@example.test"), "1BRDBB9HG000", "", utf8=False
    )
    assert reply.text.isascii()


def test_a_ref_in_stranger_text_is_escaped_so_the_only_ref_is_ours_and_last() -> None:
    reply = for_verdict(
        Verdict.reject("rcpt.unknown_user", recipient='"a ref=1C3RQE42G000 REF=1C3RQE42G001"@example.test'),
        "1BRDBB9HG000",
        "https://mx.example.test/why/",
        utf8=True,
    )
    assert reply.text.count("ref=") == 1 and "REF=" not in reply.text
    assert '"a ref\\x3d1C3RQE42G000 REF\\x3d1C3RQE42G001"@example.test' in reply.text
    assert reply.text.endswith(" ref=1BRDBB9HG000 https://mx.example.test/why/1BRDBB9HG000")
    assert with_ref("Syntax: ref=1C3RQE42G000", "1BRDBB9HG000") == "Syntax: ref\\x3d1C3RQE42G000 ref=1BRDBB9HG000"
