"""CHUNKING/BDAT (RFC 3030) with a real client that sends it (tests/support/bdat.py), against `mailwarden serve`.

Messages sent in BDAT chunks get exactly what DATA gets: the same checks, the same replies and
refs, the same events, the same bytes on disk. The exact dialogues are golden transcripts
(transcripts/*/bdat*.txt); here are whole messages, large ones, and sessions that mix both ways.
"""

from __future__ import annotations

import re
import socket
import time
from collections.abc import Iterator

import pytest

from tests.support.bdat import BdatClient
from tests.support.mailwarden import Mailwarden, running
from tests.support.smtp import events_of
from tests.support.wire import Reply, Wire

pytestmark = pytest.mark.integration

BOB = "bob@example.test"
CAROL = "carol@example.test"
LIMIT = 3_000_000
OUR_REF = re.compile(r" ref=([0-9A-Z]{12})$")


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Mailwarden]:
    overrides = {"smtp": {"max_message_size": LIMIT, "memory_spool_limit": 65_536}}
    with running(tmp_path_factory.mktemp("bdat") / "mw", overrides, users=(BOB, CAROL)) as instance:
        yield instance


def message(subject: str, lines: int) -> bytes:
    body = b"".join(b".line %06d with a dot in front, which BDAT does not stuff\r\n" % n for n in range(lines))
    return (
        f"From: alice@sender.test\r\nSubject: {subject}\r\nMessage-ID: <{subject}@sender.test>\r\n\r\n".encode() + body
    )


def ref_of(reply: Reply) -> str:
    found = OUR_REF.search(reply.text)
    assert found is not None, reply.text
    return found.group(1)


def test_a_large_message_in_pipelined_chunks_is_stored_byte_for_byte_with_its_events(server: Mailwarden) -> None:
    content = message("large", 25_000)  # 1.4 MB: spooled to disk, 22 chunks of 64 KiB
    with BdatClient(server.smtp_port) as client:
        sent = client.send("alice@sender.test", [BOB, CAROL], content)
    assert [sent.mail.code, *(r.code for r in sent.recipients)] == [250, 250, 250]
    assert [r.text for r in sent.chunks[:-1]] == [f"250 2.0.0 {65536} octets received"] * (len(sent.chunks) - 1)
    assert sent.final.matches(r"^250 2\.0\.0 Message accepted and stored for 2 recipient\(s\) ref="), sent.final.text
    ref = ref_of(sent.final)
    for mailbox in (BOB, CAROL):
        (stored,) = [m for m in server.messages(mailbox) if f"X-Mailwarden-Ref: {ref}\r\n".encode() in m]
        assert stored.endswith(content) and stored.startswith(b"Received: from client.sender.test")
    events = events_of(server, ref, "accept")
    (data,) = [e for e in events if e["kind"] == "data"]
    assert (data["size"], data["message_id"]) == (len(content), "<large@sender.test>")
    assert sorted(e["recipient"] for e in events if e["kind"] == "deliver") == [BOB, CAROL]


def test_bdat_and_data_in_one_session_get_the_same_refusals_and_acceptances(server: Mailwarden) -> None:
    """RFC 3030 with DATA's replies: a refused recipient, a transaction without one, then both accepted."""
    content = message("mixed", 10)
    with BdatClient(server.smtp_port) as client:
        chunked = client.send("alice@sender.test", ["nobody@example.test"], content, chunk_size=200)
        assert client.command("RSET").code == 250
        classic = client.send_with_data("alice@sender.test", ["nobody@example.test"], content)
        assert client.command("RSET").code == 250
        accepted_chunked = client.send("alice@sender.test", [BOB], content, chunk_size=200).final
        accepted_classic = client.send_with_data("alice@sender.test", [BOB], content)
    (refused,) = chunked.recipients
    assert refused.matches(r"^550 5\.1\.1 The mailbox nobody@example\.test does not exist here"), refused.text
    # every chunk behind the refused recipient is read and refused with DATA's reply, the transaction's ref
    assert {r.text for r in chunked.chunks} == {f"554 5.5.1 Error: no valid recipients ref={ref_of(refused)}"}
    assert len(chunked.chunks) == len(content) // 200 + 1
    assert OUR_REF.sub("", classic.text) == OUR_REF.sub("", chunked.final.text)
    assert OUR_REF.sub("", accepted_chunked.text) == OUR_REF.sub("", accepted_classic.text)
    stored = {ref: [m for m in server.messages(BOB) if f"X-Mailwarden-Ref: {ref}\r\n".encode() in m] for ref in (
        ref_of(accepted_chunked), ref_of(accepted_classic))}  # fmt: skip
    assert all(len(copies) == 1 and copies[0].endswith(content) for copies in stored.values())
    refusals = [e for e in events_of(server, ref_of(refused), "disconnect") if e["kind"] == "reject"]
    assert len(refusals) == 1 + len(chunked.chunks)  # each refusal is an event


def test_a_message_past_the_size_limit_is_refused_at_the_chunk_that_crosses_it(server: Mailwarden) -> None:
    content = message("big", LIMIT // 60 + 1000)
    with BdatClient(server.smtp_port) as client:
        sent = client.send("alice@sender.test", [BOB], content, chunk_size=1_000_000)
        assert client.command("NOOP").code == 250
    crossing = LIMIT // 1_000_000  # the first chunk that takes the message past the limit
    assert [r.text for r in sent.chunks[:crossing]] == ["250 2.0.0 1000000 octets received"] * crossing
    refused = sent.chunks[crossing]
    assert refused.matches(
        rf"^552 5\.3\.4 The message is too big: {min(len(content), (crossing + 1) * 1_000_000)} bytes, "
        rf"the limit is {LIMIT} bytes"
    ), refused.text
    assert all(r.matches(r"^503 5\.5\.1 Error: need MAIL command") for r in sent.chunks[crossing + 1 :])
    assert not [m for m in server.messages(BOB) if b"Subject: big\r\n" in m]
    assert list((server.maildir(BOB) / "tmp").iterdir()) == []


def test_a_connection_lost_in_the_middle_of_a_chunk_delivers_nothing_and_is_recorded(server: Mailwarden) -> None:
    with Wire(server.smtp_port) as wire:
        wire.greet()
        assert wire.command("MAIL FROM:<cut@sender.test>").code == 250
        assert wire.command(f"RCPT TO:<{BOB}>").code == 250
        wire.send(b"BDAT 100000 LAST\r\nSubject: cut\r\n\r\n" + b"x" * 70_000)
        wire.sock.shutdown(socket.SHUT_WR)
        assert wire.closed_by_server()
    deadline = time.monotonic() + 30
    while not (lost := [e for e in server.events() if e["sender"] == "cut@sender.test" and e["kind"] == "data"]):
        assert time.monotonic() < deadline, "no event records the lost chunk"
        time.sleep(0.2)
    (event,) = lost
    assert event["detail"]["incomplete"] and event["size"] == len(b"Subject: cut\r\n\r\n") + 70_000
    assert not [m for m in server.messages(BOB) if b"Subject: cut" in m]
    assert list((server.maildir(BOB) / "tmp").iterdir()) == []
