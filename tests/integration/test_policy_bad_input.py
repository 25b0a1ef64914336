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


def test_numbers_in_other_digits_or_beyond_64_bits_are_no_numbers_not_a_crash_or_a_stuck_store(
    policy: Mailwarden,
) -> None:
    """`client_port=²` ended the conversation with a traceback, `size=²` failed the size check (DEFER_IF_PERMIT),
    and a `size` beyond 64 bits at END-OF-MESSAGE made an event the store could never write, so every
    later event waited behind it."""
    instance = "7c7c.5f3e4d2c.9a1b2.0"
    asked = {"client_port": "²", "size": "²", "instance": instance}
    assert ask(request(**asked)) == b"action=DUNNO\n\n"
    with socket.create_connection(("127.0.0.1", PORT), timeout=30) as sock:
        for state, size in (("RCPT", "0"), ("END-OF-MESSAGE", "9" * 20)):
            sock.sendall(request(protocol_state=state, instance="8d8d.1.2.0", size=size, queue_id="4B3C2D1E0F"))
            assert sock.recv(4096) == b"action=DUNNO\n\n"
    refused = ask(request(recipient="nobody-after@example.test", instance="9e9e.1.2.0")).decode()
    assert refused.startswith("action=550 5.1.1"), refused
    recorded = [e for e in policy.events("--since", "1h") if e["recipient"] == "nobody-after@example.test"]
    assert recorded, "the store took no event after the one with the oversized size"
    log = (policy.root / "serve.log").read_text()
    assert "Traceback" not in log and "event store write failed" not in log, log
