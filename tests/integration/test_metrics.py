"""/metrics and /health of a node (issue 14, "Operations"), scraped from a real `mailwarden serve`.

Mail is sent over SMTP to two SMTP workers; one scrape of the supervisor's listener must show the
exact counts of both together, by outcome and catalog reason. POP3 sessions and logins, and the
health check going to 503 when the evidence of a transaction cannot be kept anywhere (PostgreSQL
down and the event spool not writable).
"""

from __future__ import annotations

import smtplib
import urllib.error
import urllib.request
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.integration.test_workers import slot_of
from tests.support.mailwarden import Mailwarden, running
from tests.support.net import free_port
from tests.support.pop3 import Device, message
from tests.support.postgres import Postgres

pytestmark = pytest.mark.integration

BOB = "bob@example.test"
Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


def metrics_listen() -> dict[str, str]:
    return {"listen": f"127.0.0.1:{free_port()}"}


def get(server: Mailwarden, path: str) -> tuple[int, str]:
    url = f"http://{server.sections['metrics']['listen']}{path}"
    try:
        with urllib.request.urlopen(url, timeout=30) as answer:
            return int(answer.status), answer.read().decode()
    except urllib.error.HTTPError as error:
        return error.code, error.read().decode()


def scrape(server: Mailwarden) -> Samples:
    status, text = get(server, "/metrics")
    assert status == 200, text
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def by_label(samples: Samples, name: str, *labels: str) -> dict[tuple[str, ...], float]:
    """The samples of one metric, keyed by the values of `labels` (series with nothing counted left out)."""
    found = {}
    for (sample, pairs), value in samples.items():
        if sample == name and value:
            given = dict(pairs)
            found[tuple(given[label] for label in labels)] = value
    return found


def send(port: int, recipients: list[str], source: str = "127.0.0.1") -> None:
    """One message over a connection of its own; refused recipients are what some tests want."""
    with smtplib.SMTP("127.0.0.1", port, source_address=(source, 0), timeout=30) as client:
        try:
            client.sendmail("ann@example.org", recipients, message(1))
        except smtplib.SMTPRecipientsRefused:
            pass


def test_one_scrape_counts_every_workers_accepted_and_refused_mail_by_outcome_and_reason(tmp_path: Path) -> None:
    overrides = {"smtp": {"workers": 2}, "metrics": metrics_listen()}
    with running(tmp_path / "mw", overrides) as server:
        before = scrape(server)
        assert by_label(before, "mailwarden_smtp_decisions_total", "outcome", "reason") == {}
        assert before[("mailwarden_smtp_workers", frozenset())] == 2
        sources = [f"127.0.0.{10 + n}" for n in range(16)]  # 16 connections: on one worker with odds of 1 in 32,768
        for n, source in enumerate(sources):
            recipients = [BOB] if n % 2 == 0 else ["nobody@example.test"] if n % 4 == 1 else ["eve@example.org"]
            send(server.smtp_port, recipients, source)
        connects = [e for e in server.events() if e["kind"] == "connect"]
        assert len({slot_of(e["session"]) for e in connects}) == 2, "the connections did not reach both workers"

        samples = scrape(server)
        assert by_label(samples, "mailwarden_smtp_decisions_total", "outcome", "reason") == {
            ("accepted", "delivered"): 8,
            ("rejected", "rcpt.unknown_user"): 4,
            ("rejected", "rcpt.relay_denied"): 4,
        }
        # every RCPT went through the recipients check, in whichever worker
        assert by_label(samples, "mailwarden_check_seconds_count", "check")[("recipients",)] == 16
        assert samples[("mailwarden_event_writer_failing", frozenset())] == 0
        assert get(server, "/health") == (200, "ok\n")


def test_pop3_sessions_and_logins_are_counted_by_outcome(tmp_path: Path) -> None:
    port = free_port()
    overrides = {
        "pop3": {"listen": [f"127.0.0.1:{port}"], "allow_plaintext_auth": True, "auth_failure_delay": 0.0},
        "metrics": metrics_listen(),
    }
    with running(tmp_path / "mw", overrides) as server:
        send(server.smtp_port, [BOB])
        wrong = Device(port)
        with pytest.raises(Exception, match="Invalid user name or password"):
            wrong.user(BOB)
            wrong.pass_("not the password")
        wrong.quit()
        reader = Device(port)
        reader.user(BOB)
        reader.pass_("secret")
        during = scrape(server)
        reader.quit()
        after = scrape(server)

    assert during[("mailwarden_pop3_sessions_open", frozenset())] == 1
    assert after[("mailwarden_pop3_sessions_open", frozenset())] == 0
    assert after[("mailwarden_pop3_sessions_total", frozenset())] == 2
    assert by_label(after, "mailwarden_pop3_logins_total", "outcome") == {("ok",): 1, ("access.login_failed",): 1}


def test_health_answers_503_with_the_reason_while_the_events_cannot_be_kept_and_200_otherwise(
    postgres: Postgres, tmp_path: Path
) -> None:
    root = tmp_path / "mw"
    (root / "var").mkdir(parents=True)
    (root / "var" / "blocked").write_text("a file where the spool's directory should be")
    overrides = {
        "store": {"url": postgres.new_database(), "spool_dir": "var/blocked/spool"},  # the spool cannot be written
        "smtp": {"workers": 1},  # the worker that found bob's mailbox finds it while the database is away
        "metrics": metrics_listen(),
    }
    with running(root, overrides) as server:
        send(server.smtp_port, [BOB])
        assert get(server, "/health") == (200, "ok\n")
        postgres.stop()
        try:
            with (
                smtplib.SMTP("127.0.0.1", server.smtp_port, timeout=30) as client,
                pytest.raises(smtplib.SMTPDataError) as refused,
            ):
                client.sendmail("ann@example.org", [BOB], message(1))
            status, reason = get(server, "/health")
            samples = scrape(server)
        finally:
            postgres.start()

    assert (refused.value.smtp_code, refused.value.smtp_error[:5]) == (451, b"4.3.0")
    assert status == 503
    assert reason.startswith("events cannot be committed: the event spool"), reason
    assert "cannot be written" in reason and len(reason.splitlines()) == 1
    assert samples[("mailwarden_event_writer_failing", frozenset())] == 1
    assert samples[("mailwarden_healthy", frozenset())] == 0
    decisions = by_label(samples, "mailwarden_smtp_decisions_total", "outcome", "reason")
    # the refusal is counted while its own event still waits for a place to be kept
    assert decisions == {("accepted", "delivered"): 1, ("tempfailed", "infra.event_spool_full"): 1}
