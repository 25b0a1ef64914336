"""Reports: stranger-controlled text never injects markup or formulas; third parties stay masked."""

from __future__ import annotations

import csv
import io

import pytest

from mailwarden.events import Event
from mailwarden.store import Store
from mailwarden.trace import listing, report
from mailwarden.trace.search import SearchSpec, search

T0 = 1_800_000_000_000_000
HOSTILE_HELO = "<script>alert(1)</script>"


def stranger_message(store: Store) -> None:
    """`store` with one message of stranger-controlled values."""
    common = {
        "source": "gateway",
        "node": "mx1",
        "ref": "1AAAAAAAAAA0",
        "session": "1AAAAAAAAAA0",
        "client_ip": "192.0.2.1",
    }
    sender = '=HYPERLINK("http://x")@evil.test'
    store.append_many(
        [
            Event(kind="connect", ts=T0, **common),
            Event(kind="helo", ts=T0 + 1, helo=HOSTILE_HELO, **common),
            Event(kind="mail", ts=T0 + 2, helo=HOSTILE_HELO, sender=sender, **common),
            Event(
                kind="rcpt",
                ts=T0 + 3,
                sender=sender,
                recipient="bob@example.test",
                detail={"mailbox": "bob@example.test"},
                **common,
            ),
            Event(
                kind="rcpt",
                ts=T0 + 4,
                sender=sender,
                recipient="carol@example.test",
                detail={"mailbox": "carol@example.test"},
                **common,
            ),
            Event(kind="data", ts=T0 + 5, sender=sender, size=10, message_id="<x\u202e\x1b[2J@evil.test>", **common),
            Event(
                kind="reject",
                ts=T0 + 6,
                sender=sender,
                smtp_code=554,
                enhanced_code="5.7.1",
                reply="554 5.7.1 Virus <img src=x onerror=alert(2)> found; carol@example.test was a recipient ref=1AAAAAAAAAA0",
                reason="msg.virus",
                detail={"stage": "data", "values": {"virus": "<b>Evil</b> \u2603", "where": "the attachment a.exe"}},
                **common,
            ),
        ]
    )
    store.flush()


def test_html_report_escapes_every_stranger_controlled_value(store: Store) -> None:
    stranger_message(store)
    page = report.as_html(report.build(store, "1AAAAAAAAAA0", recipient="bob@example.test", now=T0 + 10))
    assert "<script>" not in page and "&lt;script&gt;alert(1)&lt;/script&gt;" in page
    assert "<img" not in page and "<b>Evil" not in page
    assert "\x1b" not in page and "\u202e" not in page


def test_a_report_for_one_recipient_masks_the_other_recipients(store: Store) -> None:
    stranger_message(store)
    made = report.build(store, "1AAAAAAAAAA0", recipient="bob@example.test", now=T0 + 10)
    text = report.as_text(made)
    open_text = report.as_text(
        report.build(store, "1AAAAAAAAAA0", recipient="bob@example.test", redact=False, now=T0 + 10)
    )
    assert "carol@example.test" not in text and "c***@e***.test" in text
    assert "bob@example.test" in text
    assert "carol@example.test" in open_text
    assert made.diagnosis.status == "rejected" and made.diagnosis.reason == "msg.virus"


def test_pdf_report_renders_any_text_offline(store: Store) -> None:
    stranger_message(store)
    pdf = report.as_pdf(report.build(store, "1AAAAAAAAAA0", lang="de", now=T0 + 10))
    assert pdf.startswith(b"%PDF") and report.MANIFEST_MARK.encode() in pdf


def test_csv_output_cannot_smuggle_a_spreadsheet_formula(store: Store) -> None:
    stranger_message(store)
    result = search(store, SearchSpec(), retention_days=3650, now=T0)
    rows = list(csv.DictReader(io.StringIO(listing.as_csv(result))))
    assert len(rows) == 2
    assert all(row["sender"].startswith("'=HYPERLINK(") for row in rows)


def test_the_csv_report_is_verified_like_the_other_formats(store: Store) -> None:
    stranger_message(store)
    made = report.build(store, "1AAAAAAAAAA0", recipient="bob@example.test", now=T0 + 10)
    data = report.render(made, "csv")
    rows = list(csv.reader(io.StringIO(data.decode())))
    assert rows[0] == list(report.CSV_COLUMNS)
    assert {row[0] for row in rows[1:]} >= {"verdict", "connection", "timeline", "evidence", "manifest"}
    assert report.verify_bytes(store, data).ok
    tampered = data.replace(b"554 5.7.1 Virus", b"250 2.0.0 Okay")
    assert not report.verify_bytes(store, tampered).ok


def test_explaining_a_session_without_a_message_names_what_it_was(store: Store) -> None:
    store.append(
        Event(
            kind="login",
            source="pop3",
            node="mx1",
            ts=T0,
            ref="1AAAAAAAAAP0",
            session="1AAAAAAAAAP0",
            recipient="bob@example.test",
            client_ip="203.0.113.5",
            reason="access.login_failed",
        )
    )
    store.flush()
    with pytest.raises(report.ReportError, match=r"without a message \(pop3 login \(access.login_failed\)\)"):
        report.build(store, "1AAAAAAAAAP0", now=T0)


def test_a_clean_content_scan_that_only_added_headers_is_listed_as_passed_not_as_a_finding(store: Store) -> None:
    common = {"source": "gateway", "node": "mx1", "ref": "1AAAAAAAAAB0", "session": "1AAAAAAAAAB0"}
    clean = {"check": "content", "ms": 1.0, "result": "tag", "reason": "delivered"}
    junk = {"check": "content", "ms": 1.0, "result": "tag", "reason": "delivered.junk"}
    store.append_many(
        [
            Event(kind="connect", ts=T0, client_ip="192.0.2.1", **common),
            Event(kind="rcpt", ts=T0 + 1, recipient="bob@example.test", detail={"checks": [clean]}, **common),
            Event(kind="data", ts=T0 + 2, size=10, detail={"checks": [junk]}, **common),
        ]
    )
    store.flush()
    text = report.as_text(report.build(store, "1AAAAAAAAAB0", now=T0 + 10))
    lines = [line.rstrip() for line in text.splitlines()]
    assert any(line.endswith("(checks passed: content)") for line in lines)
    assert not any(line.endswith("Check content: tag delivered") for line in lines)
    assert any(line.endswith("Check content: tag delivered.junk") for line in lines)
