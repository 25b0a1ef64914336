"""The policy service on the wire: Postfix's request format answered, anything else closed cleanly.

Postfix then answers its client with `smtpd_policy_service_default_action` (451 4.3.5), as
test_postfix_policy.py shows with mailwarden stopped.
"""

from __future__ import annotations

import socket
from collections.abc import Iterator

import pytest

from tests.support.mailwarden import Mailwarden, running
from tests.support.net import free_port

pytestmark = pytest.mark.integration

PORT = free_port()
MAX_REQUEST = 4096


def request(**attributes: str) -> bytes:
    base = {
        "request": "smtpd_access_policy",
        "protocol_state": "RCPT",
        "protocol_name": "ESMTP",
        "client_address": "192.0.2.9",
        "client_name": "unknown",
        "helo_name": "client.sender.test",
        "sender": "alice@sender.test",
        "recipient": "bob@example.test",
        "instance": "1a2b.5f3e4d2c.9a1b2.0",
        "queue_id": "",
    }
    return "".join(f"{k}={v}\n" for k, v in (base | attributes).items()).encode() + b"\n"


@pytest.fixture(scope="module")
def policy(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Mailwarden]:
    overrides = {"policy": {"listen": [f"127.0.0.1:{PORT}"], "max_request": MAX_REQUEST}}
    with running(tmp_path_factory.mktemp("mw"), overrides) as instance:
        yield instance


def ask(data: bytes) -> bytes:
    """Send `data`; everything the service sends until it closes or answers one request."""
    with socket.create_connection(("127.0.0.1", PORT), timeout=30) as sock:
        sock.sendall(data)
        received = b""
        while not received.endswith(b"\n\n"):
            chunk = sock.recv(4096)
            if not chunk:
                return received
            received += chunk
        return received


def test_requests_of_one_transaction_share_its_checks_and_are_answered_each(policy: Mailwarden) -> None:
    with socket.create_connection(("127.0.0.1", PORT), timeout=30) as sock:
        sock.sendall(request() + request(recipient="nobody@example.test"))
        answers = b""
        while answers.count(b"\n\n") < 2:
            answers += sock.recv(4096)
    first, second = answers.decode().split("\n\n")[:2]
    assert first == "action=DUNNO"
    assert second.startswith("action=550 5.1.1 The mailbox nobody@example.test does not exist here")
    assert "ref=" in second


@pytest.mark.parametrize(
    "data",
    [
        b"request=smtpd_access_policy\ngarbage without an equals sign\n\n",
        b"request=something_else\nprotocol_state=RCPT\n\n",
        b"request=smtpd_access_policy\nsender=" + b"a" * (MAX_REQUEST + 10) + b"\n\n",
    ],
    ids=["a line without name=value", "another request type", "a request over policy.max_request"],
)
def test_bad_requests_close_the_connection_and_the_service_serves_on(policy: Mailwarden, data: bytes) -> None:
    assert ask(data) == b""
    assert ask(request()) == b"action=DUNNO\n\n"
    assert "Traceback" not in (policy.root / "serve.log").read_text()
