"""Early talkers against the real server: a client that sends before our greeting is refused, as
Postfix's postscreen does; one that waits passes, and is greeted at once from then on, also after a
restart (the pass is kept in the store).

The wait is 2 seconds here (6 by default): long enough that a client which talks at once is seen,
short enough for the clients that wait. The other tests leave the check out of their order.
"""

from __future__ import annotations

import json
from collections.abc import Iterator

import pytest

from tests.support.mailwarden import BASE_ORDER, Mailwarden, running
from tests.support.smtp import events_of
from tests.support.wire import Reply, Wire

pytestmark = pytest.mark.integration

MESSAGE = b"Subject: hi\r\n\r\nhello\r\n.\r\n"


@pytest.fixture(scope="module")
def gateway(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Mailwarden]:
    overrides = {"checks": {"order": ["pregreet", *BASE_ORDER]}, "pregreet": {"wait": 2.0}}
    with running(tmp_path_factory.mktemp("mw"), overrides) as instance:
        yield instance


def talk_first(gateway: Mailwarden, client_ip: str) -> list[Reply]:
    """Connect and send EHLO at once, before reading the greeting; then one transaction."""
    with Wire(gateway.smtp_port, source=client_ip) as wire:
        wire.send("EHLO talker.example\r\n")
        replies = [wire.reply(), wire.reply()]
        for line in ("MAIL FROM:<a@sender.test>", "RCPT TO:<bob@example.test>", "DATA"):
            replies.append(wire.command(line))
        if replies[-1].code == 354:
            wire.send(MESSAGE)
            replies.append(wire.reply())
        replies.append(wire.command("QUIT"))
    return replies


def test_a_client_that_talks_before_the_greeting_is_refused_at_rcpt_with_a_protocol_error(gateway: Mailwarden) -> None:
    greeting, ehlo, mail, rcpt, data, quit_ = talk_first(gateway, "127.0.0.71")
    assert (greeting.code, ehlo.code, mail.code) == (220, 250, 250)
    assert rcpt.code == 550 and rcpt.lines[0].startswith("5.5.1 Protocol error: your server 127.0.0.71 sent commands")
    assert "before our greeting" in rcpt.text and "ref=" in rcpt.text
    assert data.text.startswith("554 5.5.1") and quit_.code == 221  # nothing accepted, like postscreen
    ref = rcpt.text.rpartition("ref=")[2].split()[0]
    events = events_of(gateway, ref, "disconnect")
    (connect,) = [e for e in events if e["kind"] == "connect"]
    (check,) = connect["detail"]["checks"]
    assert (check["check"], check["result"], check["reason"]) == ("pregreet", "reject", "client.pregreet")
    assert check["detail"]["sent"] == "EHLO talker.example\\x0d\\x0a" and check["detail"]["wait"] == 2.0
    refusal, no_recipients = [
        e for e in events if e["kind"] == "reject"
    ]  # RCPT's, then DATA's (every refusal leaves one)
    assert (refusal["reason"], refusal["smtp_code"], refusal["enhanced_code"]) == ("client.pregreet", 550, "5.5.1")
    assert (no_recipients["smtp_code"], no_recipients["enhanced_code"]) == (554, "5.5.1")
    assert gateway.messages("bob@example.test") == []
    verdict = json.loads(gateway.cli("explain", ref, "--format", "json").stdout)
    assert (verdict["status"], verdict["reason"]) == ("rejected", "client.pregreet")
    assert verdict["responsibility"] == "sender"


def test_a_client_that_waits_passes_and_is_greeted_at_once_from_then_on_also_after_a_restart(
    gateway: Mailwarden,
) -> None:
    client = "127.0.0.72"
    with Wire(gateway.smtp_port, source=client) as wire:
        assert wire.greet().code == 250  # read the greeting first: it comes after the wait
        assert wire.command("MAIL FROM:<a@sender.test>").code == 250
        assert wire.command("RCPT TO:<bob@example.test>").code == 250
    # Passed: it is no longer watched, so even talking first now goes unnoticed (it would be refused if watched).
    assert talk_first(gateway, client)[-2].text.startswith("250 2.0.0 Message accepted")
    gateway.stop()
    gateway.start()
    assert talk_first(gateway, client)[-2].text.startswith("250 2.0.0 Message accepted")
    assert talk_first(gateway, "127.0.0.73")[3].code == 550  # a client not seen before is still watched
