"""The tracking center in a real browser (Debian's chromium driven by Playwright; no browser is downloaded).

Support logs in, searches by recipient, opens a message the gateway refused, reads the verdict
and downloads its PDF; a customer sees only its own domain's mail in the search and the dashboard,
and editing the address to another domain's message gets 404; a sender follows the ref of a real
refusal reply to /why/REF and reads it in German and in English. A screenshot of every page is
written to the directory the test prints (test-artifacts/web-browser/ by default).
"""

from __future__ import annotations

import json
import os
import re
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest
from playwright.sync_api import Browser, Page, sync_playwright

from tests.support.web import PASSWORD, Center, Mail, center, refusal_ref, wait_committed

pytestmark = pytest.mark.integration

CHROMIUM = "/usr/bin/chromium"
ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
ARTIFACTS = Path(os.environ.get("MAILWARDEN_TEST_ARTIFACTS", Path(__file__).resolve().parents[2] / "test-artifacts"))

if not Path(CHROMIUM).exists():  # scripts/install-system-packages.sh installs it
    pytest.fail(f"{CHROMIUM} is missing: run `make system-packages` (Debian's chromium)", pytrace=False)


@pytest.fixture(scope="module")
def web(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Center]:
    with center(tmp_path_factory.mktemp("web")) as running:
        yield running


@pytest.fixture(scope="module")
def shots() -> Path:
    directory = ARTIFACTS / "web-browser"
    shutil.rmtree(directory, ignore_errors=True)
    directory.mkdir(parents=True)
    print(f"\nscreenshots in {directory}")
    return directory


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(executable_path=CHROMIUM, headless=True, args=ARGS)
        yield launched
        launched.close()


@pytest.fixture
def page(browser: Browser, web: Center) -> Iterator[Page]:
    context = browser.new_context(base_url=web.url, accept_downloads=True, locale="en-US")
    opened = context.new_page()
    yield opened
    context.close()


def _log_in(page: Page, name: str, password: str = PASSWORD) -> None:
    page.goto("/login")
    page.fill("#name", name)
    page.fill("#password", password)
    page.click("#login")
    page.wait_for_url(re.compile(r"/$"))


def test_support_searches_by_recipient_opens_a_refused_message_reads_the_verdict_and_downloads_its_pdf(
    page: Page, web: Center, shots: Path, tmp_path: Path
) -> None:
    p = page
    _log_in(p, "support")
    p.screenshot(path=shots / "01-home.png", full_page=True)
    p.click("nav >> text=Search")
    p.fill("#recipient", "nobody@example.test")
    p.click("#search")
    p.wait_for_url(re.compile(r"recipient=nobody"))
    results = p.inner_text("#results")
    assert "nobody@example.test" in results and "rcpt.unknown_user" in results
    assert "bob@example.test" not in results
    assert "rejected" in p.inner_text("#counts-status") and "rcpt.unknown_user" in p.inner_text("#counts-reason")
    p.screenshot(path=shots / "02-search-by-recipient.png", full_page=True)
    p.click(f"#results a.open >> text={web.refs['unknown']}")
    p.wait_for_url(re.compile(f"/message/{web.refs['unknown']}"))
    verdict = p.inner_text("#verdict")
    assert "Recipient address does not exist" in verdict
    assert "nobody@example.test" in verdict
    assert p.inner_text("#responsibility").startswith("the sender")
    assert "correct the recipient address" in p.inner_text("#remedy")
    assert "Refused: 550 5.1.1" in p.inner_text("#timeline")
    assert p.locator("ol.phases li.mark-bad").inner_text().startswith("Decision")
    p.screenshot(path=shots / "03-refused-message.png", full_page=True)
    with p.expect_download() as info:
        p.click("#download-pdf")
    saved = tmp_path / "report.pdf"
    info.value.save_as(saved)
    data = saved.read_bytes()
    assert data.startswith(b"%PDF") and b"mailwarden-manifest:" in data
    verified = web.gateway.cli("verify-report", str(saved))
    assert verified.stdout.startswith("OK:"), verified.stdout
    p.click("nav >> text=Dashboard")
    assert "rcpt.unknown_user" in p.inner_text("#today")
    p.screenshot(path=shots / "04-support-dashboard.png", full_page=True)


def test_a_customer_sees_only_its_own_domains_mail_in_the_search_and_the_dashboard(
    page: Page, web: Center, shots: Path
) -> None:
    p = page
    _log_in(p, "customer")
    p.click("nav >> text=Search")
    results = p.inner_text("#results")
    assert "bob@example.test" in results and "nobody@example.test" in results
    assert "other.test" not in p.inner_text("main")
    p.screenshot(path=shots / "05-customer-search.png", full_page=True)
    p.fill("#ref", web.refs["carol"])  # another domain's message, by its ref
    p.click("#search")
    assert p.locator("#nothing").is_visible() and "carol" not in p.inner_text("#counts")
    p.click("nav >> text=Dashboard")
    today = p.inner_text("#today")
    own = p.request.get("/api/counts", params={"since": "1d"}).json()
    assert own["total"] > 0 and f"{own['total']} recipient(s)" in today
    everyone = web.gateway.cli("trace", "--since", "1d", "--count", "--format", "json").stdout
    assert json.loads(everyone)["total"] > own["total"]  # carol's message is there, but not for this customer
    assert "other.test" not in p.inner_text("main")
    p.screenshot(path=shots / "06-customer-dashboard.png", full_page=True)


def test_a_customer_editing_the_url_to_another_domains_message_gets_404(page: Page, web: Center, shots: Path) -> None:
    p = page
    _log_in(p, "customer")
    own = p.goto(f"/message/{web.refs['bob']}")
    assert own.status == 200
    assert "bob@example.test" in p.inner_text("#verdict")
    p.screenshot(path=shots / "07-customer-own-message.png", full_page=True)
    foreign = p.goto(f"/message/{web.refs['carol']}")
    assert foreign.status == 404
    assert "Not found" in p.inner_text("main")
    assert "carol" not in p.inner_text("main")
    p.screenshot(path=shots / "08-customer-foreign-message-404.png", full_page=True)


def test_a_sender_follows_the_ref_of_a_real_refusal_to_the_why_page_in_german_and_english(
    page: Page, web: Center, shots: Path
) -> None:
    with Mail(web.gateway, source="127.0.0.5") as mail:
        assert mail.wire.command("MAIL FROM:<alice@sender.test>").code == 250
        reply = mail.wire.command("RCPT TO:<nobdoy@example.test>")
    assert reply.code == 550
    ref = refusal_ref(reply.text)
    with web.login("support") as support:
        wait_committed(support, ref)
    p = page
    p.goto(f"/why/{ref}?lang=de")
    german = p.inner_text("#why")
    assert "Warum wurde meine Nachricht abgelehnt?" in german
    assert "Empfängeradresse existiert nicht" in german
    assert "127.0.0.5" in german and "550 5.1.1" in german
    assert "Der Absender muss die Empfängeradresse korrigieren." in german
    p.screenshot(path=shots / "09-why-de.png", full_page=True)
    p.click("#lang-en")
    english = p.inner_text("#why")
    assert "Why was my message refused?" in english
    assert "Recipient address does not exist" in english
    assert "The sender must correct the recipient address." in english
    p.screenshot(path=shots / "10-why-en.png", full_page=True)
    p.goto("/why/ZZZZZZZZZZZA")
    assert "No such reference" in p.inner_text("#why")
    p.screenshot(path=shots / "11-why-unknown.png", full_page=True)
