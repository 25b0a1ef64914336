"""`mailwarden web`: the tracking center alone, without the gateway, on the store the gateway wrote.

A support desk may run the web pages on another host or after the gateway's hours: the gateway
refuses a mail and stops; `mailwarden web` then serves that refusal on /why/REF and the message
page, listens on nothing else, and ends cleanly on SIGTERM.
"""

from __future__ import annotations

import signal
import socket
import subprocess
import time
from pathlib import Path

import httpx
import pytest

from tests.support.mailwarden import PYTHON, Mailwarden
from tests.support.net import free_port
from tests.support.web import PASSWORD, Mail, login_form_post

pytestmark = pytest.mark.integration


def _listening(port: int) -> bool:
    with socket.socket() as probe:
        return probe.connect_ex(("127.0.0.1", port)) == 0


def test_mailwarden_web_alone_serves_the_gateways_refusals_and_stops_on_sigterm(tmp_path: Path) -> None:
    port = free_port()
    gateway = Mailwarden(tmp_path, {"mail": {"domains": ["example.test"]}, "web": {"listen": f"127.0.0.1:{port}"}})
    gateway.start()
    try:
        with Mail(gateway) as mail:
            ref = mail.refused_rcpt("alice@sender.test", "nobody@example.test")
    finally:
        gateway.stop()
    gateway.cli("accounts", "add", "support", "--role", "support", "--password-stdin", input=PASSWORD + "\n")
    log = tmp_path / "web.log"
    with log.open("w") as output:
        web = subprocess.Popen(
            [PYTHON, "-m", "mailwarden", "-c", str(gateway.config), "web"], stdout=output, stderr=subprocess.STDOUT
        )
    try:
        deadline = time.monotonic() + 60
        while f"mailwarden web ready: http://127.0.0.1:{port}" not in log.read_text():
            assert web.poll() is None and time.monotonic() < deadline, log.read_text()
            time.sleep(0.1)
        assert not _listening(gateway.smtp_port)  # the gateway's port stays closed: only the web runs
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=30) as client:
            why = client.get(f"/why/{ref}")
            assert why.status_code == 200 and "550 5.1.1" in why.text
            assert login_form_post(client, "support", PASSWORD).status_code == 303
            page = client.get(f"/message/{ref}")
            assert page.status_code == 200 and "nobody@example.test" in page.text
    finally:
        web.send_signal(signal.SIGTERM)
        code = web.wait(timeout=30)
    assert code == 0, log.read_text()
    assert "Traceback" not in log.read_text()
