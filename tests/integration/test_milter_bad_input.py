"""Bad input on the milter connection, as raw packets: the connection is closed cleanly, the server serves on.

Postfix never sends these, but a broken network or a peer that is not Postfix can. Closing is
the answer: Postfix then applies `milter_default_action` (tempfail) to its client, as
test_postfix_milter_faults.py shows with a real Postfix. Each case reads the close, checks that
the reason is recorded when a session had begun, that a whole session still works afterwards
on a new connection, and that no traceback reached the log.
"""

from __future__ import annotations

import struct
from collections.abc import Iterator

import pytest

from tests.support.mailwarden import Mailwarden, running
from tests.support.milter import HEAD, MilterClient, cstrings, macros, packet
from tests.support.net import free_port

pytestmark = pytest.mark.integration

MAX_PACKET = 65_536
MAX_MACROS = 4096
SILENCE = 3.0  # seconds; short, so the test of a silent peer is
CONNECT = cstrings("[127.0.0.1]") + b"4" + struct.pack("!H", 40000) + cstrings("127.0.0.1")


PORT = free_port()


@pytest.fixture(scope="module")
def milter(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Mailwarden]:
    overrides = {
        "milter": {
            "listen": [f"127.0.0.1:{PORT}"],
            "max_packet": MAX_PACKET,
            "max_macros": MAX_MACROS,
            "timeout": SILENCE,
        },
        "smtp": {"max_message_size": 65_536},
    }
    with running(tmp_path_factory.mktemp("mw"), overrides) as instance:
        yield instance


def port_of(milter: Mailwarden) -> int:
    return PORT


def connected(milter: Mailwarden) -> MilterClient:
    client = MilterClient(port_of(milter))
    client.negotiate()
    client.step("C", CONNECT, macros("C", client_addr="127.0.0.1"))
    return client


def still_serving(milter: Mailwarden) -> None:
    with MilterClient(port_of(milter)) as client:
        replies = client.session()
    assert replies[-1].command == "c", replies
    assert any(r.command == "i" and b"X-Mailwarden-Ref" in r.data for r in replies), replies
    assert "Traceback" not in (milter.root / "serve.log").read_text()


def last_problem(milter: Mailwarden) -> str:
    disconnects = [e for e in milter.events() if e["kind"] == "disconnect" and e["source"] == "milter"]
    problem: str = disconnects[-1]["detail"].get("problem", "")
    return problem


BIG_MACROS = packet("D", b"M" + cstrings("{mail_addr}", "a" * MAX_MACROS))

BEFORE_A_SESSION = {
    "a packet before the negotiation": (packet("C", CONNECT), None),
    "a packet of length 0": (HEAD.pack(0) + b"\0\0\0\0", None),
}

IN_A_SESSION = {
    "an unknown command": (packet("Z", b"what\0"), "protocol error: unknown command 'Z'"),
    "a truncated packet (Postfix gone mid-packet)": (HEAD.pack(100) + b"Hclient", "Postfix closed the connection"),
    "macros over the limit": (
        BIG_MACROS,
        f"protocol error: a 'D' packet of {len(BIG_MACROS) - 4} bytes, more than the {MAX_MACROS} allowed",
    ),
    "a body chunk over the packet limit": (
        HEAD.pack(0x7FFFFFF0) + b"B",
        f"protocol error: a 'B' packet of {0x7FFFFFF0} bytes, more than the {MAX_PACKET} allowed",
    ),
    "a HELO name without its NUL": (
        packet("H", b"client.sender.test"),
        "protocol error: a string without its terminating NUL",
    ),
    "macros with a name but no value": (
        packet("D", b"R" + cstrings("{rcpt_addr}")),
        "protocol error: a MACRO packet with a name but no value",
    ),
    "the end of a message outside a transaction": (packet("E"), "protocol error: 'E' outside a transaction"),
    "a second negotiation within the session": (
        packet("O", struct.pack("!III", 6, 0x1FF, 0x1FFFFF)),
        "protocol error: 'O' within a session",
    ),
}


@pytest.mark.parametrize("case", list(BEFORE_A_SESSION))
def test_bad_input_before_a_session_closes_the_connection(milter: Mailwarden, case: str) -> None:
    data, _ = BEFORE_A_SESSION[case]
    with MilterClient(port_of(milter)) as client:
        client.send(data)
        assert client.closed_by_filter()
    still_serving(milter)


@pytest.mark.parametrize("case", list(IN_A_SESSION))
def test_bad_input_in_a_session_closes_the_connection_and_says_why(milter: Mailwarden, case: str) -> None:
    data, problem = IN_A_SESSION[case]
    client = connected(milter)
    with client:
        client.send(data)
        if "truncated" in case:
            client.sock.shutdown(1)  # SHUT_WR: as a Postfix process that died mid-packet
        assert client.closed_by_filter()
    assert last_problem(milter) == problem
    still_serving(milter)


def test_a_silent_peer_is_hung_up_on_after_milter_timeout(milter: Mailwarden) -> None:
    client = connected(milter)
    with client:
        assert client.closed_by_filter(timeout=30)
    assert last_problem(milter) == "Postfix was silent for 3 seconds"
    still_serving(milter)


def test_a_message_over_the_size_limit_is_refused_with_552_and_ref(milter: Mailwarden) -> None:
    with MilterClient(port_of(milter)) as client:
        replies = client.session(body=b"x" * 998 + b"\r\n" * 1 + (b"y" * 998 + b"\r\n") * 70)
    (reply,) = replies
    assert reply.command == "y" and reply.text.startswith("552 5.3.4 "), reply
    assert "ref=" in reply.text


def test_a_percent_in_a_reply_is_doubled_for_postfix(milter: Mailwarden) -> None:
    """Postfix reads SMFIR_REPLYCODE like Sendmail, as a format: an address with % must arrive whole."""
    with MilterClient(port_of(milter)) as client:
        client.negotiate()
        client.step("C", CONNECT, macros("C", client_addr="127.0.0.1"))
        client.step("H", cstrings("client.sender.test"))
        client.step("M", cstrings("<alice@sender.test>"))
        (reply,) = client.step("R", cstrings("<bob%other.test@example.test>"))
    assert reply.command == "y" and "bob%%other.test@example.test" in reply.text, reply
