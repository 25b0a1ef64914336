"""Tried as a new user would: only the README's commands, against a real `mailwarden serve`.

A support agent traces a mail by recipient and time with the README's "Where is my mail?"
section and gets a customer-ready explanation; a newcomer runs `mailwarden demo` and sees traces.
"""

from __future__ import annotations

import re
import shlex
import smtplib
from pathlib import Path

import pytest

from tests.support.mailwarden import Mailwarden

pytestmark = pytest.mark.integration

README = Path(__file__).resolve().parents[2] / "README.md"


def readme_section(title: str) -> str:
    text = README.read_text()
    start = text.index(f"## {title}")
    end = text.find("\n## ", start + 3)
    return text[start : end if end != -1 else None]


def shell_commands(section: str) -> list[list[str]]:
    """The `mailwarden ...` lines of the section's ```sh blocks, as argument lists."""
    blocks = re.findall(r"```sh\n(.*?)```", section, re.S)
    return [
        shlex.split(line.split("#")[0])[1:]
        for block in blocks
        for line in block.splitlines()
        if line.startswith("mailwarden ")
    ]


def test_support_agent_traces_by_recipient_and_time_and_gets_a_customer_ready_report(gateway: Mailwarden) -> None:
    with smtplib.SMTP("127.0.0.1", gateway.smtp_port) as client:
        client.sendmail(
            "alice@sender.test",
            ["bob@example.test"],
            b"Subject: invoice\r\nMessage-ID: <nb@sender.test>\r\n\r\nHi Bob\r\n",
        )
    trace_args, explain_args = shell_commands(readme_section("Where is my mail?"))
    assert trace_args[:3] == ["trace", "--to", "bob@example.test"] and explain_args[0] == "explain"
    listing = gateway.cli(*trace_args).stdout
    assert "bob@example.test" in listing and "delivered" in listing
    trace_id = listing.splitlines()[1].split()[2]  # TIME is two columns: date and time
    report = gateway.cli("explain", trace_id, *explain_args[2:]).stdout
    for heading in (
        "Nachweisbericht",
        "Status: delivered",
        "Was geschah:",
        "Wer handeln muss: niemand",
        "Was zu tun ist:",
    ):
        assert heading in report, heading
    assert "im Postfach bob@example.test (Ordner INBOX) abgelegt" in report
    assert "SHA-256 der Nachweise:" in report


def test_demo_plays_examples_that_the_trace_then_shows(gateway: Mailwarden) -> None:
    out = gateway.cli("demo").stdout
    assert "accepted" in out and "250 2.0.0" in out
    assert "550 5.1.1" in out and "554 5.7.1" in out  # the typo and the relay attempt
    assert "not configured" in out  # says which examples this configuration cannot show
    listing = gateway.cli("trace", "--since", "10m", "--from", "demo-sender@sender.example").stdout
    for status in ("delivered", "rejected"):
        assert status in listing
    assert "rcpt.unknown_user" in listing and "rcpt.relay_denied" in listing
    typo = gateway.cli("trace", "--reason", "rcpt.unknown_user", "--format", "json").stdout
    assert "bbo@example.test" in typo
