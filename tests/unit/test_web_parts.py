"""The tracking center's parts in-process, with injected clocks: languages, sessions, throttling, rate limits, accounts."""

from __future__ import annotations

import html
import re
from pathlib import Path
from typing import Any

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient

from mailwarden import sendercheck
from mailwarden.catalog import CATALOG, Lang
from mailwarden.cli import main
from mailwarden.config import Config
from mailwarden.events import Event
from mailwarden.store import Store, StoreError
from mailwarden.web import accounts, pages
from mailwarden.web.app import create_app
from mailwarden.web.i18n import from_accept_language
from tests.support.stores import Opener

PASSWORD = "correct horse battery"
MINUTE_US = 60 * 1_000_000


class Clock:
    def __init__(self) -> None:
        self.us = 1_800_000_000 * 1_000_000
        self.slept: list[float] = []

    def now(self) -> int:
        return self.us

    def seconds(self) -> float:
        return self.us / 1_000_000

    async def sleep(self, seconds: float) -> None:
        self.slept.append(seconds)

    def advance(self, seconds: float) -> None:
        self.us += int(seconds * 1_000_000)


@pytest.fixture
def store(store: Store) -> Store:
    """The shared fixture's store (both backends) with a support and a customer account."""
    accounts.add(store, "support", "support", (), PASSWORD)
    accounts.add(store, "customer", "customer", ("example.test",), PASSWORD)
    return store


@pytest.fixture
def clock() -> Clock:
    return Clock()


def make_app(store: Store, clock: Clock, **web: object) -> FastAPI:
    settings = {"listen": "127.0.0.1:1", "why_per_minute": 3, "login_max_failures": 3, **web}
    return create_app(Config(web=settings), store, now=clock.now, wall=clock.seconds, sleep=clock.sleep)


def make_client(
    store: Store, clock: Clock, *, client: tuple[str, int] = ("192.0.2.1", 1234), **web: object
) -> TestClient:
    return TestClient(
        make_app(store, clock, **web), base_url="http://testserver", client=client, follow_redirects=False
    )


def log_in(client: TestClient, name: str = "support", password: str = PASSWORD) -> int:
    page = client.get("/login").text
    token = re.search(r'name="csrf" value="([^"]*)"', page)
    assert token is not None
    return client.post("/login", data={"name": name, "password": password, "csrf": token.group(1)}).status_code


# ---------------------------------------------------------------------------- language
@pytest.mark.parametrize(
    ("header", "expected"),
    [
        ("de-DE,de;q=0.9,en;q=0.8", "de"),
        ("en-US,en;q=0.9,de;q=0.8", "en"),
        ("fr-FR,fr;q=0.9,de;q=0.5", "de"),
        ("fr, es", "en"),
        ("de;q=0, en;q=0.1", "en"),
        ("", "en"),
        ("de;q=abc", "en"),
    ],
)
def test_the_browsers_language_is_chosen_by_its_q_values(header: str, expected: str) -> None:
    assert from_accept_language(header) == expected


def test_a_chosen_language_is_remembered_and_wins_over_the_browser(store: Store, clock: Clock) -> None:
    client = make_client(store, clock)
    german = {"accept-language": "de"}
    assert 'lang="de"' in client.get("/login", headers=german).text
    switched = client.get("/login?lang=en", headers=german)
    assert 'lang="en"' in switched.text and "mw_lang=en" in switched.headers["set-cookie"]
    assert 'lang="en"' in client.get("/login", headers=german).text  # the cookie remembers


# ---------------------------------------------------------------------------- sessions and cookies
def test_over_https_the_cookies_are_secure_and_hsts_is_sent(store: Store, clock: Clock) -> None:
    client = make_client(store, clock)
    client.base_url = client.base_url.copy_with(scheme="https")
    page = client.get("/login")
    assert "Secure" in page.headers["set-cookie"]
    assert page.headers["strict-transport-security"].startswith("max-age=")
    assert log_in(client) == 303
    session_cookie = next(c for c in client.cookies.jar if c.name == "mw_session")
    assert session_cookie.secure


def test_a_session_ends_after_its_idle_time_and_after_its_maximum_age(store: Store, clock: Clock) -> None:
    client = make_client(store, clock, session_idle_minutes=30, session_max_hours=2)
    assert log_in(client) == 303
    clock.advance(29 * 60)
    assert client.get("/").status_code == 200
    clock.advance(31 * 60)  # idle for 31 minutes since the last request that counted
    assert client.get("/").status_code == 303
    assert log_in(client) == 303
    for _ in range(5):  # busy, never idle, but two hours after the login it ends
        clock.advance(25 * 60)
        client.get("/")
    assert client.get("/").status_code == 303


@pytest.mark.parametrize(
    ("path", "refused"),
    [
        ("/api/search?status=bogus&limit=0", 401),
        ("/search?status=bogus&cursor=%20x", 303),
        ("/message/x?recipient=" + "a" * 300, 303),
    ],
)
def test_the_busiest_routes_ask_for_the_login_before_they_look_at_the_fields(
    store: Store, clock: Clock, path: str, refused: int
) -> None:
    """They look the session up in the handler's own thread (no thread of its own for the dependency):
    without a session cookie, and with one of an ended session, the answer is still the login's."""
    client = make_client(store, clock, session_idle_minutes=30)
    assert client.get(path).status_code == refused
    assert log_in(client) == 303
    clock.advance(31 * 60)
    assert client.get(path).status_code == refused


def test_a_password_change_ends_the_accounts_sessions(store: Store, clock: Clock) -> None:
    client = make_client(store, clock)
    assert log_in(client) == 303
    accounts.set_password(store, "support", "another good password")
    assert client.get("/").status_code == 303


# ---------------------------------------------------------------------------- throttling
def test_failed_logins_are_answered_ever_later_then_locked(store: Store, clock: Clock) -> None:
    client = make_client(store, clock, login_failure_delay=1.0, login_failure_delay_max=16.0, login_lock_seconds=600)
    assert [log_in(client, password=f"wrong{n}") for n in range(3)] == [401, 401, 429]
    assert clock.slept == [1.0, 2.0, 4.0]
    assert log_in(client) == 429  # locked: the right password is refused too, at once
    assert clock.slept == [1.0, 2.0, 4.0]
    clock.advance(601)
    assert log_in(client) == 303


def test_an_unknown_account_is_refused_like_a_wrong_password(store: Store, clock: Clock) -> None:
    client = make_client(store, clock)
    assert log_in(client, name="nobody") == 401
    assert log_in(client, name="support", password="wrong password") == 401


def test_the_sender_check_page_shows_each_finding_with_its_remedy_in_the_pages_language(
    store: Store, clock: Clock, monkeypatch: pytest.MonkeyPatch
) -> None:
    asked: list[str] = []

    async def found(config: Config, target: str, lang: Lang = "en") -> dict[str, Any]:
        asked.append(lang)
        problem = sendercheck.finding("client.no_rdns", lang, client_ip="192.0.2.1")  # a finding without a note
        return {"address": target, "findings": [problem], "checked_at": "now", "checked_by": "mx", "ok": False}

    monkeypatch.setattr(pages, "check_sender", found)
    client = make_client(store, clock)
    assert log_in(client) == 303
    page = client.get("/sender-check", params={"target": "192.0.2.1", "lang": "de"})
    assert page.status_code == 200 and asked == ["de"]
    shown = html.unescape(page.text)
    assert CATALOG["client.no_rdns"].remedy["de"][:40] in shown
    assert CATALOG["client.no_rdns"].remedy["en"][:40] not in shown


def test_the_why_page_is_rate_limited_per_client_address(store: Store, clock: Clock) -> None:
    app = make_app(store, clock)
    one = TestClient(app, client=("192.0.2.1", 1))
    other = TestClient(app, client=("192.0.2.2", 1))
    assert [one.get("/why/1C3X2M3AG000").status_code for _ in range(4)] == [200, 200, 200, 429]
    assert one.get("/why/1C3X2M3AG000").headers["retry-after"] == "60"
    assert other.get("/why/1C3X2M3AG000").status_code == 200
    clock.advance(120)
    assert one.get("/why/1C3X2M3AG000").status_code == 200


def test_the_why_page_explains_a_refusal_postfix_sent_for_our_milter(store: Store, clock: Clock) -> None:
    reply = "550 5.1.1 The mailbox nobody@example.test does not exist here. ref=1C3X2M3AG001"
    store.append(
        Event(
            "reject", "milter", "mx1", ref="1C3X2M3AG001", queue_id="4F1A2B3C4D", client_ip="192.0.2.9",
            recipient="nobody@example.test", smtp_code=550, enhanced_code="5.1.1", reply=reply,
            reason="rcpt.unknown_user", detail={"values": {"recipient": "nobody@example.test"}},
        )
    )  # fmt: skip
    store.flush()
    page = make_client(store, clock).get("/why/1C3X2M3AG001").text
    assert "nobody@example.test does not exist here" in page


def test_forwarded_addresses_are_believed_only_from_a_configured_proxy(store: Store, clock: Clock) -> None:
    direct = make_client(store, clock, client=("192.0.2.1", 1))
    forwarded = {"x-forwarded-for": "198.51.100.9"}
    codes = [direct.get("/why/X", headers={"x-forwarded-for": f"198.51.100.{n}"}).status_code for n in range(4)]
    assert codes == [200, 200, 200, 429]  # a client cannot spread itself over invented addresses
    proxied = make_client(store, clock, client=("127.0.0.1", 1), trusted_proxies=["127.0.0.1"])
    assert [proxied.get("/why/X", headers=forwarded).status_code for _ in range(4)] == [200, 200, 200, 429]
    assert proxied.get("/why/X", headers={"x-forwarded-for": "198.51.100.10"}).status_code == 200


# ---------------------------------------------------------------------------- accounts
def test_accounts_are_checked_before_they_are_stored(store: Store) -> None:
    with pytest.raises(StoreError, match="needs its domains"):
        accounts.add(store, "c2", "customer", (), PASSWORD)
    with pytest.raises(StoreError, match="only customer accounts have domains"):
        accounts.add(store, "s2", "support", ("example.test",), PASSWORD)
    with pytest.raises(StoreError, match="too short"):
        accounts.add(store, "s3", "support", (), "short")
    with pytest.raises(StoreError, match="not a usable account name"):
        accounts.add(store, "<b>", "support", (), PASSWORD)
    with pytest.raises(StoreError, match="unknown role"):
        accounts.add(store, "s4", "root", (), PASSWORD)
    with pytest.raises(StoreError, match="exists already"):
        accounts.add(store, "support", "support", (), PASSWORD)
    made = accounts.add(store, "c3", "customer", ("Example.ORG.", "@example.net"), PASSWORD)
    assert made.domains == ("example.net", "example.org")
    assert made.password_hash.startswith("$argon2id$")


def test_the_accounts_command(
    store_url: str, tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    config = tmp_path / "config.toml"
    config.write_text(f'[store]\nurl = "{store_url}"\n')

    def run(*args: str, password: str | None = None) -> int:
        if password is not None:
            monkeypatch.setattr("sys.stdin", __import__("io").StringIO(password + "\n"))
        return main(["-c", str(config), "accounts", *args])

    assert (
        run(
            "add",
            "ann",
            "--role",
            "customer",
            "--domain",
            "example.org",
            "--domain",
            "example.net",
            "--password-stdin",
            password=PASSWORD,
        )
        == 0
    )
    assert run("add", "sam", "--role", "support", "--password-stdin", password=PASSWORD) == 0
    assert run("add", "bad", "--role", "customer", "--password-stdin", password=PASSWORD) == 2
    capsys.readouterr()
    assert run("list") == 0
    assert capsys.readouterr().out.splitlines() == ["ann\tcustomer\texample.net example.org", "sam\tsupport"]
    assert run("passwd", "sam", "--password-stdin", password="a new good password") == 0
    assert run("remove", "ann") == 0
    assert run("remove", "ann") == 2
    assert "no account ann" in capsys.readouterr().err


def test_the_first_admin_is_made_once(open_node: Opener) -> None:
    opened = open_node()
    config = Config(web={"first_admin": "boss"})
    created = accounts.ensure_first_admin(config, opened)
    assert created is not None and created[0] == "boss"
    assert accounts.authenticate(opened, "boss", created[1]) is not None
    assert accounts.ensure_first_admin(config, opened) is None
