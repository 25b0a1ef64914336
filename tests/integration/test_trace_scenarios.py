"""Issue 7 scenarios end to end: mail played through a real `mailwarden serve`, then traced and
explained with the real command line, asserting status, reason, who must act and key facts.
"""

from __future__ import annotations

import json
import smtplib
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest

from mailwarden.events import Event, now_us
from tests.support.mailwarden import Mailwarden, running
from tests.support.stores import BACKENDS, own_store_url

pytestmark = pytest.mark.integration

MESSAGE = b"From: Alice <alice@sender.test>\r\nSubject: offer\r\nMessage-ID: <%s@sender.test>\r\n\r\nHello.\r\n"


@pytest.fixture(scope="module", params=BACKENDS)
def mw(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Mailwarden]:
    """One gateway for the module's scenarios, once on each store."""
    overrides = {
        "smtp": {"max_recipients": 2, "max_message_size": 4096},
        "mail": {"domains": ["example.test", "example.org"]},
        "store": {"url": own_store_url(request.param, lambda: request.getfixturevalue("postgres"))},
    }
    with running(
        tmp_path_factory.mktemp("trace") / "mw", overrides, users=("bob@example.test", "carol@example.org")
    ) as instance:
        yield instance


def trace_json(mw: Mailwarden, *args: str) -> list[dict[str, Any]]:
    result = mw.cli("trace", "--format", "json", *args, check=False)
    assert result.returncode in (0, 1), result.stderr
    found: list[dict[str, Any]] = json.loads(result.stdout)
    return found


def explain_json(mw: Mailwarden, trace_id: str, *args: str) -> dict[str, Any]:
    found: dict[str, Any] = json.loads(mw.cli("explain", trace_id, "--format", "json", *args).stdout)
    return found


def send(
    mw: Mailwarden, sender: str, recipients: list[str], tag: str, body: bytes | None = None
) -> dict[str, tuple[int, bytes]]:
    """One transaction; returns the RCPT replies. DATA is sent when a recipient was accepted."""
    replies = {}
    with smtplib.SMTP("127.0.0.1", mw.smtp_port, timeout=60) as client:
        client.ehlo("mail.sender.test")
        client.mail(sender)
        for recipient in recipients:
            replies[recipient] = client.rcpt(recipient)
        if any(code == 250 for code, _ in replies.values()):
            replies["DATA"] = client.data(body if body is not None else MESSAGE % tag.encode())
    return replies


def test_delivered_mail_is_traced_by_recipient_and_time(mw: Mailwarden) -> None:
    send(mw, "alice@sender.test", ["bob@example.test"], "delivered")
    (message,) = trace_json(mw, "--to", "bob@example.test", "--since", "10m", "--message-id", "<delivered@sender.test>")
    (recipient,) = message["recipients"]
    assert (recipient["status"], recipient["reason"], recipient["smtp_code"]) == ("delivered", "delivered", 250)
    assert message["sender"] == "alice@sender.test" and message["client_ip"] == "127.0.0.1"
    assert recipient["folder"] == "INBOX"
    verdict = explain_json(mw, message["id"])
    assert (verdict["status"], verdict["responsibility"]) == ("delivered", "none")
    assert verdict["ref"] == message["ref"] and verdict["evidence"]


def test_unknown_recipient_with_a_typo_is_refused_and_the_report_says_did_you_mean(mw: Mailwarden) -> None:
    replies = send(mw, "alice@sender.test", ["bbo@example.test"], "typo")
    code, text = replies["bbo@example.test"]
    assert code == 550
    ref = text.decode().rsplit("ref=", 1)[1].split()[0]
    verdict = explain_json(mw, ref, "--lang", "de")
    assert (verdict["status"], verdict["reason"], verdict["responsibility"]) == (
        "rejected",
        "rcpt.unknown_user",
        "sender",
    )
    assert any("Meinten Sie bob@example.test?" in note for note in verdict["notes"])
    assert verdict["lang"] == "de" and "550 5.1.1" in verdict["summary"]


def test_relay_attempt_is_explained_as_relaying_denied(mw: Mailwarden) -> None:
    send(mw, "spammer@sender.test", ["victim@elsewhere.test"], "relay")
    (message,) = trace_json(mw, "--to", "victim@elsewhere.test")
    verdict = explain_json(mw, message["id"])
    assert (verdict["status"], verdict["reason"], verdict["responsibility"]) == (
        "rejected",
        "rcpt.relay_denied",
        "sender",
    )
    assert "elsewhere.test is not a domain we serve" in verdict["summary"]


def test_too_big_message_is_refused_after_data_with_the_sizes(mw: Mailwarden) -> None:
    body = MESSAGE % b"big" + b"x" * 8000 + b"\r\n"
    replies = send(mw, "alice@sender.test", ["carol@example.org"], "big", body)
    assert replies["DATA"][0] == 552
    (message,) = trace_json(mw, "--to", "carol@example.org", "--reason", "msg.too_big")
    verdict = explain_json(mw, message["id"])
    assert (verdict["status"], verdict["reason"], verdict["responsibility"]) == ("rejected", "msg.too_big", "sender")
    assert "4096" in verdict["summary"]


def test_temporary_refusal_never_retried_is_the_senders_to_resolve(mw: Mailwarden) -> None:
    replies = send(mw, "alice@sender.test", ["bob@example.test", "carol@example.org", "bob+x@example.test"], "split")
    assert replies["bob+x@example.test"][0] == 452  # more than max_recipients: 452 4.5.3, try again
    (message,) = trace_json(mw, "--to", "bob+x@example.test", "--status", "tempfailed")
    (deferred,) = [r for r in message["recipients"] if r["address"] == "bob+x@example.test"]
    assert (deferred["reason"], deferred["later_attempts"]) == ("rcpt.too_many", [])
    from mailwarden.trace.report import build

    with mw.store() as store:
        later = build(store, message["id"], recipient="bob+x@example.test", now=now_us() + 2 * 3600 * 1_000_000)
    assert (later.diagnosis.status, later.diagnosis.responsibility) == ("tempfailed", "sender")
    assert any("did not try again" in note for note in later.diagnosis.notes)
    others = {r["address"]: r["status"] for r in message["recipients"]}
    assert others == {
        "bob@example.test": "delivered",
        "carol@example.org": "delivered",
        "bob+x@example.test": "tempfailed",
    }


def test_nothing_found_explains_what_was_searched_and_the_near_miss(mw: Mailwarden) -> None:
    send(mw, "alice@sender.test", ["bob@example.test"], "nearmiss")
    result = mw.cli("trace", "--to", "bob@exmaple.test", "--since", "1h", check=False)
    assert result.returncode == 1
    assert "No such message reached us" in result.stdout
    assert "bob@exmaple.test" in result.stdout and "outgoing queue" in result.stdout
    assert "Similar address bob@example.test" in result.stdout
    unknown = mw.cli("explain", "0000000000ZZ", "--format", "json", check=False)
    assert unknown.returncode == 1 and json.loads(unknown.stdout)["status"] == "not_found"


def test_every_report_format_verifies_and_a_tampered_one_does_not(mw: Mailwarden, tmp_path: Path) -> None:
    send(mw, "alice@sender.test", ["bob@example.test", "nobody@example.test"], "report")
    (message,) = trace_json(mw, "--message-id", "<report@sender.test>")
    for fmt in ("text", "html", "json", "pdf"):
        path = tmp_path / f"report.{fmt}"
        mw.cli("explain", message["id"], "--recipient", "nobody@example.test", "--format", fmt, "-o", str(path))
        content = path.read_bytes()
        assert b"bob@example.test" not in content, f"{fmt}: another recipient of the mail must be masked"
        checked = mw.cli("verify-report", str(path), check=False)
        assert checked.returncode == 0, checked.stdout + checked.stderr
        assert "OK" in checked.stdout
    text = (tmp_path / "report.text").read_text()
    (tmp_path / "forged.text").write_text(text.replace("rcpt.unknown_user stage=rcpt", "delivered stage=rcpt"))
    forged = mw.cli("verify-report", str(tmp_path / "forged.text"), check=False)
    assert forged.returncode == 1 and "differs from the store" in forged.stdout
    (tmp_path / "junk.txt").write_text("not a report\x00\x1b[2J")
    junk = mw.cli("verify-report", str(tmp_path / "junk.txt"), check=False)
    assert junk.returncode == 2 and "no mailwarden manifest" in junk.stderr and "Traceback" not in junk.stderr


def test_csv_and_table_list_one_row_per_recipient(mw: Mailwarden) -> None:
    send(mw, "alice@sender.test", ["bob@example.test", "ghost@example.test"], "rows")
    table = mw.cli("trace", "--message-id", "<rows@sender.test>").stdout
    assert "bob@example.test" in table and "ghost@example.test" in table and "rejected" in table
    csv_out = mw.cli("trace", "--message-id", "<rows@sender.test>", "--format", "csv").stdout.splitlines()
    assert csv_out[0].startswith("id,ref,first_seen") and len(csv_out) == 3


def test_serve_purges_events_older_than_the_retention(store_url: str, tmp_path: Path) -> None:
    instance = Mailwarden(tmp_path / "mw", {"store": {"retention_days": 7, "url": store_url}})
    old = now_us() - 30 * 86400 * 1_000_000
    with instance.store() as store:
        store.append(
            Event(kind="connect", source="gateway", node="test-mx", ts=old, ref="1AAAAAAAAAA0", session="1AAAAAAAAAA0")
        )
    instance.start()
    try:
        send(instance, "alice@sender.test", ["nobody@example.test"], "fresh")
    finally:
        instance.stop()
    with instance.store() as store:
        oldest = store.oldest_event_us()
    assert oldest is not None and oldest > old, "the 30-day-old event should have been purged at start"
    note = instance.cli("trace", "--since", "30d", check=False)
    assert "kept for 7 days only" in note.stderr


def test_delivered_then_expunged_by_a_pop3_client_seen_in_ingested_dovecot_logs(mw: Mailwarden) -> None:
    """Our delivery joined with Dovecot's own log lines (parsed by the real ingest parser) by Message-ID."""
    from datetime import UTC, datetime

    from mailwarden.ingest.pipeline import parse_lines

    send(mw, "alice@sender.test", ["bob@example.test"], "dovecot")
    stamp = datetime.now(UTC).strftime("%Y-%m-%d %H:%M:%S")
    lines = [
        f"{stamp} pop3-login: Info: Login: user=<bob@example.test>, method=PLAIN, rip=127.0.0.7, lip=127.0.0.1, mpid=7463, secured, session=<I3wyyE5hXpx/AAAB>",
        f"{stamp} pop3(bob@example.test)<7463><I3wyyE5hXpx/AAAB>: Info: expunge: box=INBOX, uid=1, msgid=<dovecot@sender.test>, size=451, from=Alice <alice@sender.test>, subject=offer",
        f"{stamp} pop3(bob@example.test)<7463><I3wyyE5hXpx/AAAB>: Info: Disconnected: Logged out top=0/0, retr=1/483, del=1/1, size=451",
    ]
    with mw.store() as store:
        store.append_many(parse_lines(lines, node="imap1", origin="/var/log/dovecot.log"))
        store.flush()
    (message,) = trace_json(mw, "--to", "bob@example.test", "--message-id", "<dovecot@sender.test>")
    (recipient,) = message["recipients"]
    assert (recipient["status"], recipient["reason"]) == ("deleted", "access.deleted")
    (access,) = recipient["accesses"]
    assert (access["kind"], access["client_ip"], access["protocol"]) == ("delete", "127.0.0.7", "pop3")
    assert access["at"].startswith(stamp.replace(" ", "T"))
    verdict = explain_json(mw, message["id"])
    assert (verdict["status"], verdict["responsibility"]) == ("deleted", "recipient")
    assert "127.0.0.7" in verdict["summary"]
    assert any("/var/log/dovecot.log" in line and "expunge" in line for line in verdict["evidence"])


def test_deleted_by_a_device_that_is_not_one_of_the_mailboxs_usual_clients(store_url: str, tmp_path: Path) -> None:
    """Real POP3: the office PC (127.0.0.5) fetches daily; a phone at 127.0.0.7 deletes the new mail."""
    from tests.support.net import free_port
    from tests.support.pop3 import Device, message, wait_events
    from tests.support.pop3 import send as deliver

    port = free_port()
    overrides = {"pop3": {"listen": [f"127.0.0.1:{port}"], "allow_plaintext_auth": True}, "store": {"url": store_url}}
    with running(tmp_path / "mw", overrides) as instance:
        for _ in range(2):
            office = Device(port, source="127.0.0.5")
            office.user("bob@example.test")
            office.pass_("secret")
            office.quit()
        ref = deliver(instance.smtp_port, "bob@example.test", message(77))
        phone = Device(port, source="127.0.0.7")
        phone.user("bob@example.test")
        phone.pass_("secret")
        phone.retr(1)
        phone.dele(1)
        before_quit = now_us()
        phone.quit()
        wait_events(instance.events, lambda e: e["source"] == "pop3" and e["kind"] == "delete")
        (message_json,) = trace_json(instance, "--ref", ref)
        (recipient,) = message_json["recipients"]
        assert (recipient["status"], recipient["reason"]) == ("deleted", "access.deleted")
        deleted = [a for a in recipient["accesses"] if a["kind"] == "delete"]
        assert [(a["client_ip"], a["protocol"]) for a in deleted] == [("127.0.0.7", "pop3")]
        verdict = explain_json(instance, ref)
    assert (verdict["status"], verdict["responsibility"]) == ("deleted", "recipient")
    assert "127.0.0.7" in verdict["summary"]
    assert any("another device in your network" in n and "127.0.0.5" in n for n in verdict["notes"])
    deleted_at = datetime.fromisoformat(deleted[0]["at"])
    assert abs(deleted_at.timestamp() * 1_000_000 - before_quit) < 60_000_000


def test_the_real_bounce_a_postfix_sender_gets_is_linked_back_to_our_trace(mw: Mailwarden, tmp_path: Path) -> None:
    """The sender's own Postfix relays to us, gets our 550 with ref, writes a DSN; explain-bounce answers it."""
    from email.message import EmailMessage

    from tests.support.postfix import running_postfix

    with running_postfix(relayhost=f"127.0.0.1:{mw.smtp_port}", local_domains=["sender.test"]) as postfix:
        mail = EmailMessage()
        mail["From"], mail["To"], mail["Subject"] = "alice@sender.test", "bbo@example.test", "invoice"
        mail["Message-ID"] = "<dsn-1@sender.test>"
        mail.set_content("Hello Bob\n")
        postfix.submit("alice@sender.test", ["bbo@example.test"], mail)
        postfix.wait_delivered(1)
        (raw,) = postfix.delivered()
        maillog = postfix.log_text().splitlines()
    path = tmp_path / "bounce.eml"
    path.write_bytes(raw)
    answer = json.loads(mw.cli("explain-bounce", str(path), "--format", "json").stdout)
    assert answer["bounce"]["enhanced_code"] == "5.1.1" and answer["bounce"]["reporting_mta"] == "mta.example.test"
    (linked,) = answer["traces"]
    assert (linked["status"], linked["reason"], linked["recipient"]) == (
        "rejected",
        "rcpt.unknown_user",
        "bbo@example.test",
    )
    assert any("bob@example.test" in note for note in linked["notes"])
    text = mw.cli("explain-bounce", "-", "--lang", "de", input=raw.decode("utf-8", "replace")).stdout
    assert "bezieht sich auf unsere Nachricht" in text

    # The sender's side, from its real Postfix log through the ingest parser: the same refusal, bounced.
    from mailwarden.ingest.pipeline import parse_lines

    with mw.store() as store:
        store.append_many(parse_lines(maillog, node="mta", origin="maillog"))
        store.flush()
    (ours,) = trace_json(mw, "--ref", linked["ref"])[0]["recipients"]
    (queued,) = trace_json(mw, "--message-id", "<dsn-1@sender.test>", "--from", "alice@sender.test")
    (theirs,) = queued["recipients"]
    assert (ours["status"], theirs["status"], theirs["address"]) == ("rejected", "bounced", "bbo@example.test")
    assert queued["queue_id"] and queued["events"][0]["source"] == "postfix"
    assert f"ref={linked['ref']}" in " ".join(e["reply"] or "" for e in queued["events"])
