"""Mailbox access with evidence: a real `mailwarden serve` with POP3, and poplib as the customer's devices.

The story of the issue: a message is delivered; device A (127.0.0.5) fetches and deletes it;
device B (127.0.0.6) then finds the mailbox empty - and the events prove who deleted it, when
and over which protocol, joined to the delivery by its ref and Maildir uid.
"""

from __future__ import annotations

import base64
import json
import poplib
import ssl
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.support.mailwarden import Mailwarden, running
from tests.support.net import free_port
from tests.support.pop3 import Device, RawPop3, message, send, wait_events

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def mx(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Mailwarden]:
    """mailwarden with POP3 (plaintext allowed, as on a trusted network) and the mailbox bob@example.test."""
    port = free_port()
    overrides = {"pop3": {"listen": [f"127.0.0.1:{port}"], "allow_plaintext_auth": True}}
    with running(tmp_path_factory.mktemp("mx"), overrides, users=("bob@example.test", "carol@example.test")) as mw:
        mw.pop3_port = port  # type: ignore[attr-defined]
        yield mw


def pop3_port(mw: Mailwarden) -> int:
    port: int = mw.pop3_port  # type: ignore[attr-defined]
    return port


def by_kind(events: list[dict[str, Any]], source: str, kind: str) -> list[dict[str, Any]]:
    return [e for e in events if e["source"] == source and e["kind"] == kind]


def test_device_a_fetches_and_deletes_device_b_finds_nothing_and_the_events_prove_who(mx: Mailwarden) -> None:
    ref = send(mx.smtp_port, "bob@example.test", message(1))

    device_a = Device(pop3_port(mx), source="127.0.0.5")
    device_a.user("bob@example.test")
    device_a.pass_("secret")
    (listed,) = device_a.uidl()[1]
    uid = listed.split()[1].decode()
    _, lines, _ = device_a.retr(1)
    assert b"Message-ID: <m1@sender.test>" in lines
    device_a.dele(1)
    device_a.quit()

    device_b = Device(pop3_port(mx), source="127.0.0.6")
    device_b.user("bob@example.test")
    device_b.pass_("secret")
    assert device_b.stat() == (0, 0)
    device_b.quit()

    events = wait_events(mx.events, lambda e: e["source"] == "pop3" and e["kind"] == "logout", count=2)
    events = mx.events()
    (deliver,) = [e for e in by_kind(events, "gateway", "deliver") if e["ref"] == ref]
    assert deliver["detail"]["uid"] == uid  # UIDL is the Maildir unique name the delivery recorded
    (retrieve,) = by_kind(events, "pop3", "retrieve")
    (delete,) = by_kind(events, "pop3", "delete")
    for access in (retrieve, delete):
        assert access["client_ip"] == "127.0.0.5"
        assert access["recipient"] == "bob@example.test"
        assert access["ref"] == ref  # joins the access to the delivery
        assert access["message_id"] == "<m1@sender.test>"
        assert access["detail"]["uid"] == uid
        assert access["detail"]["protocol"] == "pop3"
    assert retrieve["reason"] == "access.retrieved" and retrieve["detail"]["command"] == "RETR"
    assert delete["reason"] == "access.deleted"
    assert deliver["ts"] < retrieve["ts"] <= delete["ts"]
    logins = by_kind(events, "pop3", "login")
    assert [(e["client_ip"], e["detail"]["messages"]) for e in logins] == [("127.0.0.5", 1), ("127.0.0.6", 0)]
    assert all(e["detail"]["mechanism"] == "USER" and e["detail"]["tls"] is None for e in logins)
    logout_a = next(e for e in by_kind(events, "pop3", "logout") if e["client_ip"] == "127.0.0.5")
    assert logout_a["detail"]["retrieved"] == 1 and logout_a["detail"]["deleted"] == 1
    assert delete["session"] == logout_a["session"] == retrieve["session"]
    (traced,) = json.loads(mx.cli("trace", "--ref", ref, "--format", "json").stdout)
    (recipient,) = traced["recipients"]
    assert recipient["status"] == "deleted"
    assert [(a["kind"], a["client_ip"], a["protocol"]) for a in recipient["accesses"]] == [
        ("retrieve", "127.0.0.5", "pop3"),
        ("delete", "127.0.0.5", "pop3"),
    ]


def test_uidl_is_the_same_in_every_session_and_after_a_restart(tmp_path: Path) -> None:
    port = free_port()
    overrides = {"pop3": {"listen": [f"127.0.0.1:{port}"], "allow_plaintext_auth": True}}
    with running(tmp_path / "mx", overrides) as mw:
        send(mw.smtp_port, "bob@example.test", message(1))
        send(mw.smtp_port, "bob@example.test", message(2))

        def uidls() -> list[bytes]:
            client = Device(port)
            client.user("bob@example.test")
            client.pass_("secret")
            listing = client.uidl()[1]
            client.retr(1)
            client.quit()
            return listing

        first = uidls()
        assert first == uidls()
        mw.stop()
        mw.start()
        assert uidls() == first
        uids = {e["detail"]["uid"] for e in mw.events() if e["kind"] == "deliver"}
        assert {line.split()[1].decode() for line in first} == uids


def test_retr_returns_the_stored_message_exactly_and_top_only_the_head(mx: Mailwarden) -> None:
    body = b"first line\r\n.starts with a dot\r\n..two dots\r\n.\r\nlast\r\n"
    send(mx.smtp_port, "carol@example.test", message(7, "carol@example.test", body))
    (stored,) = mx.messages("carol@example.test")
    client = Device(pop3_port(mx))
    client.user("carol@example.test")
    client.pass_("secret")
    count, octets = client.stat()
    assert (count, octets) == (1, len(stored))
    _, lines, _ = client.retr(1)  # poplib undoes the dot-stuffing
    assert b"\r\n".join(lines) + b"\r\n" == stored
    _, head, _ = client.top(1, 1)
    assert head[-2:] == [b"", b"first line"]
    assert b"\r\n".join(head[:-2]) + b"\r\n\r\n" == stored[: stored.index(b"\r\n\r\n") + 4]
    client.rset()
    client.quit()
    events = wait_events(mx.events, lambda e: e["kind"] == "retrieve" and e["recipient"] == "carol@example.test", 2)
    assert [e["detail"]["command"] for e in events] == ["RETR", "TOP"]
    assert events[1]["detail"]["lines"] == 1
    # The message stays; the retrieval made it "seen" in the Maildir, as other mail programs expect.
    (kept,) = (mx.maildir("carol@example.test") / "cur").iterdir()
    assert kept.name.endswith(":2,S")


def test_capa_lists_the_extensions_and_response_codes(mx: Mailwarden) -> None:
    client = Device(pop3_port(mx))
    capabilities = client.capa()
    for name in ("TOP", "UIDL", "RESP-CODES", "AUTH-RESP-CODE", "PIPELINING", "USER", "SASL", "STLS"):
        assert name in capabilities
    assert capabilities["SASL"] == ["PLAIN"]
    client.quit()


def test_sasl_plain_logs_in_with_and_without_an_initial_response(mx: Mailwarden) -> None:
    raw = RawPop3(pop3_port(mx))
    token = base64.b64encode(b"\0carol@example.test\0secret")
    assert raw.command(b"AUTH PLAIN " + token).startswith(b"+OK Logged in")
    assert raw.command(b"QUIT").startswith(b"+OK")
    raw.close()
    raw = RawPop3(pop3_port(mx))
    assert raw.command(b"AUTH PLAIN") == b"+ "
    assert raw.command(token).startswith(b"+OK Logged in")
    raw.close()
    logins = wait_events(
        mx.events,
        lambda e: e["kind"] == "login" and e["recipient"] == "carol@example.test" and e["reason"] is None,
        2,
    )
    assert [e["detail"]["mechanism"] for e in logins[-2:]] == ["PLAIN", "PLAIN"], logins


def test_without_stls_plaintext_login_is_refused_and_after_stls_it_works_with_tls_in_the_events(
    tmp_path: Path,
) -> None:
    port = free_port()
    with running(tmp_path / "mx", {"pop3": {"listen": [f"127.0.0.1:{port}"]}}) as mw:
        client = Device(port)
        assert "USER" not in client.capa() and "STLS" in client.capa()
        with pytest.raises(poplib.error_proto, match=r"\[AUTH\] Plaintext authentication is not allowed"):
            client.user("bob@example.test")
        context = ssl.create_default_context()
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
        client.stls(context)
        assert "USER" in client.capa() and "STLS" not in client.capa()
        client.user("bob@example.test")
        client.pass_("secret")
        client.quit()
        (refused, login) = wait_events(mw.events, lambda e: e["kind"] == "login", 2)
        assert refused["reason"] == "access.login_failed"
        assert refused["detail"]["tls"] is None
        assert login["reason"] is None and login["detail"]["tls"].startswith("TLSv1")
