"""A scripted SMTP client for tests: one transaction from a chosen source address, every reply kept."""

from __future__ import annotations

import re
import smtplib
import time
from dataclasses import dataclass, field
from typing import Any

from tests.support.mailwarden import Mailwarden

MESSAGE = b"From: <alice@good.test>\r\nTo: <bob@example.test>\r\nSubject: test\r\n\r\nHello.\r\n"


@dataclass
class Reply:
    stage: str
    code: int
    text: str

    @property
    def enhanced(self) -> str:
        return self.text.split(" ", 1)[0]

    @property
    def sentence(self) -> str:
        """The text without the enhanced code, continuation lines joined."""
        lines = self.text.split("\n")
        return " ".join(line.split(" ", 1)[1] if line.startswith(self.enhanced + " ") else line for line in lines)

    @property
    def ref(self) -> str | None:
        found = re.search(r"ref=([0-9A-Z]+)", self.text)
        return found.group(1) if found else None


@dataclass
class Attempt:
    """The replies of one session, up to the first refusal (or the end of DATA)."""

    replies: list[Reply] = field(default_factory=list)

    @property
    def last(self) -> Reply:
        return self.replies[-1]

    @property
    def accepted(self) -> bool:
        return self.last.stage == "data" and self.last.code == 250


def send(
    gateway: Mailwarden,
    client_ip: str,
    helo: str,
    sender: str,
    recipient: str = "bob@example.test",
    message: bytes = MESSAGE,
    *,
    port: int | None = None,
) -> Attempt:
    """`port`: another server than `gateway`'s SMTP listener (a Postfix that asks it as milter or policy service)."""
    attempt = Attempt()
    with smtplib.SMTP(timeout=60, source_address=(client_ip, 0)) as client:
        code, banner = client.connect("127.0.0.1", port or gateway.smtp_port)
        attempt.replies.append(Reply("connect", code, banner.decode()))
        if code != 220:
            return attempt
        for stage, call in (
            ("helo", lambda: client.ehlo(helo)),
            ("mail", lambda: client.mail(sender)),
            ("rcpt", lambda: client.rcpt(recipient)),
            ("data", lambda: client.data(message)),
        ):
            code, text = call()
            attempt.replies.append(Reply(stage, code, text.decode(errors="replace")))
            if code >= 400:
                break
    return attempt


def stored_message(gateway: Mailwarden, attempt: Attempt, mailbox: str = "bob@example.test") -> bytes:
    """The message an accepted attempt delivered, found by the ref of its 250 reply."""
    ref = attempt.last.ref
    assert attempt.accepted and ref is not None, attempt.replies
    marker = f"X-Mailwarden-Ref: {ref}\r\n".encode()
    (message,) = [m for m in gateway.messages(mailbox) if marker in m]
    return message


def events_of(gateway: Mailwarden, ref: str, kind: str, timeout: float = 30.0) -> list[dict[str, Any]]:
    """The events of a transaction once the one of `kind` is committed (the writer batches)."""
    deadline = time.monotonic() + timeout
    while True:
        events = gateway.events("--ref", ref)
        if any(e["kind"] == kind for e in events) or time.monotonic() > deadline:
            return events
        time.sleep(0.1)
