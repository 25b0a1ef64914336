"""`mailwarden demo`: play example mails against a running instance, so a newcomer sees real traces.

Always: an accepted mail, an unknown recipient (a typo of an existing mailbox) and a relay
attempt. With scanners configured also a virus (the EICAR test file) and spam (GTUBE); with
DNS blocklists configured a mail from 127.0.0.2, the address every DNSBL lists for testing.
"""

from __future__ import annotations

import smtplib
import socket
from dataclasses import dataclass
from email.utils import formatdate, make_msgid
from typing import Final

from mailwarden.config import Config, parse_hostport
from mailwarden.store import Store

EICAR: Final = b"X5O!P%@AP[4\\PZX54(P^)7CC)7}$EICAR-STANDARD-ANTIVIRUS-TEST-FILE!$H+H*"
GTUBE: Final = b"XJS*C4JDBQADN1.NSBN3*2IDNEN*GTUBE-STANDARD-ANTI-UBE-TEST-EMAIL*C.34X"
SENDER: Final = "demo-sender@sender.example"


@dataclass(frozen=True)
class Case:
    name: str
    recipient: str
    body: bytes
    source_ip: str | None = None


@dataclass(frozen=True)
class Outcome:
    case: Case
    code: int
    reply: str

    @property
    def ref(self) -> str | None:
        _, found, rest = self.reply.partition("ref=")
        return rest.split()[0] if found and rest else None


def _message(subject: str, body: bytes, recipient: str) -> bytes:
    head = (
        f"From: Demo Sender <{SENDER}>\r\nTo: <{recipient}>\r\nSubject: mailwarden demo: {subject}\r\n"
        f"Date: {formatdate(usegmt=True)}\r\nMessage-ID: {make_msgid(domain=SENDER.partition('@')[2])}\r\n"
    )
    return head.encode() + b"MIME-Version: 1.0\r\nContent-Type: text/plain\r\n\r\n" + body + b"\r\n"


def _typo(mailbox: str) -> str:
    """bob@example.test -> bbo@example.test: the kind of error "did you mean" is for."""
    local, _, domain = mailbox.partition("@")
    swapped = local[0] + local[2] + local[1] + local[3:] if len(local) > 2 and local[1] != local[2] else local + "x"
    return f"{swapped}@{domain}"


def cases(config: Config, store: Store) -> tuple[list[Case], list[str]]:
    """The cases this configuration can show, and notes on the ones it cannot."""
    notes = []
    mailboxes = [m.address for m in store.list_mailboxes()]
    target = (
        config.mail.demo_mailbox if config.mail.demo_mailbox in mailboxes else (mailboxes[0] if mailboxes else None)
    )
    domain = config.mail.domains[0] if config.mail.domains else "example.test"
    played: list[Case] = []
    if target is None:
        notes.append("no mailbox exists: add one (`mailwarden users add ADDRESS`) to see an accepted mail")
        target = f"postmaster@{domain}"
    else:
        played.append(Case("accepted", target, _message("accepted", b"Hello from mailwarden demo.", target)))
    typo = _typo(target)
    played.append(Case("unknown recipient", typo, _message("typo", b"For a mistyped address.", typo)))
    played.append(
        Case("relay attempt", "someone@elsewhere.example", _message("relay", b"Relay me.", "someone@elsewhere.example"))
    )
    if config.scan.clamd.address:
        played.append(Case("virus", target, _message("virus", EICAR, target)))
    else:
        notes.append("virus: not shown, [scan.clamd] address is not configured")
    if config.scan.spam.address:
        played.append(Case("spam", target, _message("spam", GTUBE, target)))
    else:
        notes.append("spam: not shown, [scan.spam] address is not configured")
    if config.dnsbl.zones:
        played.append(
            Case("blocklisted client", target, _message("blocklisted", b"From a listed address.", target), "127.0.0.2")
        )
    else:
        notes.append("blocklisted client: not shown, no [[dnsbl.zones]] configured")
    return played, notes


def play(case: Case, host: str, port: int, timeout: float = 60.0) -> Outcome:
    """One transaction; the outcome is the first refusal or the final reply to DATA."""
    source = (case.source_ip, 0) if case.source_ip else None
    try:
        with smtplib.SMTP(host, port, timeout=timeout, source_address=source) as client:
            client.ehlo("demo.sender.example")
            code, text = client.mail(SENDER)
            if code == 250:
                code, text = client.rcpt(case.recipient)
            if code == 250:
                code, text = client.data(case.body)
            return Outcome(case, code, text.decode("utf-8", "replace"))
    except (OSError, smtplib.SMTPException) as exc:
        return Outcome(case, 0, f"could not talk to {host}:{port}: {exc}")


def server_address(config: Config, server: str | None) -> tuple[str, int]:
    host, port = parse_hostport(server or config.smtp.listen[0], default_port=25)
    return ("127.0.0.1" if host in ("0.0.0.0", "::", "[::]") else host), port


def reachable(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=5):
            return True
    except OSError:
        return False
