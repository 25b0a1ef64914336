"""Bad input from a stranger, table-driven, against a real `mailwarden serve`.

Every case gets the right reply (or a timeout close), and after every case the server still
answers and nothing partial is in the Maildir. The server runs with short timeouts (3 s) so the
slow-client cases are quick; a slow but steady upload must still get through.
"""

from __future__ import annotations

import socket
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.support.mailwarden import Mailwarden, running
from tests.support.wire import Closed, Wire

pytestmark = pytest.mark.integration

BOB = "bob@example.test"
IDLE_TIMEOUT = 3


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Mailwarden]:
    overrides = {
        "smtp": {"timeouts": {"command": IDLE_TIMEOUT, "data_block": IDLE_TIMEOUT}, "max_command_line": 512},
        "mail": {"postmaster": BOB},
    }
    with running(tmp_path_factory.mktemp("bad-input") / "mw", overrides) as instance:
        yield instance


def maildir_files(server: Mailwarden) -> tuple[list[Path], list[Path]]:
    """(files in new/ and cur/, files in tmp/) of bob's Maildir."""
    base = server.maildir(BOB)
    return [f for d in ("new", "cur") for f in (base / d).glob("*")], list((base / "tmp").glob("*"))


# ---------------------------------------------------------------------------- the table
# A step sends bytes (None: send nothing) and expects a reply matching a regular expression;
# CLOSED expects the server to close the connection (after an optional last reply).
CLOSED = "<closed>"
Step = tuple[bytes | None, str]


@dataclass(frozen=True)
class Case:
    name: str
    steps: list[Step]
    delivered: int = 0  # messages this case must leave in the Maildir


MAIL = (b"MAIL FROM:<alice@sender.test>\r\n", r"^250 2\.1\.0")
RCPT = (b"RCPT TO:<bob@example.test>\r\n", r"^250 2\.1\.5")
DATA = (b"DATA\r\n", r"^354 ")
NOOP_OK = (b"NOOP\r\n", r"^250 2\.0\.0")


def smuggling(separator: bytes) -> Case:
    """A second transaction hidden behind a fake end of data must stay inside the one message."""
    content = (
        b"Subject: smuggling\r\n\r\nfirst part"
        + separator
        + b"MAIL FROM:<evil@evil.test>\r\nRCPT TO:<bob@example.test>\r\nDATA\r\nsmuggled part\r\n.\r\n"
    )
    return Case(
        f"smuggling {separator!r} stays one message",
        [MAIL, RCPT, DATA, (content, r"^250 2\.0\.0 Message accepted .* ref="), (b"QUIT\r\n", r"^221 2\.0\.0")],
        delivered=1,
    )


CASES = [
    Case("overlong command line", [(b"NOOP " + b"x" * 600 + b"\r\n", r"^500 5\.5\.2 .*too long"), NOOP_OK]),
    Case(
        "command line far beyond the read buffer",
        [(b"HELO " + b"y" * 300_000 + b"\r\n", r"^500 5\.5\.2 .*too long"), NOOP_OK],
    ),
    Case("RCPT before MAIL", [(b"RCPT TO:<bob@example.test>\r\n", r"^503 5\.5\.1 "), NOOP_OK]),
    Case("DATA before MAIL", [(b"DATA\r\n", r"^503 5\.5\.1 "), NOOP_OK]),
    Case("nested MAIL", [MAIL, (b"MAIL FROM:<other@sender.test>\r\n", r"^503 5\.5\.1 .*nested")]),
    Case(
        "DATA without an accepted recipient",
        [MAIL, (b"RCPT TO:<nobody@example.test>\r\n", r"^550 5\.1\.1 .*ref="), (b"DATA\r\n", r"^554 5\.5\.1 ")],
    ),
    Case(
        "pipelined garbage between commands",
        [
            (b"MAIL FROM:<alice@sender.test>\r\nGARBAGE\r\nRCPT TO:<bob@example.test>\r\nRSET\r\n", r"^250 2\.1\.0"),
            (None, r'^500 5\.5\.1 Error: command "GARBAGE" not recognized'),
            (None, r"^250 2\.1\.5"),
            (None, r"^250 2\.0\.0"),
        ],
    ),
    Case("NUL byte in a command", [(b"HELO a\0b.test\r\n", r"^500 5\.5\.2 .*NUL"), NOOP_OK]),
    Case("8-bit bytes in a command verb", [(b"H\xe9LO x.test\r\n", r"^500 5\.5\.2 .*UTF-8"), NOOP_OK]),
    Case("invalid UTF-8 in an address", [(b"MAIL FROM:<\xff\xfe@sender.test>\r\n", r"^500 5\.5\.2 "), NOOP_OK]),
    Case(
        "bare CR inside a command line",
        [(b"MAIL FROM:<alice@sender.test>\rRCPT TO:<bob@example.test>\r\n", r"^500 5\.5\.2 .*bare CR"), NOOP_OK],
    ),
    Case(
        "non-ASCII address without SMTPUTF8",
        [MAIL, ("RCPT TO:<bøb@example.test>\r\n".encode(), r"^553 5\.6\.7 ")],
    ),
    Case("unknown MAIL parameter", [(b"MAIL FROM:<a@sender.test> RET=FULL\r\n", r"^555 5\.5\.4 "), NOOP_OK]),
    Case("malformed sender address", [(b"MAIL FROM:<a@@sender.test>\r\n", r"^501 5\.5\.4 "), NOOP_OK]),
    Case("unknown command", [(b"ETRN example.test\r\n", r"^500 5\.5\.1 "), NOOP_OK]),
    Case("AUTH on the MX", [(b"AUTH PLAIN AGJvYgBzZWNyZXQ=\r\n", r"^502 5\.5\.1 "), NOOP_OK]),
    smuggling(b"\n.\n"),
    smuggling(b"\n.\r\n"),
    smuggling(b"\r.\r"),
    smuggling(b"\r\n.\n"),
    smuggling(b"\r.\r\n"),
    Case(
        "a dot-stuffed line is not the end",
        [MAIL, RCPT, DATA, (b"Subject: dots\r\n\r\n..\r\n.x\r\n.\r\n", r"^250 2\.0\.0"), NOOP_OK],
        delivered=1,
    ),
    Case(
        "pipelined commands right after the final dot",
        [
            MAIL,
            RCPT,
            DATA,
            (b"Subject: p\r\n\r\nbody\r\n.\r\nNOOP\r\nQUIT\r\n", r"^250 2\.0\.0"),
            (None, r"^250 2\.0\.0"),
            (None, r"^221 "),
        ],
        delivered=1,
    ),
    Case("an HTTP request", [(b"GET / HTTP/1.1\r\nHost: mx\r\n\r\n", r"^421 4\.7\.0 .*non-SMTP"), (None, CLOSED)]),
    Case("an HTTP POST", [(b"POST /submit HTTP/1.1\r\n", r"^421 4\.7\.0 "), (None, CLOSED)]),
    Case(
        "too many errors",
        [
            (b"BOGUS\r\n" * 20, r"^500 5\.5\.1"),
            *[(None, r"^500 5\.5\.1")] * 19,
            (b"NOOP\r\n", r"^421 4\.7\.0 .*too many errors"),
            (None, CLOSED),
        ],
    ),
    Case("idle client", [(None, r"^421 4\.4\.2 .*Timeout.*ref="), (None, CLOSED)]),
    Case(
        "client silent in the middle of DATA",
        [MAIL, RCPT, DATA, (b"Subject: half\r\n\r\nthe first half", r"^421 4\.4\.2 .*ref="), (None, CLOSED)],
    ),
]


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_bad_input_gets_the_right_reply_and_leaves_nothing_partial(server: Mailwarden, case: Case) -> None:
    before, _ = maildir_files(server)
    with Wire(server.smtp_port) as wire:
        wire.greet()
        for data, expected in case.steps:
            if data is not None:
                wire.send(data)
            if expected == CLOSED:
                assert wire.closed_by_server(timeout=IDLE_TIMEOUT * 5), "the server did not close the connection"
                continue
            reply = wire.reply()
            assert reply.matches(expected), f"expected {expected!r}, got {reply.text!r}"
    assert_server_answers(server)
    after, tmp = maildir_files(server)
    assert tmp == [], "a partial file is left in tmp/"
    assert len(after) - len(before) == case.delivered


def assert_server_answers(server: Mailwarden) -> None:
    with Wire(server.smtp_port) as wire:
        assert wire.greet().code == 250
        assert wire.command("QUIT").code == 221


def test_smuggled_transaction_is_content_of_the_one_message_with_normalized_line_ends(server: Mailwarden) -> None:
    before, _ = maildir_files(server)
    with Wire(server.smtp_port) as wire:
        wire.greet()
        for data, expected in smuggling(b"\n.\n").steps:
            assert data is not None
            wire.send(data)
            assert wire.reply().matches(expected)
    after, _ = maildir_files(server)
    (new,) = set(after) - set(before)
    stored = new.read_bytes()
    assert stored.endswith(
        b"first part\r\n.\r\nMAIL FROM:<evil@evil.test>\r\nRCPT TO:<bob@example.test>\r\nDATA\r\nsmuggled part\r\n"
    )
    accepts = [e for e in server.events() if e["kind"] == "accept" and e["sender"] == "evil@evil.test"]
    assert accepts == []


def test_data_cut_off_by_disconnect_delivers_nothing_and_is_recorded(server: Mailwarden) -> None:
    before, _ = maildir_files(server)
    with Wire(server.smtp_port) as wire:
        wire.greet()
        for data, expected in (MAIL, RCPT, DATA):
            assert data is not None
            wire.send(data)
            assert wire.reply().matches(expected)
        wire.send(b"Subject: cut\r\n\r\n" + b"line of text\r\n" * 5000)
    deadline = time.monotonic() + 30
    while not [e for e in server.events() if e["kind"] == "data" and e["detail"].get("incomplete")]:
        assert time.monotonic() < deadline, "no event records the lost DATA"
        time.sleep(0.2)
    assert_server_answers(server)
    after, tmp = maildir_files(server)
    assert after == before
    assert tmp == []


def test_slow_but_steady_upload_is_not_cut_off(server: Mailwarden) -> None:
    """Every line comes well within the idle timeout, the whole upload takes longer than it."""
    with Wire(server.smtp_port) as wire:
        wire.greet()
        for data, expected in (MAIL, RCPT, DATA):
            assert data is not None
            wire.send(data)
            assert wire.reply().matches(expected)
        wire.send(b"Subject: slow\r\n\r\n")
        started = time.monotonic()
        while time.monotonic() - started < IDLE_TIMEOUT * 2:
            wire.send(b"a line that trickles in\r\n")
            time.sleep(0.5)
        wire.send(b".\r\n")
        assert wire.reply().matches(r"^250 2\.0\.0")


def test_half_closing_client_still_gets_its_message_accepted(server: Mailwarden) -> None:
    """A client that sends everything and shuts its sending side (printf ... | nc) is answered in full."""
    before, _ = maildir_files(server)
    with Wire(server.smtp_port) as wire:
        wire.send(
            b"EHLO client.sender.test\r\nMAIL FROM:<alice@sender.test>\r\nRCPT TO:<bob@example.test>\r\n"
            b"DATA\r\nSubject: nc\r\n\r\nhello\r\n.\r\nQUIT\r\n"
        )
        wire.sock.shutdown(socket.SHUT_WR)
        replies = []
        try:
            while True:
                replies.append(wire.reply().code)
        except Closed:
            pass
    assert replies == [220, 250, 250, 250, 354, 250, 221]
    after, _ = maildir_files(server)
    assert len(after) == len(before) + 1


def test_a_size_in_digits_other_than_ascii_gets_501_not_a_451_and_a_traceback(server: Mailwarden) -> None:
    """`SIZE=²` passed as digits (str.isdigit) and failed the size check on int(): 451 4.3.0 and a traceback."""
    with Wire(server.smtp_port) as wire:
        wire.greet()
        for size in ("²", "٣"):
            reply = wire.command(f"MAIL FROM:<alice@sender.test> SIZE={size}")
            assert reply.matches(r"^501 5\.5\.4 Syntax: malformed parameter SIZE="), reply.text
        assert wire.command("MAIL FROM:<alice@sender.test> SIZE=" + "9" * 20).matches(r"^552 5\.3\.4 ")
    assert "Traceback" not in server.log.read_text()


# ---------------------------------------------------------------------------- relay tricks
RELAY_TRICKS = [
    ("user%other.test@example.test", 554, "5.7.1"),
    ('"user@other.test"@example.test', 554, "5.7.1"),
    ("user!other.test@example.test", 554, "5.7.1"),
    ("@example.test:victim@other.test", 554, "5.7.1"),
    ("bob@[127.0.0.1]", 554, "5.7.1"),
    ("bob@other.test", 554, "5.7.1"),
    ("bob@sub.example.test", 554, "5.7.1"),
    ("bob@example.test.other.test", 554, "5.7.1"),
    ("bob@example.test@other.test", 501, "5.1.3"),
    ("other.test!bob", 501, "5.1.3"),
    ("bob@example.test.", 250, "2.1.5"),
    ("BOB@Example.TEST", 250, "2.1.5"),
    ("bob+news@example.test", 250, "2.1.5"),
    ('"bob"@example.test', 250, "2.1.5"),
    ("@relay.example.test:bob@example.test", 250, "2.1.5"),
    ("Postmaster", 250, "2.1.5"),
    ("postmaster@example.test", 250, "2.1.5"),
    ("nobody@example.test", 550, "5.1.1"),
]


@pytest.mark.parametrize(("address", "code", "enhanced"), RELAY_TRICKS, ids=[r[0] for r in RELAY_TRICKS])
def test_relay_tricks_are_refused_and_local_spellings_accepted(
    server: Mailwarden, address: str, code: int, enhanced: str
) -> None:
    with Wire(server.smtp_port) as wire:
        wire.greet()
        assert wire.command("MAIL FROM:<alice@sender.test>").code == 250
        reply = wire.command(f"RCPT TO:<{address}>")
        assert (reply.code, reply.lines[0].split(" ")[0]) == (code, enhanced), reply.text
        if code >= 400:
            assert reply.code == 501 or "ref=" in reply.text
            assert wire.command("DATA").code == 554  # no recipient: nothing can be relayed
    assert_server_answers(server)
