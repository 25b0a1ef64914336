"""The milter wire format and the policy service's answers, without a server: exact bytes, precise errors."""

from __future__ import annotations

import asyncio
import struct

import pytest

from mailwarden.mta import milter_protocol as wire
from mailwarden.mta.policy import RequestError, action_for, parse_request


def read(data: bytes, max_packet: int = 1024, limits: dict[int, int] | None = None) -> tuple[int, bytes]:
    async def run() -> tuple[int, bytes]:
        reader = asyncio.StreamReader()
        reader.feed_data(data)
        reader.feed_eof()
        return await wire.PacketReader(reader, max_packet, limits).next()

    return asyncio.run(run())


def test_a_packet_is_its_length_command_and_data() -> None:
    assert read(b"\x00\x00\x00\x0dHexample.com\x00") == (wire.HELO, b"example.com\x00")
    assert read(b"\x00\x00\x00\x01N") == (wire.END_OF_HEADERS, b"")


@pytest.mark.parametrize(
    ("data", "problem"),
    [
        (b"\x00\x00\x00\x00N", "a packet of length 0"),
        (b"\x00\x00\x00\x02Z\x00", "unknown command 'Z'"),
        (b"\x00\x00\x00\x02\x01\x00", "unknown command 0x01"),
        (struct.pack("!I", 0x7FFFFFF0) + b"B", f"a 'B' packet of {0x7FFFFFF0} bytes, more than the 1024 allowed"),
        (struct.pack("!I", 101) + b"D", "a 'D' packet of 101 bytes, more than the 100 allowed"),
    ],
)
def test_packets_that_break_the_protocol_are_named_before_anything_more_is_read(data: bytes, problem: str) -> None:
    with pytest.raises(wire.ProtocolError, match=problem):
        read(data, limits={wire.MACRO: 100})


def test_a_truncated_packet_is_a_closed_connection() -> None:
    with pytest.raises(asyncio.IncompleteReadError):
        read(b"\x00\x00\x00\x64Hclient")


STAGE = b"\x00\x00\x00\x0dDH{cipher}\x00-\x00" + b"\x00\x00\x00\x0dHexample.com\x00" + b"\x00\x00\x00\x01N"


def packets_of(pieces: list[bytes]) -> list[tuple[int, bytes]]:
    """What a PacketReader yields when the stream brings `pieces` one after another, then ends."""

    async def run() -> list[tuple[int, bytes]]:
        reader = asyncio.StreamReader()
        packets = wire.PacketReader(reader, 1024)

        async def feed() -> None:
            for piece in pieces:
                reader.feed_data(piece)
                await asyncio.sleep(0)  # let the reader take this piece before the next arrives
            reader.feed_eof()

        feeding = asyncio.ensure_future(feed())
        found = []
        with pytest.raises(asyncio.IncompleteReadError):
            while True:
                found.append(await packets.next())
        await feeding
        return found

    return asyncio.run(run())


def test_packets_that_arrive_in_one_write_are_read_one_after_another() -> None:
    assert packets_of([STAGE]) == [
        (wire.MACRO, b"H{cipher}\x00-\x00"),
        (wire.HELO, b"example.com\x00"),
        (wire.END_OF_HEADERS, b""),
    ]


def test_a_packet_split_over_several_reads_is_put_back_together() -> None:
    assert packets_of([STAGE[i : i + 3] for i in range(0, len(STAGE), 3)]) == packets_of([STAGE])


def test_strings_need_their_nul_and_their_number() -> None:
    assert wire.strings(b"<a@b.test>\x00SIZE=10\x00") == ["<a@b.test>", "SIZE=10"]
    with pytest.raises(wire.ProtocolError, match="without its terminating NUL"):
        wire.strings(b"client.sender.test")
    with pytest.raises(wire.ProtocolError, match="2 strings where 1 belong"):
        wire.strings(b"a\x00b\x00", 1)


def test_macros_are_name_value_pairs_of_a_command() -> None:
    assert wire.macros(b"Ri\x00ABC123\x00{rcpt_addr}\x00bob@example.test\x00") == (
        wire.RCPT,
        {"i": "ABC123", "{rcpt_addr}": "bob@example.test"},
    )
    assert wire.macros(b"H") == (wire.HELO, {})
    with pytest.raises(wire.ProtocolError, match="a name but no value"):
        wire.macros(b"R{rcpt_addr}\x00")
    with pytest.raises(wire.ProtocolError, match="without the command"):
        wire.macros(b"")


def test_connect_carries_name_family_port_and_address() -> None:
    ipv6 = wire.connect_info(b"mail.good.test\x006\x9c\x402001:db8::7\x00")
    assert ipv6 == wire.ConnectInfo("mail.good.test", "6", 40000, "2001:db8::7")
    assert wire.connect_info(b"localhost\x00U") == wire.ConnectInfo("localhost", "U", 0, "")
    for broken in (b"no-nul", b"host\x00", b"host\x00X\x00\x00a\x00", b"host\x004\x9c"):
        with pytest.raises(wire.ProtocolError):
            wire.connect_info(broken)


def test_header_values_keep_their_bytes_and_folding() -> None:
    assert wire.header(b"Subject\x00 caf\xc3\xa9\n\tmore\x00") == ("Subject", b" caf\xc3\xa9\n\tmore")
    for broken in (b"\x00value\x00", b"Subject\x00value", b"Subject\x00a\x00b\x00"):
        with pytest.raises(wire.ProtocolError):
            wire.header(broken)


def test_our_negotiation_names_the_macros_per_stage() -> None:
    packet = wire.negotiation_reply(0x111, 0x1000A0, {wire.CONNECT: "{client_addr}", wire.RCPT: "i"})
    assert packet == (
        struct.pack("!I", 1 + 12 + 4 + 14 + 4 + 2)
        + b"O"
        + struct.pack("!III", 6, 0x111, 0x1000A0)
        + struct.pack("!I", 0)
        + b"{client_addr}\x00"
        + struct.pack("!I", 3)
        + b"i\x00"
    )


def test_a_reply_doubles_percent_signs_and_never_carries_a_nul() -> None:
    """Postfix reads SMFIR_REPLYCODE as Sendmail does: "%%" is a percent sign, a lone "%" is dropped."""
    assert wire.reply_code("550 5.1.1 <a%b@example.test> unknown\x00 ref=X") == wire.packet(
        b"y", b"550 5.1.1 <a%%b@example.test> unknown ref=X\x00"
    )


def test_header_changes_send_folded_lines_with_lf() -> None:
    assert wire.insert_header(1, "Authentication-Results", " mx;\r\n\tspf=pass") == wire.packet(
        b"i", struct.pack("!I", 1) + b"Authentication-Results\x00 mx;\n\tspf=pass\x00"
    )
    assert wire.change_header(2, "Authentication-Results", "") == wire.packet(
        b"m", struct.pack("!I", 2) + b"Authentication-Results\x00\x00"
    )


# ---------------------------------------------------------------------------- the policy service
def test_a_policy_request_is_name_value_lines() -> None:
    request = parse_request(b"request=smtpd_access_policy\nprotocol_state=RCPT\nsender=a=b@x.test\nqueue_id=\n\n")
    assert request == {
        "request": "smtpd_access_policy",
        "protocol_state": "RCPT",
        "sender": "a=b@x.test",
        "queue_id": "",
    }
    with pytest.raises(RequestError, match="not smtpd_access_policy"):
        parse_request(b"request=junk\n\n")
    with pytest.raises(RequestError, match="without name=value"):
        parse_request(b"request=smtpd_access_policy\ngarbage\n\n")


@pytest.mark.parametrize(
    ("reply", "action"),
    [
        (None, "DUNNO"),
        ("550 5.1.1 The mailbox does not exist. ref=R1", "550 5.1.1 The mailbox does not exist. ref=R1"),
        ("554-5.7.1 listed on\r\n554 5.7.1 a list. ref=R2", "554 5.7.1 listed on a list. ref=R2"),
        ("451 4.4.3 Temporary DNS failure. ref=R3", "DEFER_IF_PERMIT 4.4.3 Temporary DNS failure. ref=R3"),
        ("421 4.3.2 Too busy. ref=R4", "421 4.3.2 Too busy. ref=R4"),
    ],
)
def test_our_replies_become_access_actions(reply: str | None, action: str) -> None:
    assert action_for(reply) == action
