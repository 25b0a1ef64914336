"""Limits and extensions of the gateway with the replies they must give, against `mailwarden serve`.

Connection limits (per client 421 4.7.0, in total 421 4.3.2; several 127.0.0.x source addresses), recipients per message
(452 4.5.3), SIZE at MAIL and the real size after DATA (552 5.3.4), long lines, bare line ends,
STARTTLS, SMTPUTF8, the PROXY protocol, and a storage failure (452 4.3.1, nothing half-written).
"""

from __future__ import annotations

import shutil
import socket
import ssl
import struct
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.mailwarden import Mailwarden, running
from tests.support.smtp import events_of
from tests.support.wire import Reply, Wire

pytestmark = pytest.mark.integration

BOB = "bob@example.test"
USERS = ("bob@example.test", "carol@example.test", "dave@example.test", "erin@example.test")
MESSAGE = b"From: alice@sender.test\r\nSubject: limits\r\n\r\nbody\r\n"


def transaction(wire: Wire, recipients: tuple[str, ...] = (BOB,), sender: str = "alice@sender.test") -> None:
    assert wire.command(f"MAIL FROM:<{sender}>").code == 250
    for recipient in recipients:
        assert wire.command(f"RCPT TO:<{recipient}>").code == 250
    assert wire.command("DATA").code == 354


def send_content(wire: Wire, content: bytes) -> Reply:
    wire.send(content + b".\r\n")
    return wire.reply()


def stored(server: Mailwarden, mailbox: str = BOB) -> list[bytes]:
    return server.messages(mailbox)


@pytest.fixture(scope="module")
def limited(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Mailwarden]:
    overrides = {"smtp": {"max_recipients": 3, "max_message_size": 20_000, "max_line_length": 5_000}}
    with running(tmp_path_factory.mktemp("limits") / "mw", overrides, users=USERS) as instance:
        yield instance


# ---------------------------------------------------------------------------- connections
def _hold(server: Mailwarden, sources: tuple[str, ...]) -> list[Wire]:
    """Open connections from these addresses and keep them; each greeted with 220."""
    held = []
    for source in sources:
        held.append(Wire(server.smtp_port, source=source))
        assert held[-1].reply().code == 220
    return held


def test_a_client_over_the_per_client_limit_gets_421_4_7_0_about_its_own_connections(tmp_path: Path) -> None:
    with running(tmp_path / "mw", {"smtp": {"max_connections": 10, "max_connections_per_ip": 2}}) as server:
        held = _hold(server, ("127.0.0.2", "127.0.0.2", "127.0.0.3"))
        try:
            with Wire(server.smtp_port, source="127.0.0.2") as third_from_same:
                refused = third_from_same.reply()
                assert third_from_same.closed_by_server()
        finally:
            for wire in held:
                wire.close()
        assert refused.matches(
            r"^421 4\.7\.0 Your server 127\.0\.0\.2 has more connections open to us than we allow per client "
            r"\(2 at once\); .* ref=[0-9A-Z]{12}$"
        ), refused.text
        (refusal,) = [e for e in events_of(server, refused.text[-12:], "tempfail") if e["kind"] == "tempfail"]
        assert (refusal["reason"], refusal["client_ip"]) == ("client.too_many_connections", "127.0.0.2")


def test_a_client_over_the_total_limit_is_told_it_is_our_load_not_its_own_with_421_4_3_2(tmp_path: Path) -> None:
    """One connection of its own, refused because all senders together fill the server: no blame on the client."""
    with running(tmp_path / "mw", {"smtp": {"max_connections": 3, "max_connections_per_ip": 2}}) as server:
        held = _hold(server, ("127.0.0.2", "127.0.0.2", "127.0.0.3"))
        try:
            with Wire(server.smtp_port, source="127.0.0.4") as first_of_its_own:
                refused = first_of_its_own.reply()
                assert first_of_its_own.closed_by_server()
        finally:
            for wire in held:
                wire.close()
        assert refused.matches(r"^421 4\.3\.2 Our server is busy: .* limit of 3 connections open, from all senders"), (
            refused.text
        )
        assert refused.matches(r"This is our load, not yours, .* ref=[0-9A-Z]{12}$"), refused.text
        assert "127.0.0.4" not in refused.text and "Too many connections from" not in refused.text
        (refusal,) = [e for e in events_of(server, refused.text[-12:], "tempfail") if e["kind"] == "tempfail"]
        assert (refusal["reason"], refusal["client_ip"]) == ("infra.server_busy", "127.0.0.4")


# ---------------------------------------------------------------------------- one message
def test_recipient_over_the_limit_gets_452_4_5_3_and_the_others_get_the_message(limited: Mailwarden) -> None:
    with Wire(limited.smtp_port) as wire:
        wire.greet()
        assert wire.command("MAIL FROM:<alice@sender.test>").code == 250
        for user in USERS[:3]:
            assert wire.command(f"RCPT TO:<{user}>").code == 250
        fourth = wire.command(f"RCPT TO:<{USERS[3]}>")
        assert fourth.matches(r"^452 4\.5\.3 .*ref="), fourth.text
        assert wire.command("DATA").code == 354
        assert send_content(wire, MESSAGE).code == 250
    for user in USERS[:3]:
        assert any(m.endswith(MESSAGE) for m in stored(limited, user))
    assert not any(m.endswith(MESSAGE) for m in stored(limited, USERS[3]))


def test_declared_size_over_the_limit_is_refused_at_mail_with_552_5_3_4(limited: Mailwarden) -> None:
    with Wire(limited.smtp_port) as wire:
        wire.greet()
        reply = wire.command("MAIL FROM:<alice@sender.test> SIZE=30000")
        assert reply.matches(r"^552 5\.3\.4 .*ref="), reply.text
        assert wire.command("MAIL FROM:<alice@sender.test> SIZE=1000").code == 250


def test_real_size_over_the_limit_is_refused_after_the_final_dot_with_552_5_3_4(limited: Mailwarden) -> None:
    before = len(stored(limited))
    with Wire(limited.smtp_port) as wire:
        wire.greet()
        transaction(wire)
        reply = send_content(wire, b"Subject: big\r\n\r\n" + b"x" * 70 + b"\r\n" * 1 + (b"y" * 70 + b"\r\n") * 400)
        assert reply.matches(r"^552 5\.3\.4 .*ref="), reply.text
        assert wire.command("NOOP").code == 250  # the session goes on
    assert len(stored(limited)) == before
    assert list((limited.maildir(BOB) / "tmp").iterdir()) == []


def test_lines_longer_than_1001_bytes_are_accepted_up_to_max_line_length(limited: Mailwarden) -> None:
    content = b"Subject: long line\r\n\r\n" + b"z" * 4_999 + b"\r\n"
    with Wire(limited.smtp_port) as wire:
        wire.greet()
        transaction(wire)
        assert send_content(wire, content).code == 250
    assert stored(limited)[-1].endswith(content)


def test_a_line_over_max_line_length_is_refused(limited: Mailwarden) -> None:
    before = len(stored(limited))
    with Wire(limited.smtp_port) as wire:
        wire.greet()
        transaction(wire)
        reply = send_content(wire, b"Subject: too long\r\n\r\n" + b"z" * 5_001 + b"\r\n")
        assert reply.matches(r"^500 5\.5\.2 .*longer than 5000 bytes.*ref="), reply.text
    assert len(stored(limited)) == before


def test_bare_line_ends_are_normalized_to_crlf_by_default(limited: Mailwarden) -> None:
    with Wire(limited.smtp_port) as wire:
        wire.greet()
        transaction(wire)
        assert send_content(wire, b"Subject: bare\r\n\r\none\ntwo\rthree\r\n").code == 250
    assert stored(limited)[-1].endswith(b"\r\n\r\none\r\ntwo\r\nthree\r\n")


def test_bare_line_ends_are_refused_with_550_5_5_2_when_configured(tmp_path: Path) -> None:
    with running(tmp_path / "mw", {"smtp": {"bare_newline": "reject"}}) as server:
        with Wire(server.smtp_port) as wire:
            wire.greet()
            transaction(wire)
            reply = send_content(wire, b"Subject: bare\r\n\r\none\ntwo\r\n")
            assert reply.matches(r"^550 5\.5\.2 .*bare LF.*ref="), reply.text
        assert stored(server) == []
        (refusal,) = [e for e in server.events() if e["reason"] == "protocol.bare_lf"]
        assert refusal["detail"]["bare_newlines"] == 1


# ---------------------------------------------------------------------------- extensions
def test_starttls_starts_over_and_ignores_plaintext_pipelined_behind_it(limited: Mailwarden) -> None:
    with Wire(limited.smtp_port) as wire:
        assert "STARTTLS" in wire.greet().lines
        wire.send(b"STARTTLS\r\nNOOP\r\n")  # the NOOP was injected before TLS: it must not be answered
        assert wire.reply().matches(r"^220 2\.0\.0 ")
        context = ssl.create_default_context()
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
        wire.sock = context.wrap_socket(wire.sock, server_hostname="mx.example.test")
        assert wire.command("MAIL FROM:<alice@sender.test>").matches(r"^503 5\.5\.1 .*EHLO")  # HELO forgotten
        ehlo = wire.command("EHLO client.sender.test")
        assert ehlo.code == 250
        assert "STARTTLS" not in ehlo.lines
        assert wire.command("STARTTLS").matches(r"^503 5\.5\.1 .*already")
        transaction(wire)
        assert send_content(wire, MESSAGE).code == 250
    assert b" with ESMTPS id " in stored(limited)[-1]
    helos = [e for e in limited.events() if e["kind"] == "helo" and e["detail"].get("tls")]
    assert helos and helos[-1]["detail"]["tls"].startswith("TLS")


def test_smtputf8_sender_is_accepted_and_recorded(limited: Mailwarden) -> None:
    with Wire(limited.smtp_port) as wire:
        assert "SMTPUTF8" in wire.greet().lines
        assert wire.command("MAIL FROM:<ålice@bücher.test> SMTPUTF8").code == 250
        assert wire.command("RCPT TO:<bob@example.test>").code == 250
        assert wire.command("DATA").code == 354
        assert send_content(wire, "Subject: Grüße\r\n\r\nÄpfel\r\n".encode()).code == 250
    assert b" with UTF8SMTP id " in stored(limited)[-1]
    accept = [e for e in limited.events() if e["kind"] == "accept"][-1]
    assert accept["sender"] == "ålice@bücher.test"


def _proxy_v2(source: str, port: int) -> bytes:
    addresses = socket.inet_aton(source) + socket.inet_aton("192.0.2.1") + struct.pack("!HH", port, 25)
    return b"\r\n\r\n\x00\r\nQUIT\n" + bytes([0x21, 0x11]) + struct.pack("!H", len(addresses)) + addresses


def test_proxy_protocol_v1_and_v2_give_the_real_client_address_and_untrusted_peers_are_refused(
    tmp_path: Path,
) -> None:
    overrides = {"smtp": {"proxy_protocol": True, "proxy_trusted": ["127.0.0.2/32"]}}
    with running(tmp_path / "mw", overrides) as server:
        for header, client in (
            (b"PROXY TCP4 192.0.2.7 192.0.2.1 40000 25\r\n", "192.0.2.7"),
            (_proxy_v2("198.51.100.9", 40001), "198.51.100.9"),
        ):
            with Wire(server.smtp_port, source="127.0.0.2") as wire:
                wire.send(header)
                wire.greet()
                transaction(wire)
                assert send_content(wire, MESSAGE).code == 250
            accept = [e for e in server.events() if e["kind"] == "accept"][-1]
            assert accept["client_ip"] == client
            assert f"[{client}]".encode() in stored(server)[-1]
        with Wire(server.smtp_port, source="127.0.0.3") as untrusted:
            untrusted.send(b"PROXY TCP4 192.0.2.8 192.0.2.1 40000 25\r\n")
            assert untrusted.reply().matches(r"^421 4\.7\.0 .*127\.0\.0\.3 is not allowed to send a PROXY header")
            assert untrusted.closed_by_server()
        with Wire(server.smtp_port, source="127.0.0.2") as garbled:
            garbled.send(b"HELLO THERE\r\n")
            assert garbled.reply().matches(r"^421 4\.7\.0 .*invalid PROXY header")
        assert not [e for e in server.events() if e["client_ip"] == "192.0.2.8"]


def test_proxy_protocol_is_off_by_default(limited: Mailwarden) -> None:
    with Wire(limited.smtp_port) as wire:
        assert wire.reply().code == 220
        assert wire.command("PROXY TCP4 192.0.2.7 192.0.2.1 40000 25").matches(r"^500 5\.5\.1 ")
    assert not [e for e in limited.events() if e["client_ip"] == "192.0.2.7"]


# ---------------------------------------------------------------------------- storage
def test_storage_failure_answers_452_4_3_1_and_leaves_no_copy_anywhere(tmp_path: Path) -> None:
    overrides = {"mail": {"domains": ["example.test", "other.test"]}}
    with running(tmp_path / "mw", overrides, users=(BOB, "carol@other.test")) as server:
        broken = server.maildir_root / "other.test"
        shutil.rmtree(broken)
        broken.write_text("a plain file where the domain directory must be\n")
        with Wire(server.smtp_port) as wire:
            wire.greet()
            transaction(wire, recipients=(BOB, "carol@other.test"))
            reply = send_content(wire, MESSAGE)
            assert reply.matches(r"^452 4\.3\.1 .*ref="), reply.text
            transaction(wire, recipients=(BOB,))  # the healthy mailbox still works
            assert send_content(wire, MESSAGE).code == 250
        assert len(stored(server)) == 1
        assert list((server.maildir(BOB) / "tmp").iterdir()) == []
        (refusal,) = [e for e in server.events() if e["reason"] == "infra.storage"]
        assert refusal["smtp_code"] == 452
        refused_ref = refusal["ref"]
        assert not [e for e in server.events() if e["kind"] in ("accept", "deliver") and e["ref"] == refused_ref]
