"""`make run` as a newcomer meets it: the config it writes on the first start, the server on that
config, and `mailwarden demo` showing the seed's classic within the first minutes - a mail
delivered, then fetched and deleted by POP3 from another device in the customer's network - and
the tracking center at the printed address, where the printed admin password finds the demo mails.
"""

from __future__ import annotations

import json
import re
import socket
import subprocess
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.support.mailwarden import PYTHON, Mailwarden
from tests.support.net import free_port
from tests.support.web import login_form_post

pytestmark = pytest.mark.integration

MAKEFILE = Path(__file__).resolve().parents[2] / "Makefile"


def free_port_run() -> int:
    """A port for SMTP whose next two (POP3 and the web in the generated config) are free too."""
    for _ in range(50):
        port = free_port()
        if port < 65534 and free_port_at(port + 1) and free_port_at(port + 2):
            return port
    raise RuntimeError("no three adjacent free ports")


def free_port_at(port: int) -> bool:
    with socket.socket() as probe:
        try:
            probe.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


@pytest.fixture(scope="module")
def first_start(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Mailwarden]:
    root = tmp_path_factory.mktemp("checkout")
    config = root / "var" / "mailwarden.toml"
    recipe = MAKEFILE.read_text().partition("\nrun: venv\n")[2].split("\n\n")[0]
    assert "mailwarden -c var/mailwarden.toml config init" in recipe and "-c var/mailwarden.toml serve" in recipe
    port = free_port_run()
    subprocess.run(
        [PYTHON, "-m", "mailwarden", "-c", str(config), "config", "init", "--port", str(port)],
        cwd=root,
        check=True,
        capture_output=True,
        timeout=60,
    )
    instance = Mailwarden(root, config_file=config, smtp_port=port)
    instance.start()
    try:
        yield instance
    finally:
        instance.stop()


def test_the_first_start_writes_a_commented_config_and_serves_smtp_and_pop3_on_loopback(
    first_start: Mailwarden,
) -> None:
    text = first_start.config.read_text()
    assert "the checks that need DNS are left out" in text
    ready = first_start.log.read_text()
    port = first_start.smtp_port
    roles = (
        rf"smtp 127\.0\.0\.1:{port} \(\d+ workers\), pop3 127\.0\.0\.1:{port + 1}, web http://127\.0\.0\.1:{port + 2}"
    )
    assert re.search(roles, ready), ready
    assert "created demo mailbox demo@example.test" in ready
    again = first_start.cli("config", "init", check=False)
    assert again.returncode == 2 and "exists already; it is kept" in again.stderr


@pytest.fixture(scope="module")
def demo(first_start: Mailwarden) -> str:
    """What `mailwarden demo` printed (played once for the module)."""
    return first_start.cli("demo").stdout


def test_demo_shows_a_mail_fetched_and_deleted_by_another_device(first_start: Mailwarden, demo: str) -> None:
    out = demo
    assert "the customer's mail program at 127.0.0.1: checked demo@example.test" in out
    assert "another device at 127.0.0.2: fetched the accepted mail" in out
    accepted = re.search(r"accepted +-> 250 .* ref=(\w+)", out)
    assert accepted is not None, out
    ref = accepted.group(1)

    listing = json.loads(first_start.cli("trace", "--since", "10m", "--format", "json").stdout)
    (message,) = [m for m in listing if m["ref"] == ref]
    (recipient,) = message["recipients"]
    assert (recipient["address"], recipient["status"]) == ("demo@example.test", "deleted")
    assert f"{ref}  deleted     access.deleted" in first_start.cli("trace", "--since", "10m").stdout

    report = first_start.cli("explain", ref).stdout
    assert "then fetched and deleted at" in report
    assert "by a POP3 client at 127.0.0.2" in report
    assert "the usual clients are 127.0.0.1" in report and "probably another device in your network" in report
    german = first_start.cli("explain", ref, "--lang", "de").stdout
    assert "abgerufen und gelöscht" in german and "vermutlich ein weiteres Gerät in Ihrem Netz" in german


def test_the_printed_address_and_admin_password_find_the_demo_mails(first_start: Mailwarden, demo: str) -> None:
    ready = first_start.log.read_text()
    address = re.search(r"web (http://127\.0\.0\.1:\d+)", ready)
    password = re.search(r"created web admin account admin with password (\S+) \(shown once\)", ready)
    assert address is not None and password is not None, ready
    assert f"or in the browser: {address.group(1)}/search (log in as admin" in demo
    refs = re.findall(r"-> \d{3} .*?ref=(\w+)", demo)
    assert len(refs) >= 3, demo  # accepted, unknown recipient, relay attempt
    with httpx.Client(base_url=address.group(1), timeout=30) as browser:
        assert login_form_post(browser, "admin", password.group(1)).status_code == 303
        page = browser.get("/search")  # opened without a question: the last day
        assert page.status_code == 200
        for ref in refs:
            assert f'class="open">{ref}<' in page.text, ref
        mine = browser.get("/search", params={"recipient": "demo@example.test"}).text
        assert "demo@example.test" in mine and "fetched and deleted" in mine
