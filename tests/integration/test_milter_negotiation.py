"""What our milter negotiates with Postfix, pinned: where Postfix waits for us, and the macros we ask for.

Every stage Postfix waits for is a round trip - two process wake-ups - per message, and every
macro it sends is work on both sides; the throughput Postfix keeps with us as its milter
(bench/milter_throughput.py) depends on this negotiation. Postfix 3.7 offers every action and
option (as tests/support/milter.py does); the reply must take exactly what is listed here.
"""

from __future__ import annotations

import struct
from collections.abc import Iterator

import pytest

from tests.support.mailwarden import Mailwarden, running
from tests.support.milter import MilterClient, cstrings, macros, packet
from tests.support.net import free_port

pytestmark = pytest.mark.integration

PORT = free_port()
ACTIONS = 0x01 | 0x10 | 0x100  # add and change header fields, name our macros
OPTIONS = (
    0x1000
    | 0x2000
    | 0x4000  # no reply to CONNECT, HELO, MAIL (a refusal there is given at RCPT)
    | 0x10000
    | 0x80
    | 0x40000
    | 0x80000  # nor to DATA, each header field, their end, each body chunk
    | 0x20000
    | 0x100  # nor to unknown commands, which Postfix need not send at all
    | 0x100000  # header values with their leading space, as they are queued
)
WANTED = {  # SMFIM_* stage: the macros we name for it
    0: "{client_addr} {client_name} {daemon_name}",
    2: "{mail_addr} {auth_authen}",
    3: "{rcpt_addr}",
    5: "i",
}


@pytest.fixture(scope="module")
def milter(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Mailwarden]:
    with running(tmp_path_factory.mktemp("mw"), {"milter": {"listen": [f"127.0.0.1:{PORT}"]}}) as instance:
        yield instance


def wanted_macros(data: bytes) -> dict[int, str]:
    found, at = {}, 12
    while at < len(data):
        (stage,) = struct.unpack_from("!I", data, at)
        end = data.index(b"\0", at + 4)
        found[stage] = data[at + 4 : end].decode()
        at = end + 1
    return found


def transaction(client: MilterClient, *, header_macros: bytes = b"") -> dict[str, list[str]]:
    """A message after the negotiation, each stage sent as Postfix does; the commands of our replies per stage."""
    stages = [
        ("CONNECT", "C", cstrings("[127.0.0.1]") + b"4" + struct.pack("!H", 40000) + cstrings("127.0.0.1"), b""),
        ("HELO", "H", cstrings("client.sender.test"), b""),
        ("MAIL", "M", cstrings("<alice@sender.test>"), b""),
        ("RCPT", "R", cstrings("<bob@example.test>"), b""),
        ("DATA", "T", b"", b""),
        ("header", "L", cstrings("Subject", " test"), header_macros),
        ("end of header", "N", b"", b""),
        ("body", "B", b"Hello.\r\n", b""),
        ("end of message", "E", b"", macros("E", i="4F1A2B3C4D")),
    ]
    return {name: [r.command for r in client.step(command, data, before)] for name, command, data, before in stages}


def test_postfix_waits_for_us_only_at_rcpt_and_at_the_end_of_the_message(milter: Mailwarden) -> None:
    with MilterClient(PORT) as client:
        reply = client.negotiate()
        assert client.negotiated == (6, ACTIONS, OPTIONS)
        assert wanted_macros(reply.data) == WANTED
        replies = transaction(client)
    assert {stage: commands for stage, commands in replies.items() if commands} == {
        "RCPT": ["c"],
        "end of message": ["i", "i", "c"],  # our two header fields and "continue", in one answer
    }


def test_macros_of_a_stage_we_named_none_for_are_not_decoded(milter: Mailwarden) -> None:
    """Postfix sends its main.cf defaults there (`i` with every header field): nothing of ours reads them."""
    with MilterClient(PORT) as client:
        client.negotiate()
        replies = transaction(client, header_macros=packet("D", b"L" + cstrings("{a name without its value}")))
    assert replies["end of message"][-1] == "c", replies
