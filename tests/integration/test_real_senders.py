"""Real sending software against a real `mailwarden serve`: Postfix as the sending MTA, and swaks.

What a sender's user sees is the bounce their own MTA writes: it must carry our sentence and
the ref. What the recipient gets must be exactly what the sender's MTA sent.
"""

from __future__ import annotations

import re
import subprocess
from email.message import EmailMessage

import pytest

from tests.support.mailwarden import Mailwarden
from tests.support.postfix import running_postfix

pytestmark = pytest.mark.integration

# Dot-stuffed lines, trailing blanks, 8-bit text, an empty line at the end: all must survive.
BODY = (
    "From: Alice <alice@sender.test>\r\n"
    "To: Bob <bob@example.test>\r\n"
    "Subject: =?utf-8?q?Gr=C3=BC=C3=9Fe?=\r\n"
    "Message-ID: <relay-1@sender.test>\r\n"
    "Date: Mon, 01 Jan 2024 10:00:00 +0000\r\n"
    "MIME-Version: 1.0\r\n"
    "Content-Type: text/plain; charset=utf-8\r\n"
    "Content-Transfer-Encoding: 8bit\r\n"
    "\r\n"
    "Grüße aus Köln.\r\n"
    ".a line that starts with a dot\r\n"
    "..two dots\r\n"
    ".\tdot and tab\r\n"
    "trailing blanks   \r\n" + "x" * 900 + "\r\n"
    "\r\n"
).encode()


def _one_line(text: str) -> str:
    return re.sub(r"\s+", " ", text)


def test_postfix_bounce_for_an_unknown_mailbox_carries_our_sentence_and_ref(gateway: Mailwarden) -> None:
    with running_postfix(relayhost=f"127.0.0.1:{gateway.smtp_port}", local_domains=["sender.test"]) as postfix:
        message = EmailMessage()
        message["From"] = "alice@sender.test"
        message["To"] = "nobody@example.test"
        message["Subject"] = "are you there?"
        message["Message-ID"] = "<unknown-1@sender.test>"
        message.set_content("Hello?\n")
        postfix.submit("alice@sender.test", ["nobody@example.test"], message)
        (bounce,) = postfix.wait_delivered(1)

    # Postfix pipelines DATA behind the refused RCPT: its 554 5.5.1 is a reject of that transaction too.
    (reject,) = [e for e in gateway.events() if e["kind"] == "reject" and e["recipient"] == "nobody@example.test"]
    assert reject["reason"] == "rcpt.unknown_user"
    assert [e["smtp_code"] for e in gateway.events("--ref", reject["ref"]) if e["kind"] == "reject"] == [550, 554]
    assert bounce["To"] == "alice@sender.test"
    text = _one_line(bounce.as_string())
    assert "550 5.1.1 The mailbox nobody@example.test does not exist here; please check the address" in text
    assert f"ref={reject['ref']}" in text
    assert "Status: 5.1.1" in text


def test_postfix_relayed_mail_lands_byte_identical_after_our_trace_headers(gateway: Mailwarden) -> None:
    with running_postfix(relayhost=f"127.0.0.1:{gateway.smtp_port}", local_domains=["sender.test"]) as postfix:
        postfix.submit("alice@sender.test", ["bob@example.test"], BODY)
        postfix.wait_log(r"to=<bob@example\.test>.*status=sent")
        (stored,) = gateway.messages("bob@example.test")

    (accept,) = [e for e in gateway.events() if e["kind"] == "accept"]
    ref = accept["ref"]
    # Our Received, Authentication-Results and X-Mailwarden-Ref, then what Postfix sent: its own Received line and the message.
    ours = re.match(
        rb"Received: from mta\.example\.test \([^)]*\)\r\n\tby mx\.example\.test \(mailwarden\) with ESMTP id "
        + ref.encode()
        + rb"\r\n\tfor <bob@example\.test>;\r\n\t[^\r\n]+\r\n"
        + rb"(?:Authentication-Results: [^\r\n]*\r\n(?:\t[^\r\n]*\r\n)*)?"  # DMARC of sender.test: no DNS here
        + rb"X-Mailwarden-Ref: "
        + ref.encode()
        + rb"\r\n",
        stored,
    )
    assert ours is not None, stored[:400]
    relayed = stored[ours.end() :]
    postfix_received = re.match(rb"Received: from [^\r\n]*\r\n(\t[^\r\n]*\r\n)+", relayed)
    assert postfix_received is not None, relayed[:400]
    assert b"by mta.example.test (Postfix)" in postfix_received.group(0)
    assert relayed[postfix_received.end() :] == BODY
    delivered = [e for e in gateway.events() if e["kind"] == "deliver"]
    assert [(e["recipient"], e["ref"], e["message_id"]) for e in delivered] == [
        ("bob@example.test", ref, "<relay-1@sender.test>")
    ]


def _swaks(port: int, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [
            "swaks",
            "--server",
            f"127.0.0.1:{port}",
            "--from",
            "alice@sender.test",
            "--helo",
            "client.sender.test",
            *args,
        ],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_swaks_delivers_over_starttls_and_sees_our_extensions(gateway: Mailwarden) -> None:
    done = _swaks(gateway.smtp_port, "--to", "bob@example.test", "--tls", "--header", "Subject: via swaks")
    assert done.returncode == 0, done.stdout + done.stderr
    for extension in ("PIPELINING", "SIZE", "8BITMIME", "SMTPUTF8", "ENHANCEDSTATUSCODES", "STARTTLS"):
        assert f"250-{extension}" in done.stdout or f"250 {extension}" in done.stdout
    assert re.search(r"<~ +250 2\.0\.0 Message accepted and stored for 1 recipient\(s\) ref=[0-9A-Z]{12}", done.stdout)
    (stored,) = gateway.messages("bob@example.test")
    assert b"Subject: via swaks" in stored
    assert re.search(rb"with ESMTPS id [0-9A-Z]{12}", stored)


def test_swaks_sees_relay_refused_with_554_5_7_1_and_exit_code_for_rcpt(gateway: Mailwarden) -> None:
    done = _swaks(gateway.smtp_port, "--to", "victim@elsewhere.test")
    assert done.returncode == 24, done.stdout  # swaks: 24 = RCPT refused
    assert re.search(r"<\*\* +554 5\.7\.1 .*ref=[0-9A-Z]{12}", done.stdout)
    assert gateway.messages("bob@example.test") == []
