"""`mailwarden ingest`: imports into the configured store, summarises, and explains what it cannot do."""

from __future__ import annotations

import io
import sys
from pathlib import Path

import pytest

from mailwarden.cli import main
from mailwarden.store import EventQuery
from tests.support.stores import Opener

LOG = """\
Nov 28 04:44:17 mta postfix/smtpd[6917]: connect from client.example[192.0.2.9]
Nov 28 04:44:17 mta postfix/smtpd[6917]: NOQUEUE: reject: RCPT from client.example[192.0.2.9]: 550 5.1.1 <n@x.test>: Recipient address rejected: User unknown in virtual mailbox table; from=<a@b.test> to=<n@x.test> proto=ESMTP helo=<c>
Nov 28 04:44:17 mta postfix/smtpd[6917]: disconnect from client.example[192.0.2.9] ehlo=1 mail=1 rcpt=0/1 quit=1 commands=3/4
Nov 28 04:44:18 mta sshd[1]: Accepted publickey for root
Nov 28 04:44:18 mta postfix/master[1]: daemon started -- version 3.7.11, configuration /etc/postfix
"""


@pytest.fixture
def config(tmp_path: Path, store_url: str) -> Path:
    """A configuration naming the test's store, on each backend."""
    path = tmp_path / "config.toml"
    path.write_text(f'[store]\nurl = "{store_url}"\n[node]\nname = "t"\n[ingest]\ntimezone = "UTC"\n')
    return path


def _kinds(open_node: Opener) -> list[str]:
    return [event.kind for event in open_node().query_events(EventQuery())]


def test_import_stores_events_and_prints_a_summary(
    config: Path, open_node: Opener, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    log = tmp_path / "mail.log"
    log.write_text(LOG)
    assert main(["-c", str(config), "ingest", "--no-progress", str(log)]) == 0
    out = capsys.readouterr().out
    assert "lines: 5 in" in out
    assert "events: 4 (" in out and "reject 1" in out
    assert "ignored lines (understood, nothing to record): 1" in out
    assert "unknown lines (kept as `unknown` events): 1" in out and "  sshd: 1" in out
    assert _kinds(open_node) == ["connect", "reject", "disconnect", "unknown"]


def test_standard_input_is_read_with_a_dash(
    config: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(LOG.encode())))
    assert main(["-c", str(config), "ingest", "-"]) == 0
    assert "lines: 5 in" in capsys.readouterr().out


def test_a_missing_file_is_named_and_nothing_is_stored(
    config: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["-c", str(config), "ingest", str(tmp_path / "nope.log")]) == 2
    assert "no such file" in capsys.readouterr().err


def test_stdin_cannot_be_followed(config: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["-c", str(config), "ingest", "--follow", "-"]) == 2
    assert "standard input cannot be followed" in capsys.readouterr().err


def test_an_unknown_format_is_refused_with_the_choices(config: Path, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        main(["-c", str(config), "ingest", "--format", "sendmail", "x"])
    assert "postfix" in capsys.readouterr().err


def test_a_forced_format_reads_every_line_with_that_parser(
    config: Path, open_node: Opener, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    log = tmp_path / "dovecot.log"
    log.write_text("2026-11-28 04:40:54 lmtp(bob@x.test)<1><S>: Info: msgid=<m@x>: saved mail to INBOX\n")
    assert main(["-c", str(config), "ingest", "--format", "dovecot", "--node", "imap1", str(log)]) == 0
    (event,) = open_node().query_events(EventQuery())
    assert (event.kind, event.node, event.recipient) == ("deliver", "imap1", "bob@x.test")


def test_a_size_beyond_64_bits_is_left_out_not_a_store_write_that_fails_the_import(
    config: Path, open_node: Opener, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A log line is anyone's text: its size of 25 digits made an event no store column holds, and the import failed."""
    log = tmp_path / "mail.log"
    log.write_text(
        "Nov 28 04:43:17 mta postfix/qmgr[19311]: A59FE214716: from=<a@b.test>, size="
        + "9" * 25
        + ", nrcpt=1 (queue active)\n"
        "Nov 28 04:43:18 mta postfix/smtp[19439]: A59FE214716: to=<c@d.test>, relay=r[192.0.2.1]:25, delay=0.2, "
        "delays=0.01/0.01/0/0.01, dsn=2.0.0, status=sent (250 ok)\n"
    )
    assert main(["-c", str(config), "ingest", "--no-progress", str(log)]) == 0, capsys.readouterr().err
    (delivered,) = open_node().query_events(EventQuery())
    assert (delivered.kind, delivered.recipient, delivered.size) == ("deliver", "c@d.test", None)
