"""A running mailwarden with its tracking center, accounts of every role, and messages made by the real gateway.

`center(root)` starts `mailwarden serve` with the web server on a free port and creates, through
the command line, a support account, a customer of example.test and a customer of other.test
(the admin is the one the first start printed). `Mail` sends through the raw SMTP wire, so HELO
names, envelope addresses and headers can carry whatever a stranger sends.
"""

from __future__ import annotations

import re
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import httpx

from tests.support.mailwarden import Mailwarden
from tests.support.net import free_port
from tests.support.wire import Wire

PASSWORD = "correct horse battery"
# Stranger-controlled values that must never become markup, script or a spreadsheet formula.
XSS_HELO = "=HYPERLINK(1)<script>alert('helo')</script>"
XSS_SENDER = '"<img src=x onerror=alert(1)"@evil.test'
XSS_RECIPIENT = '"<img src=y onerror=alert(2)"@example.test'
XSS_MESSAGE_ID = "<\"><script>alert('mid')</script>@evil.test>"
XSS_SUBJECT = "<script>alert('subject')</script>"
XSS_MARKERS = ("<script>alert(", "<img src=x onerror", "<img src=y onerror")


@dataclass
class Center:
    gateway: Mailwarden
    url: str
    admin_password: str
    refs: dict[str, str] = field(default_factory=dict)  # what was sent -> its ref

    def client(self, source: str = "127.0.0.1") -> httpx.Client:
        transport = httpx.HTTPTransport(local_address=source)
        return httpx.Client(base_url=self.url, transport=transport, follow_redirects=False, timeout=30)

    @contextmanager
    def login(self, name: str, password: str = PASSWORD, source: str = "127.0.0.1") -> Iterator[httpx.Client]:
        """A client logged in through the login page (with its CSRF token), as a browser does."""
        with self.client(source) as client:
            response = login_form_post(client, name, password)
            assert response.status_code == 303, response.text
            yield client

    @contextmanager
    def api(self, name: str, password: str = PASSWORD) -> Iterator[tuple[httpx.Client, str]]:
        """A client logged in through the API, and its CSRF token."""
        with self.client() as client:
            response = client.post("/api/session", json={"name": name, "password": password})
            assert response.status_code == 200, response.text
            yield client, response.json()["csrf_token"]


def form_token(html: str) -> str:
    found = re.search(r'name="csrf" value="([^"]*)"', html)
    assert found is not None, html
    return found.group(1)


def login_form_post(client: httpx.Client, name: str, password: str) -> httpx.Response:
    token = form_token(client.get("/login").text)
    return client.post("/login", data={"name": name, "password": password, "csrf": token, "next": "/"})


def refusal_ref(text: str) -> str:
    found = re.search(r"ref=([0-9A-Z]{12})", text)
    assert found is not None, text
    return found.group(1)


class Mail:
    """One SMTP transaction on the raw wire; each reply is kept."""

    def __init__(self, gateway: Mailwarden, helo: str = "client.sender.test", source: str = "127.0.0.1") -> None:
        self.wire = Wire(gateway.smtp_port, source=source)
        self.ehlo = self.wire.greet(helo)

    def __enter__(self) -> Mail:
        return self

    def __exit__(self, *exc: object) -> None:
        self.wire.close()

    def refused_rcpt(self, sender: str, recipient: str) -> str:
        """MAIL and RCPT; the RCPT must be refused. Returns the ref of the refusal."""
        assert self.wire.command(f"MAIL FROM:<{sender}>").code == 250
        reply = self.wire.command(f"RCPT TO:<{recipient}>")
        assert reply.code >= 500, reply
        return refusal_ref(reply.text)

    def accepted(self, sender: str, recipient: str, headers: str) -> str:
        """A whole transaction that must end in 250. Returns its ref."""
        assert self.wire.command(f"MAIL FROM:<{sender}>").code == 250
        assert self.wire.command(f"RCPT TO:<{recipient}>").code == 250
        assert self.wire.command("DATA").code == 354
        reply = self.wire.command(f"{headers}\r\n\r\nHello.\r\n.")
        assert reply.code == 250, reply
        return refusal_ref(reply.text)


def wait_committed(client: httpx.Client, ref: str, timeout: float = 30.0) -> None:
    """Until the transaction's events are in the store, to its end (the writer batches; the CLI is slower to ask)."""
    deadline = time.monotonic() + timeout
    while True:
        answer = client.get(f"/api/messages/{ref}")
        if answer.status_code == 200 and any(step["what"] == "disconnect" for step in answer.json()["timeline"]):
            return
        assert time.monotonic() < deadline, f"the events of {ref} are not committed: {answer.text}"
        time.sleep(0.05)


@contextmanager
def center(root: Path, **web: object) -> Iterator[Center]:
    """The running instance with accounts of every role and three messages (see the module doc)."""
    port = free_port()
    settings = {"listen": f"127.0.0.1:{port}", "first_admin": "admin", "login_failure_delay": 0.0, **web}
    gateway = Mailwarden(
        root,
        {
            "mail": {"domains": ["example.test", "other.test"]},
            "web": settings,
        },
    )
    gateway.add_user("bob@example.test")
    gateway.add_user("carol@other.test")
    gateway.start()
    try:
        printed = re.search(r"web admin account admin with password (\S+) \(shown once\)", gateway.log.read_text())
        assert printed is not None, gateway.log.read_text()
        for name, role, domains in (
            ("support", "support", ()),
            ("customer", "customer", ("example.test",)),
            ("othercustomer", "customer", ("other.test",)),
        ):
            args = ["accounts", "add", name, "--role", role, "--password-stdin"]
            for domain in domains:
                args += ["--domain", domain]
            gateway.cli(*args, input=PASSWORD + "\n")
        made = Center(gateway, f"http://127.0.0.1:{port}", printed.group(1))
        with Mail(gateway, helo=XSS_HELO) as mail:
            made.refs["unknown"] = mail.refused_rcpt(XSS_SENDER, "nobody@example.test")
        with Mail(gateway) as mail:
            made.refs["xss_recipient"] = mail.refused_rcpt("alice@sender.test", XSS_RECIPIENT)
        with Mail(gateway, helo=XSS_HELO) as mail:
            made.refs["bob"] = mail.accepted(
                XSS_SENDER,
                "bob@example.test",
                f"From: <alice@sender.test>\r\nTo: <bob@example.test>\r\nSubject: {XSS_SUBJECT}\r\n"
                f"Message-ID: {XSS_MESSAGE_ID}",
            )
        with Mail(gateway) as mail:
            made.refs["carol"] = mail.accepted(
                "alice@sender.test",
                "carol@other.test",
                "From: <alice@sender.test>\r\nTo: <carol@other.test>\r\nSubject: hi\r\nMessage-ID: <carol-1@sender.test>",
            )
        with made.login("admin", made.admin_password) as admin:
            for ref in made.refs.values():
                wait_committed(admin, ref)
        yield made
    finally:
        gateway.stop()
