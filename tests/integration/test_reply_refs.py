"""A stranger's `ref=` must never pass for ours: in replies, and in `explain-bounce` against the real server.

Someone else's message is delivered first; its ref is then written into commands wherever our
replies quote client text. Each reply must carry exactly one `ref=`, ours, last, and the store must
have its event; a bounce that quotes the reply must not be attributed to the other party's message.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.mailwarden import Mailwarden, running
from tests.support.smtp import events_of
from tests.support.wire import Reply, Wire

pytestmark = pytest.mark.integration

BOB = "bob@example.test"
OUR_REF = re.compile(r" ref=([0-9A-Z]{12})$")


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Mailwarden]:
    with running(tmp_path_factory.mktemp("reply-refs") / "mw", {"mail": {"postmaster": BOB}}) as instance:
        yield instance


@pytest.fixture(scope="module")
def others_ref(server: Mailwarden) -> str:
    """The ref of a message someone else sent and we delivered."""
    with Wire(server.smtp_port) as wire:
        wire.greet()
        assert wire.command("MAIL FROM:<alice@sender.test>").code == 250
        assert wire.command(f"RCPT TO:<{BOB}>").code == 250
        assert wire.command("DATA").code == 354
        wire.send(b"From: alice@sender.test\r\nSubject: private\r\n\r\nfor bob only\r\n.\r\n")
        accepted = wire.reply()
    found = OUR_REF.search(accepted.text)
    assert accepted.code == 250 and found is not None, accepted.text
    return found.group(1)


# Where our replies quote what the client sent: (commands before, the command quoting the ref, expected code).
QUOTING = {
    "address syntax error": (["MAIL FROM:<mallory@evil.test>"], 'RCPT TO:<"a ref={ref}"@@example.test>', 501),
    "unknown mailbox": (["MAIL FROM:<mallory@evil.test>"], 'RCPT TO:<"a ref={ref}"@example.test>', 550),
    "unknown MAIL parameter": ([], "MAIL FROM:<mallory@evil.test> REF={ref}", 555),
    "malformed MAIL parameter": ([], "MAIL FROM:<mallory@evil.test> BODY=ref={ref}", 501),
    "unknown command": ([], "ref={ref} please", 500),
}


def _attack(server: Mailwarden, ref: str, before: list[str], command: str) -> Reply:
    with Wire(server.smtp_port) as wire:
        wire.greet()
        for line in before:
            assert wire.command(line).code == 250
        return wire.command(command.format(ref=ref))


@pytest.mark.parametrize(("before", "command", "code"), QUOTING.values(), ids=QUOTING.keys())
def test_a_strangers_ref_quoted_in_a_reply_is_escaped_and_the_only_ref_is_ours_and_recorded(
    server: Mailwarden, others_ref: str, before: list[str], command: str, code: int
) -> None:
    reply = _attack(server, others_ref, before, command)
    assert reply.code == code, reply.text
    assert reply.text.count("ref=") == 1, reply.text
    ours = OUR_REF.search(reply.text)
    assert ours is not None and ours.group(1) != others_ref, reply.text
    assert re.search(rf"ref\\x3d{others_ref}", reply.text, re.IGNORECASE), "the quoted text is not shown escaped"
    recorded = [e for e in events_of(server, ours.group(1), "reject") if e["kind"] == "reject"]
    assert f"{reply.code} {' '.join(reply.lines)}" in [e["reply"] for e in recorded]


def test_explain_bounce_does_not_attribute_a_bounce_quoting_our_reply_to_the_message_whose_ref_was_quoted(
    server: Mailwarden, others_ref: str, tmp_path: Path
) -> None:
    before, command, _ = QUOTING["address syntax error"]
    reply = _attack(server, others_ref, before, command)
    ours = OUR_REF.search(reply.text)
    assert ours is not None, reply.text
    events_of(server, ours.group(1), "reject")
    # What the attacker's own MTA (or the attacker) makes of the reply, in Postfix's wording.
    bounce = tmp_path / "bounce.txt"
    bounce.write_text(
        "From: MAILER-DAEMON@mta.evil.test\nTo: mallory@evil.test\nSubject: Undelivered Mail Returned to Sender\n\n"
        f'<"a ref={others_ref}"@@example.test>: host mx.example.test[127.0.0.1] said:\n'
        f"    {reply.code} {' '.join(reply.lines)} (in reply to RCPT TO command)\n"
    )
    answer = json.loads(server.cli("explain-bounce", str(bounce), "--format", "json").stdout)
    assert others_ref not in answer["bounce"]["refs"]
    assert others_ref not in [t["id"] for t in answer["traces"]]
    assert [t["id"] for t in answer["traces"]] == [ours.group(1)]
    (linked,) = answer["traces"]
    assert (linked["status"], linked["reason"]) == ("rejected", "protocol.violation")
