"""explain-bounce: DSNs and pasted bounce texts become an answer; bad input gets a precise one."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from mailwarden import trace_commands as commands
from mailwarden.config import Config
from mailwarden.events import Event
from mailwarden.trace import bounce, status_codes
from tests.support.stores import Opener

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


def test_pasted_text_with_our_ref_is_linked_to_our_trace(
    store_url: str, open_node: Opener, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = Config(store={"url": store_url}, base_dir=tmp_path)  # type: ignore[arg-type]
    store = open_node()
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


# ---------------------------------------------------------------------------- whose ref is it
OTHERS_REF = "1C3RQE42G000"  # a message of someone else, delivered
OUR_REF = "1C3RQE9HG000"  # the session that refused the bounced message


def postfix_bounce(reply: str, *, recipient: str = '"a ref=1C3RQE42G000"@@example.test', to: str = "") -> bytes:
    """Postfix's wording and wrapping around a reply (recipes: section 1), with an optional To: header."""
    said = f"<{recipient}>: host mx.example.test[192.0.2.25] said: {reply} (in reply to RCPT TO command)"
    lines, line = [], ""
    for word in said.split(" "):  # Postfix wraps at 76 columns, continuation lines indented
        if line and len(line) + 1 + len(word) > 76:
            lines.append(line)
            line = "    " + word
        else:
            line = f"{line} {word}" if line else word
    lines.append(line)
    header = f"To: {to}\nSubject: Undelivered Mail Returned to Sender\n\n" if to else ""
    return (header + "This is the mail system at host mta.evil.test.\n\n" + "\n".join(lines) + "\n").encode()


def test_a_ref_inside_the_quoted_client_text_is_not_ours_only_the_one_in_our_replys_last_position() -> None:
    old_reply = f'501 5.1.3 Syntax: RCPT TO:<address>: <"a ref={OTHERS_REF}"@@example.test> is not a valid address'
    assert bounce.parse(postfix_bounce(old_reply)).refs == []
    new_reply = old_reply.replace("ref=", "ref\\x3d") + f" ref={OUR_REF}"
    assert bounce.parse(postfix_bounce(new_reply)).refs == [OUR_REF]
    with_url = f"{new_reply} https://mx.example.test/why/{OUR_REF}"
    assert bounce.parse(postfix_bounce(with_url)).refs == [OUR_REF]


def test_a_ref_before_other_text_of_the_reply_is_not_in_our_position() -> None:
    crafted = f"550 5.1.1 The mailbox x ref={OTHERS_REF} does not exist here"
    assert bounce.parse(postfix_bounce(crafted)).refs == []


def _store_with_others_message(store_url: str, open_node: Opener, tmp_path: Path) -> Config:
    store = open_node()
    common = {"source": "gateway", "node": "mx1", "ref": OTHERS_REF, "session": OTHERS_REF, "client_ip": "192.0.2.9"}
    sender = {"sender": "alice@sender.test"}
    store.append_many(
        [
            Event(kind="connect", ts=1_800_000_000_000_000, **common),
            Event(kind="mail", ts=1_800_000_000_001_000, **sender, **common),
            Event(kind="rcpt", ts=1_800_000_000_002_000, recipient="bob@example.test", **sender, **common),
            Event(
                kind="deliver",
                ts=1_800_000_000_003_000,
                recipient="bob@example.test",
                reason="delivered",
                **sender,
                **common,
            ),
            Event(kind="accept", ts=1_800_000_000_004_000, smtp_code=250, reason="delivered", **sender, **common),
        ]
    )
    store.close()
    return Config(store={"url": store_url}, base_dir=tmp_path)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("recipient", "to", "why", "words"),
    [
        ("carol@example.test", "", "recipient", "had other recipients than the bounce"),
        ("bob@example.test", "mallory@evil.test", "sender", "came from another sender"),
    ],
)
def test_a_ref_of_another_message_is_not_attributed_and_the_answer_says_so(
    store_url: str,
    open_node: Opener,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    recipient: str,
    to: str,
    why: str,
    words: str,
) -> None:
    config = _store_with_others_message(store_url, open_node, tmp_path)
    source = tmp_path / "bounce.txt"
    source.write_bytes(postfix_bounce(f"550 5.7.1 Refused. ref={OTHERS_REF}", recipient=recipient, to=to))
    assert commands.explain_bounce(config, str(source), lang="en", fmt="json") == 0
    answer = json.loads(capsys.readouterr().out)
    assert answer["traces"] == []
    assert answer["unattributed"] == [{"ref": OTHERS_REF, "why": why}]
    commands.explain_bounce(config, str(source), lang="en", fmt="text")
    text = capsys.readouterr().out
    assert words in text and "refers to our message" not in text


def test_a_ref_we_do_not_know_is_not_attributed_and_the_answer_says_so(
    store_url: str, open_node: Opener, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = _store_with_others_message(store_url, open_node, tmp_path)
    source = tmp_path / "bounce.txt"
    source.write_bytes(postfix_bounce(f"550 5.7.1 Refused. ref={OUR_REF}", recipient="bob@example.test"))
    commands.explain_bounce(config, str(source), lang="de", fmt="text")
    assert f"nennt unsere Referenz {OUR_REF}, sie ist aber nicht in unseren Daten" in capsys.readouterr().out


def test_the_message_the_ref_names_is_attributed_when_recipient_and_sender_fit(
    store_url: str, open_node: Opener, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = _store_with_others_message(store_url, open_node, tmp_path)
    source = tmp_path / "bounce.txt"
    reply = f"550 5.7.1 Refused. ref={OTHERS_REF}"
    source.write_bytes(postfix_bounce(reply, recipient="bob@example.test", to="Alice <alice@sender.test>"))
    assert commands.explain_bounce(config, str(source), lang="en", fmt="json") == 0
    answer = json.loads(capsys.readouterr().out)
    assert [t["id"] for t in answer["traces"]] == [OTHERS_REF] and answer["unattributed"] == []
