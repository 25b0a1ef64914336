"""`mailwarden demo`: play example mails against a running instance, so a newcomer sees real traces.

Always: an accepted mail, an unknown recipient (a typo of an existing mailbox) and a relay
attempt. With scanners configured also a virus (the EICAR test file) and spam (GTUBE); with
DNS blocklists configured a mail from 127.0.0.2, the address every DNSBL lists for testing.
With POP3 served and the demo mailbox's password kept (`mail.demo_password_file`), also the
seed's classic: the customer's mail program (127.0.0.1) checks the mailbox before the mails
arrive, then another device (127.0.0.2) fetches the accepted mail and deletes it, so the
trace says "fetched and deleted ... probably another device in your network".
"""

from __future__ import annotations

import poplib
import smtplib
import socket
from dataclasses import dataclass
from email.utils import formatdate, make_msgid
from typing import Final

from mailwarden.config import Config, parse_hostport
from mailwarden.mailboxes import demo_password
from mailwarden.store import EventQuery, Store

EICAR: Final = b"X5O!P%@AP[4\\PZX54(P^)7CC)7}$EICAR-STANDARD-ANTIVIRUS-TEST-FILE!$H+H*"
GTUBE: Final = b"XJS*C4JDBQADN1.NSBN3*2IDNEN*GTUBE-STANDARD-ANTI-UBE-TEST-EMAIL*C.34X"
SENDER: Final = "demo-sender@sender.example"
USUAL_DEVICE: Final = "127.0.0.1"  # the customer's mail program, which leaves mail on the server
OTHER_DEVICE: Final = "127.0.0.2"  # another device in the same network, set to fetch and delete


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
    return _reachable_host(server or config.smtp.listen[0], 25)


def _reachable_host(address: str, default_port: int) -> tuple[str, int]:
    host, port = parse_hostport(address, default_port=default_port)
    return ("127.0.0.1" if host in ("0.0.0.0", "::", "[::]") else host), port


@dataclass(frozen=True)
class Mailbox:
    """The demo mailbox as its devices reach it by POP3."""

    host: str
    port: int
    address: str
    password: str


def mailbox_access(config: Config, target: str | None) -> Mailbox | str:
    """How the devices reach the demo mailbox, or why they cannot (a note for the output)."""
    if not config.pop3.listen:
        return "fetched and deleted by another device: not shown, [pop3] listen is not configured"
    if not config.pop3.allow_plaintext_auth:
        return "fetched and deleted by another device: not shown, it logs in without STLS ([pop3] allow_plaintext_auth)"
    password = demo_password(config)
    if target is None or target != config.mail.demo_mailbox or password is None:
        return (
            "fetched and deleted by another device: not shown, the demo mailbox's password is not kept "
            "([mail] demo_mailbox and demo_password_file, set on its first start)"
        )
    host, port = _reachable_host(config.pop3.listen[0], 110)
    return Mailbox(host, port, target, password)


class _Device(poplib.POP3):
    """A POP3 client from a chosen loopback address, so the server sees a distinct device."""

    def __init__(self, mailbox: Mailbox, source: str, timeout: float = 30.0) -> None:
        self.source = source
        super().__init__(mailbox.host, mailbox.port, timeout=timeout)

    def _create_socket(self, timeout: float) -> socket.socket:
        return socket.create_connection((self.host, self.port), timeout, source_address=(self.source, 0))


def _logged_in(mailbox: Mailbox, source: str) -> _Device:
    device = _Device(mailbox, source)
    try:
        device.user(mailbox.address)
        device.pass_(mailbox.password)
    except poplib.error_proto:
        device.close()
        raise
    return device


def check_mail(mailbox: Mailbox) -> str:
    """The usual mail program looks into the mailbox and leaves everything there."""
    try:
        device = _logged_in(mailbox, USUAL_DEVICE)
        try:
            count, _ = device.stat()
        finally:
            device.quit()
    except (OSError, poplib.error_proto) as exc:
        return f"could not check {mailbox.address} by POP3 at {mailbox.host}:{mailbox.port}: {exc}"
    return f"checked {mailbox.address}: {count} messages, all left on the server"


def delivered_uid(store: Store, ref: str) -> str | None:
    """The Maildir unique name the delivery of `ref` recorded: POP3's UIDL of that message."""
    for event in store.query_events(EventQuery(ref=ref, kinds=("deliver",))):
        uid = event.detail.get("uid")
        if isinstance(uid, str):
            return uid
    return None


def fetch_and_delete(mailbox: Mailbox, uid: str) -> str:
    """Another device fetches the message with this UIDL and deletes it from the server."""
    try:
        device = _logged_in(mailbox, OTHER_DEVICE)
        try:
            listing = (entry.decode("utf-8", "replace").split() for entry in device.uidl()[1])
            number = next((int(n) for n, unique in listing if unique == uid), None)
            if number is not None:
                device.retr(number)
                device.dele(number)
        finally:
            device.quit()  # POP3 deletes at QUIT (the UPDATE state)
    except (OSError, poplib.error_proto) as exc:
        return f"could not fetch from {mailbox.address} by POP3 at {mailbox.host}:{mailbox.port}: {exc}"
    if number is None:
        return f"found no message {uid} in {mailbox.address}"
    return f"fetched the accepted mail from {mailbox.address} and deleted it from the server"


def reachable(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=5):
            return True
    except OSError:
        return False
