"""mailwarden as a milter of a real Postfix: our decisions, replies and evidence inside someone else's MX (issue 15).

A private Postfix (tests/support/postfix.py) receives mail for example.test and delivers it into
its own Maildir; it asks `mailwarden serve` at every stage over a unix socket, as
docs/postfix.md configures it (`milter_default_action = tempfail`, `milter_protocol = 6`, our
ref logged through `milter_header_checks`). mailwarden runs the DNSBL, recipient, size and
content checks with real clamd, rspamd and DNS servers. The sending client talks to Postfix
only, from a chosen 127.0.0.x address (a DNSBL-listed one is just another source address), and
must get our code, enhanced code, sentence and ref from Postfix; our events carry Postfix's
queue id.
"""

from __future__ import annotations

import json
import re
import shutil
import tempfile
import time
from collections.abc import Iterator
from email.message import EmailMessage
from pathlib import Path
from typing import Any

import pytest

from tests.support.dns import CLIENTS, DOMAINS, DnsServers, gateway_config, running_dns
from tests.support.mailwarden import Mailwarden, running
from tests.support.postfix import Postfix, running_postfix
from tests.support.scanners import EICAR, GTUBE, Clamd, Rspamd
from tests.support.smtp import MESSAGE, Attempt, events_of, send

pytestmark = pytest.mark.integration

CLEAN = CLIENTS["clean"]
SENDER = f"alice@{DOMAINS['good']}"
REF_HEADER_CHECK = "/^X-Mailwarden-Ref:/ INFO\n"


def postfix_settings(milter: str, shared: Path) -> dict[str, str]:
    """The main.cf lines of docs/postfix.md for a milter at `milter` ("unix:/path" or "inet:host:port")."""
    checks = shared / "mailwarden_header_checks"
    checks.write_text(REF_HEADER_CHECK)
    checks.chmod(0o644)
    return {
        "smtpd_milters": milter,
        "milter_default_action": "tempfail",
        "milter_protocol": "6",
        "milter_header_checks": f"regexp:{checks}",
    }


@pytest.fixture(scope="module")
def shared_dir() -> Iterator[Path]:
    """A directory Postfix's own user can reach (pytest's are private to root): the milter socket lives here."""
    path = Path(tempfile.mkdtemp(prefix="mw-milter-"))
    path.chmod(0o755)
    yield path
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture(scope="module")
def dns(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DnsServers]:
    with running_dns(tmp_path_factory.mktemp("dns")) as servers:
        yield servers


@pytest.fixture(scope="module")
def scanners(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Clamd, Rspamd]]:
    clamd = Clamd(tmp_path_factory.mktemp("clamd")).start()
    rspamd = Rspamd(tmp_path_factory.mktemp("rspamd")).start()
    try:
        yield clamd, rspamd
    finally:
        clamd.stop()
        rspamd.stop()


@pytest.fixture(scope="module")
def milter(
    tmp_path_factory: pytest.TempPathFactory, dns: DnsServers, scanners: tuple[Clamd, Rspamd], shared_dir: Path
) -> Iterator[Mailwarden]:
    clamd, rspamd = scanners
    overrides = gateway_config(
        dns,
        ["dnsbl", "sender_domain", "recipients", "size", "content"],
        milter={"listen": [f"unix:{shared_dir / 'milter.sock'}"], "socket_mode": "0666"},
        **{
            "scan.clamd": {"address": str(clamd.socket)},
            "scan.spam": {"engine": "rspamd", "address": rspamd.address, "tag_score": 4.0, "reject_score": 15.0},
        },
    )
    with running(tmp_path_factory.mktemp("mw"), overrides) as instance:
        yield instance


@pytest.fixture(scope="module")
def postfix(milter: Mailwarden, shared_dir: Path) -> Iterator[Postfix]:
    with running_postfix(
        local_domains=["example.test"], settings=postfix_settings(f"unix:{shared_dir / 'milter.sock'}", shared_dir)
    ) as instance:
        yield instance


def through_postfix(
    milter: Mailwarden,
    postfix: Postfix,
    message: bytes = MESSAGE,
    *,
    client: str = CLEAN,
    sender: str = SENDER,
    rcpt: str = "bob@example.test",
) -> Attempt:
    return send(milter, client, "mail.good.test", sender, rcpt, message, port=postfix.smtp_port)


def mail(subject: str, body: str = "Hello Bob,\nsee the attachment.\n", **files: bytes) -> bytes:
    message = EmailMessage()
    message["From"] = f"Alice <{SENDER}>"
    message["To"] = "bob@example.test"
    message["Subject"] = subject
    message["Message-ID"] = f"<{abs(hash(subject))}@good.test>"
    message.set_content(body)
    for name, data in files.items():
        message.add_attachment(data, maintype="application", subtype="octet-stream", filename=name.replace("_", "."))
    return message.as_bytes()


def refusal(milter: Mailwarden, ref: str) -> dict[str, Any]:
    (event,) = [e for e in events_of(milter, ref, "reject") if e["kind"] == "reject"]
    return event


def queue_id_logged(postfix: Postfix, ref: str) -> str:
    """The queue id of Postfix's log line that carries our ref."""
    found = postfix.wait_log(rf"postfix/cleanup\[\d+\]: ([0-9A-F]+): milter-\S+: .*\b{ref}\b")
    return found.group(1)


def delivered_with_subject(postfix: Postfix, subject: str) -> EmailMessage:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        found = [m for m in postfix.wait_delivered(1) if m["Subject"] == subject]
        if found:
            return found[0]
        time.sleep(0.2)
    raise AssertionError(f"Postfix delivered no message {subject!r}:\n{postfix.log_text()[-3000:]}")


def test_eicar_through_postfix_gets_554_with_our_sentence_and_ref(milter: Mailwarden, postfix: Postfix) -> None:
    attempt = through_postfix(milter, postfix, mail("invoice", invoice_com=EICAR))
    reply = attempt.last
    assert (reply.stage, reply.code) == ("data", 554), attempt.replies
    assert reply.sentence.startswith("Virus Eicar-Test-Signature"), reply.text
    assert "in the attachment invoice.com" in reply.sentence
    assert reply.enhanced == "5.7.1" and reply.ref is not None
    assert reply.text.endswith(f"ref={reply.ref}")
    event = refusal(milter, reply.ref)
    assert (event["source"], event["reason"], event["smtp_code"]) == ("milter", "msg.virus", 554)
    assert event["queue_id"] == queue_id_logged(postfix, reply.ref)  # the same message in Postfix's log
    assert not any(b"EICAR" in m for m in postfix.delivered())


def test_gtube_through_postfix_gets_550_from_rspamd_with_ref(milter: Mailwarden, postfix: Postfix) -> None:
    attempt = through_postfix(milter, postfix, mail("offer", body=f"Buy now\n{GTUBE}\n"))
    reply = attempt.last
    assert (reply.stage, reply.code, reply.enhanced) == ("data", 550, "5.7.1"), attempt.replies
    assert reply.ref is not None and reply.text.endswith(f"ref={reply.ref}")
    event = refusal(milter, reply.ref)
    assert (event["source"], event["reason"]) == ("milter", "msg.spam")
    assert event["queue_id"] == queue_id_logged(postfix, reply.ref)


def test_dnsbl_listed_client_is_refused_by_postfix_with_our_text(milter: Mailwarden, postfix: Postfix) -> None:
    attempt = through_postfix(milter, postfix, client=CLIENTS["pbl"])
    reply = attempt.last
    assert (reply.stage, reply.code, reply.enhanced) == ("rcpt", 554, "5.7.1"), attempt.replies
    for words in ("127.0.0.11", "zen.dnsbl.test", "dynamic or end-user address range", "provider's mail server"):
        assert words in reply.sentence
    assert reply.ref is not None and reply.text.endswith(f"ref={reply.ref}")
    event = refusal(milter, reply.ref)
    assert (event["source"], event["reason"], event["client_ip"]) == ("milter", "client.dnsbl", CLIENTS["pbl"])
    # Refused before Postfix opened a queue file: its log says NOQUEUE, with our reply.
    postfix.wait_log(rf"NOQUEUE: milter-reject: RCPT from \S+\[127\.0\.0\.11\]: 554 5\.7\.1 .*ref={reply.ref};")
    assert event["queue_id"] is None


def test_a_sender_refusal_is_given_at_rcpt_as_postfix_delays_its_own(milter: Mailwarden, postfix: Postfix) -> None:
    """MAIL needs no answer from us (one round trip less): its refusal comes with the first RCPT, like smtpd_delay_reject."""
    attempt = through_postfix(milter, postfix, sender=f"alice@{DOMAINS['null_mx']}")
    assert [(r.stage, r.code) for r in attempt.replies[2:]] == [("mail", 250), ("rcpt", 550)], attempt.replies
    reply = attempt.last
    assert reply.enhanced == "5.7.27" and "null MX" in reply.sentence and reply.ref is not None
    event = refusal(milter, reply.ref)
    assert (event["source"], event["reason"], event["detail"]["stage"]) == ("milter", "sender.null_mx", "mail")


def test_unknown_recipient_gets_550_5_1_1_with_ref_and_the_others_are_taken(
    milter: Mailwarden, postfix: Postfix
) -> None:
    attempt = through_postfix(milter, postfix, rcpt="nobody@example.test")
    reply = attempt.last
    assert (reply.stage, reply.code, reply.enhanced) == ("rcpt", 550, "5.1.1"), attempt.replies
    assert "nobody@example.test" in reply.sentence and reply.text.endswith(f"ref={reply.ref}")
    assert reply.ref is not None
    event = refusal(milter, reply.ref)
    assert (event["source"], event["reason"], event["recipient"]) == (
        "milter",
        "rcpt.unknown_user",
        "nobody@example.test",
    )


def test_clean_mail_is_delivered_by_postfix_with_our_fields_and_an_accept_event_keyed_by_its_queue_id(
    milter: Mailwarden, postfix: Postfix
) -> None:
    before = len(postfix.delivered())
    attempt = through_postfix(milter, postfix, mail("hello"))
    assert attempt.accepted, attempt.replies
    queue_id = re.search(r"queued as ([0-9A-F]+)", attempt.last.text)
    assert queue_id is not None, attempt.last.text
    (delivered,) = postfix.wait_delivered(before + 1)[before:]
    ref = delivered["X-Mailwarden-Ref"]
    assert ref and delivered["Authentication-Results"].startswith("mx.example.test;")
    events = events_of(milter, ref, "accept")
    kinds = [e["kind"] for e in events if e["kind"] != "connect"]
    assert kinds[:4] == ["helo", "mail", "rcpt", "data"] and "accept" in kinds, kinds
    assert {e["source"] for e in events} == {"milter"}
    # Every event of the transaction carries Postfix's queue id, also those before it existed (MAIL, RCPT).
    assert {e["queue_id"] for e in events if e["kind"] in ("mail", "rcpt", "data", "accept")} == {queue_id.group(1)}
    postfix.wait_log(rf"{queue_id.group(1)}: milter-header-info: header X-Mailwarden-Ref: {ref} ")


def test_forged_authentication_results_with_our_name_are_removed_by_postfix(
    milter: Mailwarden, postfix: Postfix
) -> None:
    forged = b"Authentication-Results: mx.example.test; dkim=pass header.d=bank.test\r\n" + mail("forged")
    before = len(postfix.delivered())
    attempt = through_postfix(milter, postfix, forged)
    assert attempt.accepted, attempt.replies
    (delivered,) = postfix.wait_delivered(before + 1)[before:]
    fields = delivered.get_all("Authentication-Results") or []
    assert len(fields) == 1 and "bank.test" not in str(fields[0])
    accept = [e for e in events_of(milter, delivered["X-Mailwarden-Ref"], "accept") if e["kind"] == "accept"]
    assert accept[0]["detail"]["forged_fields_removed"] == 1


def test_message_over_the_size_limit_gets_552_with_ref_through_postfix(tmp_path: Path, shared_dir: Path) -> None:
    socket_dir = Path(tempfile.mkdtemp(prefix="mw-size-", dir=shared_dir))
    socket_dir.chmod(0o755)
    overrides = {
        "smtp": {"max_message_size": 65536},
        "milter": {"listen": [f"unix:{socket_dir / 'milter.sock'}"], "socket_mode": "0666"},
    }
    with (
        running(tmp_path / "mw", overrides) as milter,
        running_postfix(
            local_domains=["example.test"], settings=postfix_settings(f"unix:{socket_dir / 'milter.sock'}", socket_dir)
        ) as postfix,
    ):
        big = MESSAGE + (b"y" * 998 + b"\r\n") * 100
        attempt = send(
            milter, "127.0.0.1", "client.sender.test", "alice@sender.test", message=big, port=postfix.smtp_port
        )
        reply = attempt.last
        assert (reply.stage, reply.code, reply.enhanced) == ("data", 552, "5.3.4"), attempt.replies
        assert reply.ref is not None and reply.text.endswith(f"ref={reply.ref}")
        assert refusal(milter, reply.ref)["reason"] == "msg.too_big"


@pytest.mark.xfail(
    strict=True,
    reason="needs the message index (issue 12): ingest must link Postfix's queue file to our ref "
    "(milter-reject / milter-header-info lines name it) so one trace holds both",
)
def test_trace_shows_our_events_and_postfix_lines_of_each_case_as_one_message(
    milter: Mailwarden, postfix: Postfix
) -> None:
    cases = {
        "clean": through_postfix(milter, postfix, mail("trace clean")),
        "unknown recipient": through_postfix(milter, postfix, rcpt="nobody@example.test"),
        "virus": through_postfix(milter, postfix, mail("trace virus", invoice_com=EICAR)),
        "spam": through_postfix(milter, postfix, mail("trace spam", body=f"{GTUBE}\n")),
        "listed client": through_postfix(milter, postfix, client=CLIENTS["pbl"]),
    }
    refs = {name: attempt.last.ref or "" for name, attempt in cases.items()}
    refs["clean"] = str(delivered_with_subject(postfix, "trace clean")["X-Mailwarden-Ref"])
    milter.cli("ingest", str(postfix.maillog))
    ingested = [e for e in milter.events() if e["source"] == "postfix"]
    for name, ref in refs.items():
        (message,) = json.loads(milter.cli("trace", "--ref", ref, "--format", "json").stdout)
        sources = {e["source"] for e in message["events"]}
        assert sources == {"milter", "postfix"}, (name, sources)
        queue_ids = {e["queue_id"] for e in message["events"] if e["source"] == "milter" and e["queue_id"]}
        ours = [e for e in ingested if e["queue_id"] in queue_ids or ref in (e["reply"] or "")]
        assert {e["id"] for e in ours} <= {e["id"] for e in message["events"]}, name
    listing = json.loads(milter.cli("trace", "--from", SENDER, "--format", "json", "--limit", "100").stdout)
    assert all(m["ref"] for m in listing), "a Postfix queue file listed apart from our transaction"
