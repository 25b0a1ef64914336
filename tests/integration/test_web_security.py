"""The tracking center's security promises, against a real `mailwarden serve` and mail from the real gateway.

Forms without a CSRF token are refused; a login always gets a new session id; stranger text
(HELO, envelope addresses, Message-ID) is inert in pages, search results, the dashboard, reports
and CSV; a customer gets 404 for another domain's message by id, ref and report download, on pages
and in the API, and its searches and counts by ref, Message-ID and client address find nothing of
another domain; password guessing locks out; /why answers unknown, malformed and accepted-mail
refs identically.
"""

from __future__ import annotations

import csv
import io
import json
import re
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.support.web import (
    PASSWORD,
    XSS_MARKERS,
    XSS_MESSAGE_ID,
    XSS_RECIPIENT,
    XSS_SENDER,
    Center,
    center,
    form_token,
    login_form_post,
)

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def web(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Center]:
    with center(tmp_path_factory.mktemp("web"), login_max_failures=3) as running:
        yield running


def _main(page: str) -> str:
    """The page's content, without the header (whose language switch repeats the address asked for)."""
    return page[page.index("<main>") : page.index("</main>")]


def _inert(text: str) -> None:
    for marker in XSS_MARKERS:
        assert marker not in text, f"unescaped {marker!r} in:\n{text}"


# ---------------------------------------------------------------------------- headers
def test_every_page_carries_the_security_headers(web: Center) -> None:
    with web.client() as client:
        for path in ("/login", f"/why/{web.refs['unknown']}", "/no-such-page"):
            headers = client.get(path).headers
            csp = headers["content-security-policy"]
            assert "frame-ancestors 'none'" in csp and "script-src" not in csp and "unsafe-inline" not in csp
            assert headers["x-content-type-options"] == "nosniff"
            assert headers["referrer-policy"] == "no-referrer"


def test_the_session_cookie_is_httponly_and_samesite(web: Center) -> None:
    with web.client() as client:
        response = login_form_post(client, "support", PASSWORD)
        cookie = next(v for k, v in response.headers.multi_items() if k == "set-cookie" and "mw_session=" in v)
        assert "HttpOnly" in cookie and "SameSite=lax" in cookie
        assert "Secure" not in cookie  # plain HTTP here; over HTTPS it is set (unit test)


# ---------------------------------------------------------------------------- CSRF
def test_a_form_post_without_the_csrf_token_is_refused(web: Center) -> None:
    with web.login("support") as client:
        refused = client.post("/bounce", data={"text": f"ref={web.refs['unknown']}"})
        assert refused.status_code == 403
        forged = client.post("/bounce", data={"text": "x", "csrf": "forged"})
        assert forged.status_code == 403
        token = form_token(client.get("/bounce").text)
        assert client.post("/bounce", data={"text": "x", "csrf": token}).status_code == 200


def test_every_form_that_posts_needs_the_csrf_token(web: Center) -> None:
    with web.login("admin", web.admin_password) as client:
        for path, data in (
            ("/bounce", {"text": "550 5.1.1 unknown user"}),
            ("/accounts", {"name": "planted", "role": "support", "password": PASSWORD}),
            ("/accounts/support/remove", {}),
            ("/logout", {}),
        ):
            assert client.post(path, data=data).status_code == 403, path
            assert client.post(path, data={**data, "csrf": "forged"}).status_code == 403, path
        accounts = client.get("/accounts").text
        assert "planted" not in accounts and ">support<" in accounts
        for path in ("/search", "/dashboard"):  # these change nothing: their forms are GETs, and no other posts
            forms = re.findall(r'<form method="(\w+)" action="([^"]+)"', client.get(path).text)
            assert ("post", "/logout") in forms and all(m == "get" for m, a in forms if a != "/logout"), forms


def test_the_login_form_needs_its_token_too(web: Center) -> None:
    with web.client() as client:
        response = client.post("/login", data={"name": "support", "password": PASSWORD, "next": "/"})
        assert response.status_code == 403
        assert "mw_session" not in response.headers.get("set-cookie", "")


def test_a_state_changing_api_call_needs_the_csrf_header(web: Center) -> None:
    with web.api("support") as (client, token):
        without = client.post(
            "/api/bounces/explain", content=b"550 5.1.1 unknown user", headers={"content-type": "text/plain"}
        )
        assert without.status_code == 403
        with_token = client.post(
            "/api/bounces/explain",
            content=b"550 5.1.1 unknown user",
            headers={"content-type": "text/plain", "x-csrf-token": token},
        )
        assert with_token.status_code == 200


def test_logout_without_the_token_keeps_the_session(web: Center) -> None:
    with web.login("support") as client:
        assert client.post("/logout", data={}).status_code == 403
        assert client.get("/").status_code == 200


# ---------------------------------------------------------------------------- sessions
def test_login_gives_a_new_session_id_and_the_planted_one_is_worthless(web: Center) -> None:
    """Session fixation: an attacker who planted (or knew) a session id gains nothing by the victim's login."""
    with web.login("support") as attacker:
        planted = attacker.cookies["mw_session"]
    with web.client() as victim:
        victim.cookies.set("mw_session", planted)
        response = login_form_post(victim, "customer", PASSWORD)
        assert response.status_code == 303
        fresh = response.cookies["mw_session"]
        assert fresh != planted
    with web.client() as replay:
        replay.cookies.set("mw_session", planted)
        assert replay.get("/").status_code == 303  # sent to the login: the planted session ended


def test_logout_ends_the_session_on_the_server(web: Center) -> None:
    with web.login("support") as client:
        token_cookie = client.cookies["mw_session"]
        page = client.get("/")
        assert client.post("/logout", data={"csrf": form_token(page.text)}).status_code == 303
    with web.client() as replay:
        replay.cookies.set("mw_session", token_cookie)
        assert replay.get("/").status_code == 303


def test_pages_need_a_login(web: Center) -> None:
    with web.client() as client:
        response = client.get(f"/message/{web.refs['unknown']}")
        assert response.status_code == 303 and response.headers["location"].startswith("/login?next=")
        assert client.get(f"/api/messages/{web.refs['unknown']}").status_code == 401


def test_password_guessing_locks_the_address_and_the_account(web: Center) -> None:
    web.gateway.cli("accounts", "add", "victim", "--role", "support", "--password-stdin", input=PASSWORD + "\n")
    with web.client(source="127.0.0.77") as guesser:
        codes = [login_form_post(guesser, "victim", f"guess{n}").status_code for n in range(3)]
        assert codes == [401, 401, 429]
        locked = login_form_post(guesser, "victim", PASSWORD)  # even the right password now
        assert locked.status_code == 429 and "mw_session" not in locked.headers.get("set-cookie", "")
        assert "Too many failed logins" in locked.text
    with web.client(source="127.0.0.78") as owner:  # the account is locked from everywhere, for a while
        assert login_form_post(owner, "victim", PASSWORD).status_code == 429
        assert owner.post("/api/session", json={"name": "victim", "password": PASSWORD}).status_code == 429
    with web.client(source="127.0.0.78") as other:  # other accounts from that address are not
        assert login_form_post(other, "support", PASSWORD).status_code == 303


# ---------------------------------------------------------------------------- stranger text
def test_stranger_text_is_inert_in_pages(web: Center) -> None:
    with web.login("support") as client:
        for key in ("unknown", "bob", "xss_recipient"):
            page = client.get(f"/message/{web.refs[key]}")
            assert page.status_code == 200
            _inert(page.text)
        page = client.get(f"/message/{web.refs['bob']}").text
        assert "&lt;script&gt;alert(&#39;helo&#39;)&lt;/script&gt;" in page  # shown, as text
        assert "&lt;img src=x onerror=alert(1)" in page


def test_stranger_text_is_inert_in_reports_and_csv(web: Center) -> None:
    with web.login("support") as client:
        html = client.get(f"/message/{web.refs['bob']}/report.html")
        assert html.headers["content-disposition"].startswith("attachment;")
        _inert(html.text)
        table = client.get(f"/message/{web.refs['bob']}/report.csv")
        assert table.headers["content-type"].startswith("text/csv")
        rows = list(csv.reader(io.StringIO(table.text)))
        helo = next(row for row in rows if row[0] == "connection" and row[4] == "HELO")
        assert helo[5].startswith("'=HYPERLINK(1)"), helo  # a formula in a spreadsheet no more
        assert not any(cell.startswith(("=", "+", "-", "@")) for row in rows for cell in row)


def test_stranger_text_is_inert_in_search_results_and_the_dashboard(web: Center) -> None:
    with web.login("support") as client:
        for params in (
            {"since": "1d"},
            {"sender": XSS_SENDER.strip('"')},
            {"message_id": XSS_MESSAGE_ID},
            {"recipient": XSS_RECIPIENT, "reason": "<script>alert('reason')</script>"},
        ):
            page = client.get("/search", params=params)
            assert page.status_code == 200, params
            _inert(page.text)
        results = client.get("/search", params={"since": "1d"}).text
        assert "&lt;img src=x onerror=alert(1)" in results and "&lt;img src=y onerror=alert(2)" in results  # as text
        dashboard = client.get("/dashboard")
        assert dashboard.status_code == 200 and "<svg" in dashboard.text
        _inert(dashboard.text)


def test_stranger_text_is_inert_on_the_public_page(web: Center) -> None:
    with web.client() as client:
        page = client.get(f"/why/{web.refs['xss_recipient']}")
        assert page.status_code == 200 and "550 5.1.1" in page.text
        _inert(page.text)


# ---------------------------------------------------------------------------- customers
def test_a_customer_gets_404_for_another_domains_message(web: Center) -> None:
    carol = web.refs["carol"]
    with web.login("customer") as client:
        assert client.get(f"/message/{web.refs['bob']}").status_code == 200  # its own domain
        for path in (
            f"/message/{carol}",
            f"/message/{carol.lower()}",
            f"/message/{carol}?recipient=carol@other.test",
            f"/message/{carol}/report.pdf",
            f"/message/{carol}/report.csv?recipient=carol@other.test",
            f"/message/{web.refs['bob']}?recipient=carol@other.test",
        ):
            response = client.get(path)
            assert response.status_code == 404, path
            assert "carol" not in _main(response.text)
        missing = client.get("/message/ZZZZZZZZZZZZ")
        assert missing.status_code == 404
        assert _main(missing.text) == _main(client.get(f"/message/{carol}").text)  # unknown and foreign look alike
    with web.login("othercustomer") as client:
        assert client.get(f"/message/{carol}").status_code == 200


def test_a_customer_gets_404_for_another_domains_message_in_the_api(web: Center) -> None:
    carol = web.refs["carol"]
    with web.api("customer") as (client, token):
        for path in (
            f"/api/messages/{carol}",
            f"/api/messages/{carol}/explain",
            f"/api/messages/{carol}/report?format=json",
        ):
            assert client.get(path).status_code == 404, path
        assert client.get(f"/api/messages/{web.refs['bob']}").status_code == 200
        with web.api("support") as (support, _):
            report = support.get(f"/api/messages/{carol}/report", params={"format": "json"}).content
        verified = client.post(
            "/api/reports/verify",
            content=report,
            headers={"content-type": "application/octet-stream", "x-csrf-token": token},
        )
        assert verified.status_code == 404


def test_a_customers_search_by_ref_message_id_or_client_address_finds_nothing_of_another_domain(web: Center) -> None:
    carol = web.refs["carol"]
    foreign = (
        {"ref": carol},
        {"ref": carol.lower()},
        {"message_id": "<carol-1@sender.test>"},
        {"client": "127.0.0.1", "recipient": "carol@other.test"},
        {"client": "127.0.0.0/8", "sender": "alice@sender.test", "recipient": "@other.test"},
    )
    with web.api("customer") as (client, _):
        for params in foreign:
            assert client.get("/api/search", params=params).json()["rows"] == [], params
            assert client.get("/api/counts", params=params).json()["total"] == 0, params
        own = client.get("/api/search", params={"client": "127.0.0.1"}).json()["rows"]
        assert own and all(row["recipient"].endswith("@example.test") for row in own)
    with web.login("customer") as client:
        for params in foreign:
            page = _main(client.get("/search", params=params).text)
            assert 'id="nothing"' in page and "carol@" not in page[page.index('id="counts"') :], params
        assert "other.test" not in _main(client.get("/dashboard").text)
    with web.api("othercustomer") as (client, _):
        assert [row["recipient"] for row in client.get("/api/search", params={"ref": carol}).json()["rows"]] == [
            "carol@other.test"
        ]


def test_a_bounce_naming_another_domains_ref_links_nothing_for_a_customer(web: Center) -> None:
    bounce = f"550 5.1.1 <carol@other.test>: refused ref={web.refs['carol']}".encode()
    with web.api("customer") as (client, token):
        answer = client.post(
            "/api/bounces/explain", content=bounce, headers={"content-type": "text/plain", "x-csrf-token": token}
        ).json()
    assert answer["traces"] == []
    with web.api("support") as (support, support_token):
        answer = support.post(
            "/api/bounces/explain",
            content=bounce,
            headers={"content-type": "text/plain", "x-csrf-token": support_token},
        ).json()
    assert [t["id"] for t in answer["traces"]] == [web.refs["carol"]]


def test_admin_pages_are_for_admins(web: Center) -> None:
    with web.login("support") as client:
        assert client.get("/audit").status_code == 403
        assert client.get("/api/audit").status_code == 403
    with web.login("admin", web.admin_password) as client:
        page = client.get("/audit")
        assert page.status_code == 200 and "message.open" in page.text


def test_supports_searches_and_opened_messages_are_audited(web: Center) -> None:
    with web.login("support") as client:
        client.get("/search", params={"recipient": "carol@other.test", "since": "1d"})
        client.get(f"/message/{web.refs['carol']}")
    with web.api("admin", web.admin_password) as (admin, _):
        entries = admin.get("/api/audit", params={"limit": 1000}).json()
    assert any(
        e["account"] == "support" and e["action"] == "message.open" and e["target"] == web.refs["carol"]
        for e in entries
    )
    assert any(
        e["account"] == "support"
        and e["action"] == "search"
        and e["target"] == "recipient=carol@other.test since=1d"
        and e["detail"] == {"found": "1"}
        for e in entries
    )


# ---------------------------------------------------------------------------- /why
def _shape(response: httpx.Response) -> tuple[int, str, list[tuple[str, str]]]:
    headers = sorted((k, v) for k, v in response.headers.items() if k != "date")
    return response.status_code, response.text, headers


def test_why_answers_unknown_malformed_and_accepted_refs_identically(web: Center) -> None:
    with web.client() as client:
        known = client.get(f"/why/{web.refs['unknown']}")
        assert known.status_code == 200 and "550 5.1.1" in known.text
        shapes = {
            name: _shape(client.get(f"/why/{ref}"))
            for name, ref in (
                ("unknown", "ZZZZZZZZZZZA"),
                ("malformed", "not-a-ref<script>"),
                ("too long", "A" * 300),
                ("with a slash", "1C3X/2M3AG000"),
                ("empty", ""),
                ("accepted", web.refs["bob"]),  # exists, but was no refusal: tells nothing
                ("foreign", web.refs["carol"]),
            )
        }
    first = next(iter(shapes.values()))
    for name, shape in shapes.items():
        assert shape == first, name
    assert "No such reference" in first[1]


def test_why_shows_what_the_sender_knows_and_nothing_more(web: Center) -> None:
    with web.client() as client:
        page = client.get(f"/why/{web.refs['unknown']}", headers={"accept-language": "de-DE,de;q=0.9,en;q=0.5"})
    text = page.text
    assert page.status_code == 200 and 'lang="de"' in text
    assert "nobody@example.test" in text  # the address the sender tried: in our reply
    for hidden in ("bob@example.test", "carol@other.test", "Meinten Sie", "Did you mean"):
        assert hidden not in text


def test_api_login_needs_json(web: Center) -> None:
    """Another site's form cannot log a browser in: the API login takes only application/json."""
    with web.client() as client:
        response = client.post("/api/session", data={"name": "support", "password": PASSWORD})
        assert response.status_code == 422
        assert "mw_session" not in response.headers.get("set-cookie", "")


def test_the_openapi_schema_is_served(web: Center) -> None:
    with web.client() as client:
        schema = json.loads(client.get("/api/openapi.json").text)
    assert {
        "/api/messages/{trace_id}",
        "/api/reports/verify",
        "/api/sender-check",
        "/api/search",
        "/api/counts",
    } <= set(schema["paths"])


def test_nothing_is_loaded_from_elsewhere(web: Center, tmp_path: Path) -> None:
    with web.login("support") as client:
        for path in ("/", f"/message/{web.refs['bob']}", "/bounce", "/sender-check", "/search", "/dashboard"):
            page = client.get(path)
            assert page.status_code == 200, (path, page.status_code)  # a page, not a redirect or an error
            assert "http://" not in page.text and "https://" not in page.text and "<script" not in page.text
