"""The two-devices story with a real Dovecot as the mailbox server.

mailwarden (proxy mode) delivers by LMTP; device A (127.0.0.5) fetches and deletes one message by
POP3, device B (127.0.0.6) fetches and deletes the other by IMAP; Dovecot's own log (mail_log plus
the mail_opened event exporter of docs/dovecot.md) is parsed by ingest/dovecot.py into events in
mailwarden's store, and the events prove who fetched and who deleted which message, when and over
which protocol - joined to mailwarden's delivery by the Message-ID and Dovecot's LMTP session.
"""

from __future__ import annotations

import imaplib
import json
import socket
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest

from mailwarden.ingest import parse_lines
from tests.support.dovecot import Dovecot, running_dovecot
from tests.support.mailwarden import Mailwarden, running
from tests.support.pop3 import Device, message, send, wait_events

pytestmark = pytest.mark.integration


class Imap(imaplib.IMAP4):
    """An IMAP client from a chosen loopback address (a second device)."""

    def __init__(self, port: int, source: str) -> None:
        self.source = source
        super().__init__("127.0.0.1", port, timeout=30)

    def _create_socket(self, timeout: float | None) -> socket.socket:
        return socket.create_connection((self.host, self.port), timeout, source_address=(self.source, 0))


@pytest.fixture
def stack(store_url: str, tmp_path: Path) -> Iterator[tuple[Mailwarden, Dovecot]]:
    """Our gateway delivering to a private Dovecot by LMTP, on each store."""
    with running_dovecot({"bob@example.test": "secret"}, keep_log_in=tmp_path) as dovecot:
        overrides = {"delivery": {"mode": "lmtp", "downstream": dovecot.lmtp_address}, "store": {"url": store_url}}
        with running(tmp_path / "mx", overrides) as mw:
            yield mw, dovecot


def ingest_dovecot_log(mw: Mailwarden, dovecot: Dovecot) -> None:
    """What `mailwarden ingest` does with Dovecot's log, done here with the parser itself."""
    zone = datetime.now().astimezone().tzinfo  # Dovecot writes local time
    assert zone is not None
    events = parse_lines(dovecot.log_lines(), fmt="dovecot", node="dovecot", zone=zone)
    with mw.store() as store:
        store.append_many(events)
        store.flush()


def one(events: list[dict[str, Any]], **wanted: Any) -> dict[str, Any]:
    found = [e for e in events if all(e.get(k) == v or e["detail"].get(k) == v for k, v in wanted.items())]
    assert len(found) == 1, (wanted, found)
    return found[0]


def test_pop3_device_deletes_one_imap_device_the_other_and_dovecots_log_proves_both(
    stack: tuple[Mailwarden, Dovecot],
) -> None:
    mw, dovecot = stack
    ref_a = send(mw.smtp_port, "bob@example.test", message(51))
    ref_b = send(mw.smtp_port, "bob@example.test", message(52))
    # No pause: Dovecot stamps whole seconds, so the accesses may share the second of our delivery;
    # the trace must still place them after it.
    device_a = Device(dovecot.pop3_port, source="127.0.0.5")
    device_a.user("bob@example.test")
    device_a.pass_("secret")
    assert device_a.stat()[0] == 2
    _, lines, _ = device_a.retr(1)
    assert b"Message-ID: <m51@sender.test>" in lines
    device_a.dele(1)
    device_a.quit()

    device_b = Imap(dovecot.imap_port, "127.0.0.6")
    device_b.login("bob@example.test", "secret")
    device_b.select("INBOX")
    _, found = device_b.uid("SEARCH", "ALL")
    (uid,) = found[0].split()  # only m52 is left: A deleted m51
    _, fetched = device_b.uid("FETCH", uid, "(BODY[])")
    assert b"Message-ID: <m52@sender.test>" in fetched[0][1]
    device_b.uid("STORE", uid, "+FLAGS", "(\\Deleted)")
    device_b.expunge()
    device_b.logout()

    dovecot.wait_for_log("expunge: box=INBOX", count=2)
    dovecot.wait_for_log("Disconnected: Logged out in=")
    ingest_dovecot_log(mw, dovecot)
    events = mw.events()
    ours = [e for e in events if e["source"] == "gateway"]
    theirs = [e for e in events if e["source"] == "dovecot"]

    for ref, msgid, device, protocol in (
        (ref_a, "<m51@sender.test>", "127.0.0.5", "pop3"),
        (ref_b, "<m52@sender.test>", "127.0.0.6", "imap"),
    ):
        delivery = one(ours, kind="deliver", ref=ref)
        assert delivery["message_id"] == msgid
        lmtp_session = delivery["detail"]["downstream_reply"].split()[3]  # "250 2.0.0 <bob@...> SESSION Saved"
        saved = one(theirs, kind="deliver", message_id=msgid)
        assert saved["session"] == lmtp_session  # Dovecot's side of the same delivery
        retrieved = one(theirs, kind="retrieve", message_id=msgid)
        deleted = one(theirs, kind="delete", message_id=msgid)
        for access in (retrieved, deleted):
            assert access["client_ip"] == device
            assert access["recipient"] == "bob@example.test"
            assert access["detail"]["protocol"] == protocol
        assert deleted["reason"] == "access.deleted"
        # Dovecot's log has whole seconds; the retrieval has the exporter's microseconds
        assert delivery["ts"][:19] <= retrieved["ts"][:19] <= deleted["ts"][:19]
        assert retrieved["ts"] > delivery["ts"]
    for ref, msgid, device, protocol in (
        (ref_a, "<m51@sender.test>", "127.0.0.5", "pop3"),
        (ref_b, "<m52@sender.test>", "127.0.0.6", "imap"),
    ):  # the trace tells the story: delivered by us, then fetched and deleted by that device
        (trace,) = json.loads(mw.cli("trace", "--message-id", msgid, "--format", "json").stdout)
        assert trace["ref"] == ref  # Dovecot's delivery and accesses belong to our message, not one of their own
        kinds = [(e["source"], e["kind"]) for e in trace["events"]]
        assert kinds.index(("gateway", "deliver")) < kinds.index(("dovecot", "retrieve"))
        assert kinds.index(("dovecot", "retrieve")) < kinds.index(("dovecot", "delete"))
        (recipient,) = trace["recipients"]
        assert recipient["status"] == "deleted"
        assert [(a["kind"], a["client_ip"], a["protocol"]) for a in recipient["accesses"]] == [
            ("retrieve", device, protocol),
            ("delete", device, protocol),
        ]
    logins = [e for e in theirs if e["kind"] == "login"]
    assert {(e["client_ip"], e["detail"]["protocol"]) for e in logins} == {("127.0.0.5", "pop3"), ("127.0.0.6", "imap")}


def test_lmtp_replies_recorded_by_the_gateway_name_dovecots_session_for_each_transaction(
    stack: tuple[Mailwarden, Dovecot],
) -> None:
    mw, dovecot = stack
    refs = [send(mw.smtp_port, "bob@example.test", message(n)) for n in (61, 62)]
    deliveries = wait_events(mw.events, lambda e: e["kind"] == "deliver" and e["ref"] in refs, 2)
    sessions = [e["detail"]["downstream_reply"].split()[3] for e in deliveries]
    assert len(set(sessions)) == 2  # one LMTP connection per transaction: the session id alone identifies it
    for session, n in zip(sessions, (61, 62), strict=True):
        dovecot.wait_for_log(f"<{session}>: Info: msgid=<m{n}@sender.test>: saved mail to INBOX")
