"""The tracking center's search page, counts and dashboard (issue 13), in-process with an injected clock.

The messages are test_message_search's twelve: customer A is a.test, customer B b.test, and the
last message goes to a recipient of each. A customer's every question runs in its scope in the
store; the pages and the API answer from the message index alone.
"""

from __future__ import annotations

import re
from typing import Any

import pytest
from fastapi.testclient import TestClient

from mailwarden.store import EventQuery, Store
from mailwarden.web import accounts
from tests.unit.test_message_search import played
from tests.unit.test_trace_diagnosis import MINUTE, T0, Session
from tests.unit.test_web_parts import PASSWORD, Clock, log_in, make_app

BOTH = "1AAAAAAAAAT0"  # to amy@a.test and bea@b.test, Message-ID <both@shared.test>, from 198.51.100.7
ONLY_B = "1AAAAAAAAAS1"  # greylisted for bea@b.test, from 192.0.2.1
XSS_REASON = "<script>alert('reason')</script>"
XSS_SENDER = '"<img src=x onerror=alert(1)>"@evil.test'


@pytest.fixture
def store(store: Store) -> Store:
    """The shared fixture's store (both backends) with the played messages and three accounts."""
    for mailbox in ("ann@a.test", "amy@a.test", "bea@b.test"):
        store.add_mailbox(mailbox, "x")
    played(store)
    accounts.add(store, "support", "support", (), PASSWORD)
    accounts.add(store, "customer", "customer", ("a.test",), PASSWORD)
    accounts.add(store, "customer_b", "customer", ("b.test",), PASSWORD)
    return store


@pytest.fixture
def clock() -> Clock:
    made = Clock()
    made.us = T0 + 30 * MINUTE  # the twelve messages arrived in the last half hour
    return made


@pytest.fixture
def app(store: Store, clock: Clock) -> Any:
    return make_app(store, clock)


def logged_in(app: Any, name: str) -> TestClient:
    client = TestClient(app, base_url="http://testserver", client=("192.0.2.99", 1), follow_redirects=False)
    assert log_in(client, name) == 303
    return client


def main(page: str) -> str:
    return page[page.index("<main>") : page.index("</main>")]


def api_rows(web: TestClient, **params: object) -> list[dict[str, Any]]:
    answer = web.get("/api/search", params=params)
    assert answer.status_code == 200, answer.text
    rows: list[dict[str, Any]] = answer.json()["rows"]
    return rows


# ---------------------------------------------------------------------------- scope
def test_a_customer_search_never_reaches_past_its_domains_whatever_else_it_asks(app: Any, store: Store) -> None:
    a = logged_in(app, "customer")
    b_event = store.query_events(EventQuery(refs=[ONLY_B], kinds=["tempfail"]))[0]
    for asked in (
        {"ref": ONLY_B},
        {"ref": ONLY_B.lower()},
        {"client": "192.0.2.1"},
        {"client": "192.0.2.0/24", "status": "tempfailed"},
        {"recipient": "bea@b.test"},
        {"recipient": "@b.test"},
        {"reason": "greylisted"},
    ):
        assert api_rows(a, **asked) == [], asked
        assert a.get("/api/counts", params=asked).json()["total"] == 0, asked
        page = a.get("/search", params=asked).text
        results = page[page.index('id="counts"') :]
        assert 'id="nothing"' in results and "bea@" not in results and "192.0.2.1<" not in results, asked
    for path in (
        f"/message/{ONLY_B}",
        f"/message/E{b_event.id}",
        f"/message/{ONLY_B}/report.pdf",
        f"/api/messages/{ONLY_B}",
        f"/api/messages/E{b_event.id}/explain",
    ):
        assert a.get(path).status_code == 404, path
    support = logged_in(app, "support")
    assert [row["recipient"] for row in api_rows(support, ref=ONLY_B)] == ["bea@b.test"]
    assert support.get(f"/message/{ONLY_B}").status_code == 200


def test_a_message_to_two_customers_shows_each_only_its_own_recipient(app: Any) -> None:
    for name, mine, theirs in (("customer", "amy@a.test", "bea@b.test"), ("customer_b", "bea@b.test", "amy@a.test")):
        client = logged_in(app, name)
        for asked in ({"message_id": "<both@shared.test>"}, {"ref": BOTH}, {"client": "198.51.100.7"}):
            assert [row["recipient"] for row in api_rows(client, **asked)] == [mine], (name, asked)
            assert client.get("/api/counts", params=asked).json()["total"] == 1
            page = main(client.get("/search", params=asked).text)
            assert mine in page and theirs not in page
        opened = client.get(f"/message/{BOTH}")
        assert opened.status_code == 200 and mine in main(opened.text) and theirs not in main(opened.text)
        detail = client.get(f"/api/messages/{BOTH}").json()
        assert [fate["address"] for fate in detail["recipients"]] == [mine]
        assert client.get(f"/message/{BOTH}", params={"recipient": theirs}).status_code == 404
    support = logged_in(app, "support")
    assert sorted(row["recipient"] for row in api_rows(support, ref=BOTH)) == ["amy@a.test", "bea@b.test"]


def test_a_customer_verifies_only_reports_of_its_own_recipients(app: Any) -> None:
    support = logged_in(app, "support")
    theirs = support.get(f"/api/messages/{BOTH}/report", params={"format": "json", "recipient": "bea@b.test"}).content
    mine = support.get(f"/api/messages/{BOTH}/report", params={"format": "json", "recipient": "amy@a.test"}).content
    a = TestClient(app, base_url="http://testserver", follow_redirects=False)
    token = a.post("/api/session", json={"name": "customer", "password": PASSWORD}).json()["csrf_token"]
    headers = {"content-type": "application/octet-stream", "x-csrf-token": token}
    assert a.post("/api/reports/verify", content=theirs, headers=headers).status_code == 404
    verified = a.post("/api/reports/verify", content=mine, headers=headers)
    assert verified.status_code == 200 and verified.json()["ok"] is True


# ---------------------------------------------------------------------------- search, pages, counts
def test_search_pages_walk_on_and_back_by_the_index_cursor(app: Any) -> None:
    support = logged_in(app, "support")
    every = [row["id"] for row in api_rows(support, limit=100)]
    assert len(set(every)) == 12
    pages: list[list[str]] = []
    answer = support.get("/api/search", params={"limit": 5}).json()
    assert answer["previous_cursor"] is None
    while True:
        pages.append(list(dict.fromkeys(row["id"] for row in answer["rows"])))
        if answer["next_cursor"] is None:
            break
        answer = support.get("/api/search", params={"limit": 5, "cursor": answer["next_cursor"]}).json()
    assert [len(p) for p in pages] == [5, 5, 2]
    assert [key for p in pages for key in p] == list(dict.fromkeys(every))  # each once, newest first
    back = []
    while answer["previous_cursor"] is not None:
        answer = support.get("/api/search", params={"limit": 5, "before": answer["previous_cursor"]}).json()
        back.append(list(dict.fromkeys(row["id"] for row in answer["rows"])))
    assert back == [pages[1], pages[0]]


def test_the_search_page_links_older_and_newer_pages(app: Any, store: Store, clock: Clock) -> None:
    for n in range(50):  # 62 messages: two pages of 50
        session = Session(store, f"1AAAAAAAAB{n:02d}", T0 + 21 * MINUTE + n * 1000, client_ip="203.0.113.9")
        session.mail("bulk@sender.test")
        session.refuse("rcpt.unknown_user", 550, "5.1.1", "rcpt", recipient=f"x{n}@a.test")
        session.close()
    store.flush()
    support = logged_in(app, "support")
    first = support.get("/search", params={"since": "1h"}).text
    assert 'id="previous"' not in first and first.count('class="open"') == 50
    older = re.search(r'id="next" rel="next" href="([^"]+)"|href="([^"]+)" id="next"', first)
    assert older is not None
    second = support.get(older.group(2).replace("&amp;", "&")).text
    assert 'id="next"' not in second and second.count('class="open"') == 13  # 12 messages, one to two recipients
    newer = re.search(r'href="([^"]+)" id="previous"', second)
    assert newer is not None
    again = support.get(newer.group(1).replace("&amp;", "&")).text
    assert re.findall(r'class="open">(\w+)<', again) == re.findall(r'class="open">(\w+)<', first)


def test_counts_by_status_and_reason_come_with_the_results(app: Any) -> None:
    support = logged_in(app, "support")
    counts = support.get("/api/counts", params={"since": "1h"}).json()
    assert counts["total"] == 13
    assert counts["by_status"] == {"delivered": 8, "tempfailed": 3, "rejected": 2}
    assert counts["by_reason"] == {"delivered": 8, "greylisted": 3, "rcpt.unknown_user": 2}
    page = main(support.get("/search", params={"since": "1h"}).text)
    assert "13 recipient(s) found" in page
    assert re.search(r"status=rejected.*?<span class=\"number\">2</span>", page, re.S)
    assert re.search(r"reason=greylisted.*?<span class=\"number\">3</span>", page, re.S)
    a = logged_in(app, "customer")
    assert a.get("/api/counts", params={"since": "1h"}).json()["by_status"] == {"delivered": 7, "rejected": 2}


def test_an_empty_search_page_shows_the_last_day(app: Any, clock: Clock) -> None:
    support = logged_in(app, "support")
    page = support.get("/search").text
    assert 'name="since" id="since" value="1d"' in page and page.count('class="open"') == 13
    clock.advance(2 * 86400)
    assert 'id="nothing"' in logged_in(app, "support").get("/search").text


def test_a_field_that_cannot_be_searched_for_is_named_on_the_page_and_in_the_api(app: Any) -> None:
    support = logged_in(app, "support")
    page = support.get("/search", params={"since": "yesterday", "client": "300.1.1.1", "sender": "<>"})
    assert page.status_code == 400
    problems = page.text[page.text.index('id="problems"') :]
    assert "From: &#39;yesterday&#39; is neither a duration" in problems
    assert "Client address or network: &#39;300.1.1.1&#39; is no address or network" in problems
    assert "Sender: &#39;&lt;&gt;&#39; is no address" in problems
    german = support.get("/search", params={"until": "gestern", "lang": "de"}).text
    assert "Bis: &#39;gestern&#39; ist weder eine Dauer" in german
    answer = support.get("/api/search", params={"since": "yesterday", "client": "300.1.1.1"})
    assert answer.status_code == 422
    assert [error["loc"] for error in answer.json()["detail"]] == [["query", "since"], ["query", "client"]]


def test_searches_and_counts_are_audited_with_what_was_asked(app: Any, store: Store) -> None:
    support = logged_in(app, "support")
    support.get("/search", params={"recipient": "ann@a.test", "since": "1h"})
    support.get("/api/counts", params={"status": "rejected"})
    entries = [(e.account, e.action, e.target, e.detail) for e in store.list_audit(limit=10)]
    assert ("support", "count", "status=rejected", {"found": "2"}) in entries
    assert ("support", "search", "recipient=ann@a.test since=1h", {"found": "6"}) in entries


# ---------------------------------------------------------------------------- dashboard
def test_the_dashboard_draws_today_and_the_last_30_days_in_the_accounts_scope(app: Any, clock: Clock) -> None:
    support = main(logged_in(app, "support").get("/dashboard").text)  # first: its counts are kept
    customer = main(logged_in(app, "customer").get("/dashboard").text)  # and must not be shown to A
    today = support[support.index('id="today"') : support.index('id="days"')]
    assert "13 recipient(s)" in today and "greylisted" in today
    assert re.search(r"<title>temporarily refused: 3</title>", today)
    assert today.count("<svg") == 2 and "<script" not in support
    mine = customer[customer.index('id="today"') : customer.index('id="days"')]
    assert "9 recipient(s)" in mine and "greylisted" not in customer and "temporarily refused" not in customer
    # no bar for temporary refusals (today, in 30 days) nor greylisting (the same), no part of today's column
    assert customer.count("<rect") == support.count("<rect") - 5
    clock.advance(2 * 86400)
    later = main(logged_in(app, "customer").get("/dashboard").text)
    assert "No mail in this period." in later[later.index('id="today"') : later.index('id="days"')]
    assert "9 recipient(s)" in later[later.index('id="month"') :]


def test_todays_counts_are_kept_for_a_minute(app: Any, store: Store, clock: Clock) -> None:
    support = logged_in(app, "support")

    def today() -> str:
        page = main(support.get("/dashboard").text)
        return page[page.index('id="today"') : page.index('id="days"')]

    assert "13 recipient(s)" in today()
    late = Session(store, "1AAAAAAAAAX9", T0 + 25 * MINUTE)
    late.mail("late@sender.test")
    late.refuse("rcpt.unknown_user", 550, "5.1.1", "rcpt", recipient="nobody@a.test")
    late.close()
    store.flush()
    clock.advance(59)
    assert "13 recipient(s)" in today()
    clock.advance(2)
    assert "14 recipient(s)" in today()


# ---------------------------------------------------------------------------- stranger text
def test_stranger_text_is_inert_in_search_results_and_dashboard_labels(app: Any, store: Store) -> None:
    session = Session(store, "1AAAAAAAAAX0", T0 + 25 * MINUTE, client_ip="192.0.2.50")
    session.mail(XSS_SENDER)
    session.refuse(XSS_REASON, 550, "5.7.1", "rcpt", recipient='"<img src=y onerror=alert(2)>"@a.test')
    session.close()
    store.flush()
    support = logged_in(app, "support")
    for path, params in (
        ("/search", {"since": "1h"}),
        ("/search", {"reason": XSS_REASON}),
        ("/search", {"sender": XSS_SENDER, "since": "<script>alert('since')</script>"}),
        ("/dashboard", {}),
    ):
        page = support.get(path, params=params).text
        for marker in ("<script>alert(", "<img src=x onerror", "<img src=y onerror"):
            assert marker not in page, (path, params, marker)
        assert "&lt;script&gt;alert(" in page or "&lt;img src=" in page, (path, params)
    assert support.get("/api/search", params={"reason": XSS_REASON}).json()["rows"][0]["reason"] == XSS_REASON


def test_a_cursor_whose_time_no_store_holds_is_refused_as_no_cursor_not_a_server_error(app: Any) -> None:
    """Found by the API's schema fuzzing: a cursor's time of 36 digits overflowed the database
    driver's 64-bit integer and answered 500."""
    support = logged_in(app, "support")
    for name in ("cursor", "before"):
        answer = support.get("/api/search", params={name: "889831095543693884219242053399103932_\U000201d3"})
        assert answer.status_code == 422, answer.text
        assert answer.json()["detail"][0]["loc"] == ["query", name]
        page = support.get("/search", params={name: f"{1 << 63}_key"})
        assert page.status_code == 400


def test_an_event_id_no_store_holds_is_no_message_not_a_server_error(app: Any) -> None:
    """`E<event id>` names a message by any of its events; an id beyond 64 bits overflowed the
    database driver and answered 500."""
    support = logged_in(app, "support")
    for path in (f"/api/messages/E{1 << 63}", f"/api/messages/E{10**40}/explain", f"/message/E{10**40}"):
        assert support.get(path).status_code == 404, path


def test_a_duration_too_long_for_any_stored_time_is_named_as_a_bad_field_not_a_server_error(app: Any) -> None:
    """ "99999999999999999999d" ago is 8.6e30 microseconds before the epoch: the database driver
    overflowed on it (and a duration of 400 digits on its way to an integer)."""
    support = logged_in(app, "support")
    for since in ("99999999999999999999d", "9" * 400 + "w"):
        answer = support.get("/api/search", params={"since": since})
        assert answer.status_code == 422, answer.text
        assert answer.json()["detail"][0]["loc"] == ["query", "since"]


def test_an_audit_page_older_than_an_id_no_store_holds_is_refused_not_a_server_error(app: Any, store: Store) -> None:
    """The audit log pages by id; `before` beyond 64 bits reached the database driver."""
    accounts.add(store, "boss", "admin", (), PASSWORD)
    admin = TestClient(app, base_url="http://testserver", client=("192.0.2.98", 1), follow_redirects=False)
    assert log_in(admin, "boss") == 303
    assert admin.get("/api/audit", params={"before": 1 << 63}).status_code == 422
    assert admin.get("/audit", params={"before": 1 << 63}).status_code in (400, 422)
    assert admin.get("/api/audit", params={"before": (1 << 63) - 1}).status_code == 200
