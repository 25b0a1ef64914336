"""The JSON API against its own OpenAPI schema (schemathesis), on a real `mailwarden serve`.

Two ways in. First, every command line call the API mirrors is asked a real question - a message
the gateway refused, its report in every format, that report to verify, a bounce naming its ref,
a sender domain, a search and counts that find it - and each answer must be a 200 that matches
the schema (status code, content type, body). Then every operation gets generated requests,
logged in as support with the session's CSRF token: no answer may be a 5xx, and every answer
must match the schema. Bounded: a few hundred examples in all, no shrinking of failures past
that. The search fields take the command line's grammar (`7d` or an ISO time, an address or
`@domain`, an address or a network), which no JSON Schema pattern spells out; there a 422 naming
the field is the right answer to a string the schema admits, so that one check is left out for
the search and the counts.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
import schemathesis
from hypothesis import HealthCheck, Phase, given, settings
from schemathesis.checks import positive_data_acceptance

from tests.support.web import PASSWORD, Center, center

pytestmark = pytest.mark.integration

EXAMPLES = 40  # per operation; 12 operations
FREE_TEXT = {"/api/search", "/api/counts"}  # fields with the command line's grammar (see above)
# What the API mirrors: operation -> the command line it answers like.
MIRRORS = {
    "GET /api/search": "mailwarden trace",
    "GET /api/counts": "mailwarden trace --count",
    "GET /api/messages/{trace_id}": "mailwarden trace ID",
    "GET /api/messages/{trace_id}/explain": "mailwarden explain --format json",
    "GET /api/messages/{trace_id}/report": "mailwarden explain --format html|pdf|json|csv|text",
    "POST /api/reports/verify": "mailwarden verify-report",
    "POST /api/bounces/explain": "mailwarden explain-bounce",
    "GET /api/sender-check": "mailwarden check-sender --format json",
}
OTHERS = {"GET /api/session", "POST /api/session", "DELETE /api/session", "GET /api/audit"}
REPORT_FORMATS = ("html", "pdf", "json", "csv", "text")
Auth = tuple[dict[str, str], dict[str, str]]


@pytest.fixture(scope="module")
def web(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Center]:
    with center(tmp_path_factory.mktemp("web"), why_per_minute=10_000) as running:
        yield running


@pytest.fixture(scope="module")
def schema(web: Center) -> Any:
    return schemathesis.openapi.from_url(f"{web.url}/api/openapi.json")


def _auth(web: Center, name: str, password: str) -> Iterator[Auth]:
    with web.api(name, password) as (client, token):
        yield {"x-csrf-token": token}, {"mw_session": client.cookies["mw_session"]}


@pytest.fixture(scope="module")
def support(web: Center) -> Iterator[Auth]:
    yield from _auth(web, "support", PASSWORD)


@pytest.fixture(scope="module")
def admin(web: Center) -> Iterator[Auth]:
    yield from _auth(web, "admin", web.admin_password)


def _operations(schema: Any) -> dict[str, Any]:
    return {f"{op.method.upper()} {op.path}": op for op in (loaded.ok() for loaded in schema.get_all_operations())}


def test_the_schema_has_an_operation_for_every_command_the_api_mirrors(schema: Any) -> None:
    assert set(_operations(schema)) == set(MIRRORS) | OTHERS


def test_every_mirrored_command_answers_a_real_question_within_its_schema(
    web: Center, schema: Any, support: Auth, admin: Auth
) -> None:
    operations = _operations(schema)
    refused = web.refs["unknown"]

    def ask(name: str, auth: Auth = support, **case: Any) -> Any:
        asked = operations[name].Case(**case)
        answer = asked.call_and_validate(headers=auth[0], cookies=auth[1], timeout=60)
        assert answer.status_code == 200, (name, case, answer.text)
        return answer

    found = ask("GET /api/search", query={"recipient": "nobody@example.test", "since": "1d"}).json()
    assert refused in [row["id"] for row in found["rows"]]
    assert ask("GET /api/counts", query={"recipient": "nobody@example.test"}).json()["by_status"]["rejected"] >= 1
    detail = ask("GET /api/messages/{trace_id}", path_parameters={"trace_id": refused}).json()
    assert detail["recipients"][0]["reason"] == "rcpt.unknown_user"
    verdict = ask("GET /api/messages/{trace_id}/explain", path_parameters={"trace_id": refused}, query={"lang": "de"})
    assert verdict.json()["lang"] == "de" and verdict.json()["responsibility"] == "sender"
    reports = {
        fmt: ask("GET /api/messages/{trace_id}/report", path_parameters={"trace_id": refused}, query={"format": fmt})
        for fmt in REPORT_FORMATS
    }
    assert reports["pdf"].content.startswith(b"%PDF") and reports["json"].json()["id"] == refused
    for fmt in ("pdf", "json", "csv", "html"):
        checked = ask(
            "POST /api/reports/verify", body=reports[fmt].content, media_type="application/octet-stream"
        ).json()
        assert checked["ok"] and checked["id"] == refused, (fmt, checked)
    bounce = f"550 5.1.1 <nobody@example.test>: Recipient address rejected ref={refused}"
    linked = ask("POST /api/bounces/explain", body=bounce.encode(), media_type="text/plain").json()
    assert [trace["id"] for trace in linked["traces"]] == [refused]
    checked_sender = ask("GET /api/sender-check", query={"target": "sender.test"}).json()
    assert checked_sender["domain"] == "sender.test" and "ok" in checked_sender  # DNS answers nothing here
    assert ask("GET /api/session").json()["account"] == "support"
    assert any(entry["action"] == "report.verify" for entry in ask("GET /api/audit", admin).json())


def test_the_api_answers_every_request_within_its_schema_and_never_with_a_server_error(
    schema: Any, support: Auth
) -> None:
    headers, cookies = support
    tested = []
    for name, operation in _operations(schema).items():
        if name == "DELETE /api/session":
            continue  # logging out would end the session the other cases use

        @given(case=operation.as_strategy())
        @settings(
            max_examples=EXAMPLES,
            deadline=None,
            phases=[Phase.explicit, Phase.generate],
            suppress_health_check=list(HealthCheck),
            database=None,
        )
        def run(case: schemathesis.Case) -> None:
            excluded = [positive_data_acceptance] if case.operation.path in FREE_TEXT else []
            case.call_and_validate(headers=headers, cookies=cookies, timeout=60, excluded_checks=excluded)

        run()
        tested.append(name)
    assert set(tested) == set(MIRRORS) | OTHERS - {"DELETE /api/session"}
