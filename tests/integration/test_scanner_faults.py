"""Scanner faults defer the mail (451 4.3.0), lose nothing and leave the gateway serving.

A scanner that dies in the middle of a stream and one that is too slow are
all the same to the sender: a temporary failure with our sentence and ref, then a retry that
succeeds once the scanner is back.
"""

from __future__ import annotations

import random
import smtplib
import socket
import subprocess
import threading
import time
from email.message import EmailMessage
from pathlib import Path

import pytest

from tests.support.mailwarden import Mailwarden, running
from tests.support.net import free_port
from tests.support.scanners import Clamd, Rspamd

pytestmark = pytest.mark.integration


def mail(subject: str, attachment: bytes | None = None) -> bytes:
    message = EmailMessage()
    message["From"] = "alice@sender.test"
    message["To"] = "bob@example.test"
    message["Subject"] = subject
    message["Message-ID"] = f"<{subject.replace(' ', '-')}@sender.test>"
    message.set_content("Hello Bob.\n")
    if attachment is not None:
        message.add_attachment(attachment, maintype="application", subtype="octet-stream", filename="data.bin")
    return message.as_bytes()


def send(gateway: Mailwarden, raw: bytes) -> tuple[int, str]:
    with smtplib.SMTP("127.0.0.1", gateway.smtp_port, timeout=180) as client:
        client.ehlo("client.sender.test")
        client.mail("alice@sender.test")
        assert client.rcpt("bob@example.test")[0] == 250
        code, text = client.data(raw)
    return code, " ".join(text.decode().split())


def assert_deferred_and_nothing_kept(gateway: Mailwarden, code: int, text: str, scanner: str) -> None:
    assert code == 451, text
    assert text.startswith(f"4.3.0 The {scanner} scanner is temporarily unavailable; please try again later. ref=")
    tempfail = [e for e in gateway.events() if e["kind"] == "tempfail"][-1]
    assert tempfail["reason"] == "infra.scanner_unavailable"
    assert scanner in tempfail["detail"]["errors"]
    assert gateway.messages("bob@example.test") == []
    assert gateway.messages("bob@example.test", "Junk") == []
    assert gateway.process is not None and gateway.process.poll() is None


def stream_stuck_in(port: int, timeout: float = 60.0) -> None:
    """Wait until bytes of a stream sit unread in the (stopped) scanner's receive queue."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        out = subprocess.run(
            ["ss", "-tnH", "state", "established", f"( sport = :{port} )"], capture_output=True, text=True
        ).stdout
        if any(line.split()[0].isdigit() and int(line.split()[0]) > 0 for line in out.splitlines() if line.strip()):
            return
        time.sleep(0.1)
    raise TimeoutError("the message never reached the scanner")


def test_clamd_killed_in_the_middle_of_a_stream_defers_and_the_retry_succeeds(tmp_path: Path) -> None:
    clamd = Clamd(tmp_path / "clamd", stream_max="40M").start()
    try:
        overrides = {
            "smtp": {"max_message_size": 41_943_040},
            "scan.clamd": {"address": clamd.address, "max_stream": 41_943_040},
        }
        with running(tmp_path / "mw", overrides) as gateway:
            raw = mail("big", random.Random(1).randbytes(16 * 1024 * 1024))
            clamd.pause()  # it accepts the connection but reads nothing: the stream stalls half-way
            result: list[tuple[int, str]] = []
            sender = threading.Thread(target=lambda: result.append(send(gateway, raw)))
            sender.start()
            stream_stuck_in(clamd.port)
            clamd.kill()
            sender.join(timeout=180)
            (reply,) = result
            assert_deferred_and_nothing_kept(gateway, *reply, scanner="clamd")

            clamd.start()
            code, text = send(gateway, raw)
            assert code == 250, text
            assert len(gateway.messages("bob@example.test")) == 1
    finally:
        clamd.stop()


def test_rspamd_slower_than_the_timeout_defers_and_the_gateway_keeps_serving(tmp_path: Path) -> None:
    rspamd = Rspamd(tmp_path / "rspamd").start()
    try:
        overrides = {"scan.spam": {"engine": "rspamd", "address": rspamd.address, "timeout": 2.0}}
        with running(tmp_path / "mw", overrides) as gateway:
            rspamd.pause()
            code, text = send(gateway, mail("rspamd slow"))
            assert_deferred_and_nothing_kept(gateway, code, text, scanner="rspamd")
            tempfail = [e for e in gateway.events() if e["kind"] == "tempfail"][-1]
            assert "did not answer within 2s" in tempfail["detail"]["errors"]["rspamd"]
            rspamd.resume()
            for _attempt in range(5):  # as a sending server would retry; rspamd may still be busy catching up
                code, text = send(gateway, mail("rspamd back"))
                if code == 250:
                    break
            assert code == 250, text
    finally:
        rspamd.stop()


@pytest.mark.parametrize(("oversize", "code"), [("tempfail", 451), ("accept", 250)])
def test_message_over_clamds_stream_limit_is_handled_as_configured(tmp_path: Path, oversize: str, code: int) -> None:
    clamd = Clamd(tmp_path / "clamd", stream_max="1M").start()
    try:
        overrides = {"scan.clamd": {"address": clamd.address, "max_stream": 1_048_576, "oversize": oversize}}
        with running(tmp_path / "mw", overrides) as gateway:
            reply = send(gateway, mail("too long for clamd", random.Random(3).randbytes(1_500_000)))
            assert reply[0] == code, reply
            data = [e for e in gateway.events() if e["kind"] == "data"][-1]
            (entry,) = [c for c in data["detail"]["checks"] if c["check"] == "content"]
            if oversize == "accept":
                assert "exceed clamd's stream limit" in entry["detail"]["unscanned"]["clamd"]
                assert len(gateway.messages("bob@example.test")) == 1
            else:
                assert "exceed clamd's stream limit" in entry["detail"]["errors"]["clamd"]
    finally:
        clamd.stop()


def test_unreachable_clamd_fails_open_only_when_configured_and_says_so_loudly(tmp_path: Path) -> None:
    overrides = {"scan.clamd": {"address": "127.0.0.1:9", "fail_open": True}}
    with running(tmp_path / "mw", overrides) as gateway:
        code, text = send(gateway, mail("unscanned"))
        assert code == 250, text
        assert "ACCEPTING MAIL UNSCANNED" in gateway.log.read_text()
        data = [e for e in gateway.events() if e["kind"] == "data"][-1]
        (entry,) = [c for c in data["detail"]["checks"] if c["check"] == "content"]
        assert entry["detail"]["unscanned"]["clamd"].startswith("failed open: cannot connect to 127.0.0.1:9")


@pytest.mark.parametrize("where", ["free-port", "missing-socket"])
def test_unreachable_clamd_without_fail_open_defers_with_451_and_delivers_nothing(tmp_path: Path, where: str) -> None:
    address = f"127.0.0.1:{free_port()}" if where == "free-port" else str(tmp_path / "nowhere" / "clamd.ctl")
    with running(tmp_path / "mw", {"scan.clamd": {"address": address, "fail_open": False}}) as gateway:
        code, text = send(gateway, mail("not scanned"))
        assert_deferred_and_nothing_kept(gateway, code, text, scanner="clamd")
        tempfail = [e for e in gateway.events() if e["kind"] == "tempfail"][-1]
        assert text.endswith(f" ref={tempfail['ref']}")
        assert tempfail["detail"]["errors"]["clamd"].startswith(f"cannot connect to {address}")
        assert not [e for e in gateway.events() if e["kind"] in ("accept", "deliver")]
        assert "ACCEPTING MAIL UNSCANNED" not in gateway.log.read_text()


def test_scans_past_the_overall_budget_defer_the_mail(tmp_path: Path) -> None:
    with socket.socket() as silent:  # listens, never reads: a scanner that hangs
        silent.bind(("127.0.0.1", 0))
        silent.listen(16)
        address = f"127.0.0.1:{silent.getsockname()[1]}"
        overrides = {"scan": {"budget": 2.0}, "scan.spam": {"address": address, "timeout": 60.0}}
        with running(tmp_path / "mw", overrides) as gateway:
            code, text = send(gateway, mail("budget"))
            assert code == 451, text
            assert text.startswith("4.3.0 The rspamd scanner is temporarily unavailable")
            tempfail = [e for e in gateway.events() if e["kind"] == "tempfail"][-1]
            assert tempfail["detail"]["errors"] == {"rspamd": "did not finish within the budget of 2s"}
            assert gateway.messages("bob@example.test") == []
