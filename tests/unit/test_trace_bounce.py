"""explain-bounce: DSNs and pasted bounce texts become an answer; bad input gets a precise one."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from mailwarden.config import Config
from mailwarden.events import Event
from mailwarden.store.sqlite import SqliteStore
from mailwarden.trace import bounce, commands, status_codes

# A Postfix DSN as the recipes captured it (shared/recipes/README.md, section 1), shortened.
POSTFIX_DSN = b"""From: Mail Delivery System <MAILER-DAEMON@mta.example.test>
Subject: Undelivered Mail Returned to Sender
MIME-Version: 1.0
Content-Type: multipart/report; report-type=delivery-status; boundary="B1"

--B1
Content-Type: text/plain

<reject-me@dest.test>: host 127.0.0.1[127.0.0.1] said: 550 5.7.1
    <reject-me@dest.test>: Recipient address rejected: test policy says no (in
    reply to RCPT TO command)

--B1
Content-Type: message/delivery-status

Reporting-MTA: dns; mta.example.test
X-Postfix-Queue-ID: 631FB210139

Final-Recipient: rfc822; reject-me@dest.test
Original-Recipient: rfc822;reject-me@dest.test
Action: failed
Status: 5.7.1
Remote-MTA: dns; 127.0.0.1
Diagnostic-Code: smtp; 550 5.7.1 <reject-me@dest.test>: Recipient address
    rejected: test policy says no

--B1--
"""

OUR_REFUSAL = b"""This is the mail system at host smtp.sender.test.

I'm sorry to have to inform you that your message could not
be delivered to one or more recipients.

<bbo@example.test>: host mx.example.test[192.0.2.25] said: 550 5.1.1 The
    mailbox bbo@example.test does not exist here; please check the address for
    typing errors. ref=1BRD52F70000 (in reply to RCPT TO command)
"""

EXIM_TEXT = b"""This message was created automatically by mail delivery software.
A message that you sent could not be delivered to one or more of its recipients.
  carol@far.test
    SMTP error from remote mail server after RCPT TO:<carol@far.test>:
    host mx.far.test [203.0.113.5]: 552 5.2.2 Mailbox full
"""


def test_a_postfix_dsn_yields_remote_mta_status_and_diagnostic() -> None:
    found = bounce.parse(POSTFIX_DSN)
    assert found.reporting_mta == "mta.example.test"
    assert (found.remote_mta, found.remote_ip) == ("127.0.0.1", "127.0.0.1")
    assert (found.smtp_code, found.enhanced) == (550, "5.7.1")
    assert found.diagnostic is not None and "test policy says no" in found.diagnostic
    (recipient,) = found.recipients
    assert (recipient.address, recipient.action, recipient.status) == ("reject-me@dest.test", "failed", "5.7.1")
    assert found.refs == []


def test_pasted_text_with_our_ref_is_linked_to_our_trace(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    config = Config(store={"url": f"sqlite:///{tmp_path}/events.db"}, base_dir=tmp_path)  # type: ignore[arg-type]
    store = SqliteStore(tmp_path / "events.db")
    store.add_mailbox("bob@example.test", "x")
    common = {
        "source": "gateway",
        "node": "mx1",
        "ref": "1BRD52F70000",
        "session": "1BRD52F70000",
        "client_ip": "192.0.2.9",
    }
    store.append_many(
        [
            Event(kind="connect", ts=1_800_000_000_000_000, **common),
            Event(kind="mail", ts=1_800_000_000_001_000, sender="alice@sender.test", **common),
            Event(
                kind="reject",
                ts=1_800_000_000_002_000,
                sender="alice@sender.test",
                recipient="bbo@example.test",
                smtp_code=550,
                enhanced_code="5.1.1",
                reply="550 5.1.1 The mailbox bbo@example.test does not exist here ref=1BRD52F70000",
                reason="rcpt.unknown_user",
                detail={"stage": "rcpt"},
                **common,
            ),
        ]
    )
    store.close()
    source = tmp_path / "bounce.txt"
    source.write_bytes(OUR_REFUSAL)
    assert commands.explain_bounce(config, str(source), lang="en", fmt="json") == 0
    answer = json.loads(capsys.readouterr().out)
    assert answer["bounce"]["refs"] == ["1BRD52F70000"]
    (linked,) = answer["traces"]
    assert (linked["status"], linked["reason"], linked["responsibility"]) == ("rejected", "rcpt.unknown_user", "sender")
    assert any("Did you mean bob@example.test?" in note for note in linked["notes"])
    assert commands.explain_bounce(config, str(source), lang="de", fmt="text") == 0
    text = capsys.readouterr().out
    assert "bezieht sich auf unsere Nachricht 1BRD52F70000" in text and "mailwarden explain 1BRD52F70000" in text


def test_a_foreign_bounce_is_explained_by_its_enhanced_status_code(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    found = bounce.parse(EXIM_TEXT)
    assert (found.remote_mta, found.remote_ip, found.smtp_code, found.enhanced) == (
        "mx.far.test",
        "203.0.113.5",
        552,
        "5.2.2",
    )
    config = Config(store={"url": f"sqlite:///{tmp_path}/events.db"}, base_dir=tmp_path)  # type: ignore[arg-type]
    source = tmp_path / "exim.txt"
    source.write_bytes(EXIM_TEXT)
    assert commands.explain_bounce(config, str(source), lang="de", fmt="text") == 0
    text = capsys.readouterr().out
    assert "Postfach voll." in text and "Dauerhafter Fehler" in text


@pytest.mark.parametrize(
    ("code", "words"),
    [
        ("5.1.1", "Bad destination mailbox address"),
        ("4.7.1", "Temporary failure"),
        ("5.7.25", "Reverse DNS"),
        ("5.7.27", "null MX"),
        ("2.0.0", "Success"),
    ],
)
def test_enhanced_status_codes_are_put_in_plain_words(code: str, words: str) -> None:
    assert any(words in sentence for sentence in status_codes.explain(code, "en"))
    assert status_codes.explain(code, "de")


@pytest.mark.parametrize(
    "data",
    [
        b"",
        b"\x00\xff\xfe binary \x1b[2J junk",
        b"Content-Type: multipart/report; boundary=x\r\n\r\n--x\r\nContent-Type: message/delivery-status\r\n\r\n",
        b"ref=" + b"A" * 100000,
    ],
)
def test_bad_input_gives_a_precise_answer_and_never_a_traceback(
    data: bytes, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = Config(store={"url": f"sqlite:///{tmp_path}/events.db"}, base_dir=tmp_path)  # type: ignore[arg-type]
    source = tmp_path / "junk"
    source.write_bytes(data)
    assert commands.explain_bounce(config, str(source), lang="en", fmt="text") == 1
    out = capsys.readouterr().out
    assert "No status code, diagnostic or reference found" in out
    assert "\x1b" not in out
