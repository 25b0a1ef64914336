"""What a stranger (or a broken mail program) can do to the POP3 server: precise errors, no traceback,
no hang, and never a lost or wrongly deleted message."""

from __future__ import annotations

import base64
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.mailwarden import Mailwarden, running
from tests.support.net import free_port
from tests.support.pop3 import RawPop3, message, send, wait_events

pytestmark = pytest.mark.integration

MAX_ERRORS = 10
MAX_FAILURES = 3


@pytest.fixture(scope="module")
def mx(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Mailwarden]:
    port = free_port()
    overrides = {
        "pop3": {
            "listen": [f"127.0.0.1:{port}"],
            "allow_plaintext_auth": True,
            "max_errors": MAX_ERRORS,
            "auth_failure_delay": 0.05,
            "auth_max_failures": MAX_FAILURES,
            "auth_lock_seconds": 600,
        }
    }
    users = (
        "bob@example.test",
        "dave@example.test",
        "erin@example.test",
        "frank@example.test",
        "alice@example.test",
        "gina@example.test",
        "henry@example.test",
    )
    with running(tmp_path_factory.mktemp("mx"), overrides, users=users) as mw:
        mw.pop3_port = port  # type: ignore[attr-defined]
        yield mw


def connect(mx: Mailwarden, source: str = "127.0.0.1") -> RawPop3:
    return RawPop3(mx.pop3_port, source=source)  # type: ignore[attr-defined]


def logged_in(mx: Mailwarden, user: str, source: str = "127.0.0.1") -> RawPop3:
    raw = connect(mx, source)
    assert raw.login(user).startswith(b"+OK Logged in")
    return raw


def test_unknown_commands_get_an_error_and_too_many_close_the_connection(mx: Mailwarden) -> None:
    raw = connect(mx)
    assert raw.command(b"XYZZY foo") == b"-ERR Unknown command XYZZY"
    assert raw.command(b"") == b"-ERR Unknown command (empty line)"
    assert raw.command(b"\x00\x1b[2J\xff") == b"-ERR Unknown command \\x00\\x1b[2J\\xff"
    assert raw.command(b"NOOP").startswith(b"-ERR NOOP is only valid after login")
    for _ in range(MAX_ERRORS - 5):
        assert raw.command(b"GET / HTTP/1.1") == b"-ERR Unknown command GET"
    assert raw.command(b"GET / HTTP/1.1") == b"-ERR Unknown command GET (too many errors: closing)"
    assert raw.rest() == b""
    raw.close()
    (disconnect,) = wait_events(
        mx.events, lambda e: e["kind"] == "disconnect" and e["detail"]["reason"] == "too many errors"
    )
    assert disconnect["detail"]["errors"] == MAX_ERRORS


def test_an_overlong_line_is_refused_and_the_session_goes_on(mx: Mailwarden) -> None:
    raw = connect(mx)
    assert raw.command(b"USER " + b"x" * 300) == b"-ERR Line too long: the limit is 255 octets"
    assert raw.command(b"NOOP " + b"y" * 200_000) == b"-ERR Line too long: the limit is 255 octets"
    assert raw.login("bob@example.test").startswith(b"+OK Logged in")
    assert raw.command(b"QUIT").startswith(b"+OK")
    raw.close()


def test_a_line_without_end_is_cut_off_after_a_megabyte(mx: Mailwarden) -> None:
    raw = connect(mx)
    raw.send(b"A" * (3 * 1024 * 1024))
    assert raw.line() == b"-ERR Line too long; closing"
    raw.close()


def test_commands_in_the_wrong_state_are_refused_without_effect(mx: Mailwarden) -> None:
    raw = connect(mx)
    for command in (b"STAT", b"LIST", b"RETR 1", b"DELE 1", b"UIDL", b"TOP 1 0", b"RSET"):
        assert raw.command(command).endswith(b"is only valid after login")
    assert raw.command(b"PASS secret") == b"-ERR Send USER first"
    raw.close()
    raw = logged_in(mx, "dave@example.test")
    assert raw.command(b"USER dave@example.test") == b"-ERR USER is only valid before login"
    assert raw.command(b"STLS") == b"-ERR STLS is only valid before login"
    assert raw.command(b"RETR 99").startswith(b"-ERR No such message")
    assert raw.command(b"DELE x") == b"-ERR Give a message number"
    assert raw.command(b"TOP 1") == b"-ERR TOP needs a message number and a number of lines"
    assert raw.command(b"QUIT").startswith(b"+OK")
    raw.close()


def test_malformed_sasl_plain_is_refused(mx: Mailwarden) -> None:
    raw = connect(mx)
    assert (
        raw.command(b"AUTH PLAIN !!notbase64")
        == b"-ERR [AUTH] Malformed PLAIN response (RFC 4616: [authzid] NUL user NUL password)"
    )
    as_someone_else = base64.b64encode(b"bob@example.test\0dave@example.test\0secret")
    assert raw.command(b"AUTH PLAIN " + as_someone_else).startswith(b"-ERR [AUTH] Malformed")
    assert raw.command(b"AUTH CRAM-MD5").startswith(b"-ERR Unsupported authentication mechanism")
    assert raw.command(b"AUTH PLAIN") == b"+ "
    assert raw.command(b"*") == b"-ERR Authentication cancelled"
    raw.close()


def test_wrong_passwords_slow_down_then_lock_the_user_even_for_the_right_password(mx: Mailwarden) -> None:
    raw = connect(mx, "127.0.0.21")
    for _ in range(MAX_FAILURES):
        reply = raw.login("erin@example.test", "wrong")
        assert reply.startswith(b"-ERR [AUTH] Invalid user name or password ref=")
    assert raw.login("erin@example.test", "secret").startswith(b"-ERR [AUTH] Too many failed logins from this address")
    raw.close()
    # The user is locked too: the right password from another address is refused as well.
    other = connect(mx, "127.0.0.22")
    assert other.login("erin@example.test", "secret").startswith(b"-ERR [AUTH] Too many failed logins for this user")
    other.close()
    events = wait_events(mx.events, lambda e: e["kind"] == "login" and e["recipient"] == "erin@example.test", 5)
    failed = [e for e in events if e["reason"] == "access.login_failed"]
    assert [e["detail"]["failures"] for e in failed] == [1, 2, 3]
    assert [e["detail"]["delay"] for e in failed] == [0.05, 0.1, 0.2]  # growing delay (configured, not measured)
    assert all(e["detail"]["problem"] == "wrong password" and e["client_ip"] == "127.0.0.21" for e in failed)
    locked = [e for e in events if e["reason"] == "access.login_locked"]
    assert [(e["client_ip"], e["detail"]["scope"]) for e in locked] == [
        ("127.0.0.21", "address"),
        ("127.0.0.22", "user"),
    ]


def test_guessing_many_user_names_from_one_address_locks_the_address(mx: Mailwarden) -> None:
    raw = connect(mx, "127.0.0.31")
    for n in range(MAX_FAILURES):
        assert raw.login(f"nobody{n}@example.test", "guess").startswith(b"-ERR [AUTH] Invalid user name or password")
    assert raw.login("frank@example.test", "secret").startswith(b"-ERR [AUTH] Too many failed logins from this address")
    raw.close()
    fine = connect(mx, "127.0.0.32")  # frank himself, from elsewhere, is not locked
    assert fine.login("frank@example.test").startswith(b"+OK Logged in")
    fine.close()
    events = wait_events(mx.events, lambda e: e["kind"] == "login" and e["client_ip"] == "127.0.0.31", 4)
    assert [e["detail"]["problem"] for e in events[:3]] == ["no such mailbox"] * 3


def login_as(mx: Mailwarden, source: str, name: str, password: str = "secret") -> bytes:
    """One login attempt from `source`: by SASL PLAIN, so the name reaches the server exactly as given."""
    raw = connect(mx, source)
    try:
        credentials = base64.b64encode(b"\0" + name.encode() + b"\0" + password.encode())
        return raw.command(b"AUTH PLAIN " + credentials)
    finally:
        raw.close()


LOCKED_USER = b"-ERR [AUTH] Too many failed logins for this user"


def test_after_a_user_is_locked_every_spelling_of_her_name_is_locked_too(mx: Mailwarden) -> None:
    for _ in range(MAX_FAILURES):
        assert login_as(mx, "127.0.0.71", "alice@example.test", "wrong").startswith(b"-ERR [AUTH] Invalid")
    spellings = ["alice@example.test", "ALICE@Example.Test", " alice@example.test", "alice@example.test."]
    spellings += ["Alice@EXAMPLE.test..", " alice@example.test. ", "\talice@example.test\u00a0"]
    for number, spelling in enumerate(spellings):
        assert login_as(mx, f"127.0.0.{72 + number}", spelling).startswith(LOCKED_USER), spelling
    raw = connect(mx, "127.0.0.79")  # USER/PASS reads the name by the same rule
    assert raw.login("alice@example.test.").startswith(LOCKED_USER)
    raw.close()


def test_failed_logins_spread_over_spellings_of_one_name_count_together(mx: Mailwarden) -> None:
    assert login_as(mx, "127.0.0.81", "gina@example.test", "guess1").startswith(b"-ERR [AUTH] Invalid")
    assert login_as(mx, "127.0.0.82", "GINA@example.test.", "guess2").startswith(
        b"-ERR [AUTH] The user name is refused"
    )
    assert login_as(mx, "127.0.0.83", " gina@EXAMPLE.TEST", "guess3").startswith(b"-ERR [AUTH] Invalid")
    assert login_as(mx, "127.0.0.84", "gina@example.test").startswith(LOCKED_USER)
    events = wait_events(mx.events, lambda e: e["kind"] == "login" and e["recipient"] == "gina@example.test", 4)
    failed = [e for e in events if e["reason"] == "access.login_failed"]
    assert [(e["detail"]["failures"], e["detail"]["delay"]) for e in failed] == [(1, 0.05), (2, 0.1), (3, 0.2)]
    (locked,) = [e for e in events if e["reason"] == "access.login_locked"]
    assert (locked["detail"]["locked"], locked["detail"]["scope"]) == ("gina@example.test", "user")


def test_spellings_that_are_not_an_address_of_ours_are_refused_with_a_precise_reply_and_an_event(
    mx: Mailwarden,
) -> None:
    refused = {
        "henry@example.test.": "it ends with a dot",
        "henry": "it is not of the form local@domain",
        "\u00a0henry@example.test": "blank characters other than spaces surround it",
    }
    for number, (spelling, problem) in enumerate(refused.items()):
        reply = login_as(mx, f"127.0.0.{91 + number}", spelling)
        assert reply.startswith(
            f"-ERR [AUTH] The user name is refused: {problem}; "
            "log in with your mailbox address as local@domain ref=".encode()
        ), spelling
    events = wait_events(
        mx.events, lambda e: e["kind"] == "login" and e["client_ip"] in ("127.0.0.91", "127.0.0.92", "127.0.0.93"), 3
    )
    assert [(e["recipient"], e["reason"], e["detail"]["user"], e["detail"]["problem"]) for e in events] == [
        (
            "henry@example.test",
            "access.login_failed",
            "henry@example.test.",
            "user name refused: it ends with a dot",
        ),
        (None, "access.login_failed", "henry", "user name refused: it is not of the form local@domain"),
        (
            "henry@example.test",
            "access.login_failed",
            "\u00a0henry@example.test",
            "user name refused: blank characters other than spaces surround it",
        ),
    ]
    assert login_as(mx, "127.0.0.94", "Henry@Example.TEST").startswith(b"+OK Logged in")  # case does not matter


def test_a_login_name_that_is_not_utf8_is_refused_precisely(mx: Mailwarden) -> None:
    raw = connect(mx, "127.0.0.95")
    assert raw.command(b"USER \xffhenry@example.test").startswith(b"+OK")
    assert raw.command(b"PASS secret").startswith(
        b"-ERR [AUTH] The user name is refused: it is not valid UTF-8; log in with your mailbox address"
    )
    raw.close()
    (event,) = wait_events(mx.events, lambda e: e["kind"] == "login" and e["client_ip"] == "127.0.0.95")
    assert (event["recipient"], event["detail"]["problem"]) == (None, "user name refused: it is not valid UTF-8")


def test_a_connection_lost_before_quit_deletes_nothing(mx: Mailwarden) -> None:
    send(mx.smtp_port, "dave@example.test", message(21, "dave@example.test"))
    raw = logged_in(mx, "dave@example.test", "127.0.0.41")
    assert raw.command(b"RETR 1").startswith(b"+OK")
    raw.multiline()
    assert raw.command(b"DELE 1").startswith(b"+OK Message 1 marked")
    raw.close()  # no QUIT
    (logout,) = wait_events(mx.events, lambda e: e["kind"] == "logout" and e["client_ip"] == "127.0.0.41")
    assert logout["detail"]["reason"] == "lost"
    assert logout["detail"]["marked_not_deleted"] == 1 and logout["detail"]["deleted"] == 0
    assert len(mx.messages("dave@example.test")) == 1
    assert not [e for e in mx.events() if e["kind"] == "delete" and e["recipient"] == "dave@example.test"]
    again = logged_in(mx, "dave@example.test")
    assert again.command(b"STAT").startswith(b"+OK 1 ")
    assert again.command(b"QUIT").startswith(b"+OK")
    again.close()


def test_rset_takes_back_the_deletion_marks(mx: Mailwarden) -> None:
    raw = logged_in(mx, "dave@example.test")
    count = int(raw.command(b"STAT").split()[1])
    assert raw.command(b"DELE 1").startswith(b"+OK")
    assert raw.command(b"RETR 1") == b"-ERR Message 1 is marked as deleted"
    assert raw.command(b"RSET").startswith(b"+OK Maildrop has")
    assert raw.command(b"QUIT") == b"+OK Bye: 0 message(s) deleted"
    raw.close()
    assert len(mx.messages("dave@example.test")) == count


def test_a_second_session_for_the_same_mailbox_gets_in_use(mx: Mailwarden) -> None:
    first = logged_in(mx, "bob@example.test", "127.0.0.51")
    second = connect(mx, "127.0.0.52")
    assert second.login("bob@example.test").startswith(b"-ERR [IN-USE]")
    assert first.command(b"QUIT").startswith(b"+OK")
    first.close()
    assert second.login("bob@example.test").startswith(b"+OK Logged in")  # the lock went with the first session
    second.command(b"QUIT")
    second.close()
    (busy,) = wait_events(mx.events, lambda e: e["kind"] == "login" and e["reason"] == "access.in_use")
    assert busy["client_ip"] == "127.0.0.52" and busy["recipient"] == "bob@example.test"


def test_a_message_removed_under_a_running_session_is_reported_and_nothing_breaks(mx: Mailwarden) -> None:
    for n in (31, 32, 33):
        send(mx.smtp_port, "frank@example.test", message(n, "frank@example.test"))
    raw = logged_in(mx, "frank@example.test", "127.0.0.61")
    assert raw.command(b"STAT").startswith(b"+OK 3 ")
    cur = mx.maildir("frank@example.test") / "cur"
    first, second, third = sorted(cur.iterdir())
    first.unlink()  # another program removed message 1
    second.rename(cur / (second.name + "F"))  # another program flagged message 2 (a rename)
    assert raw.command(b"RETR 1") == b"-ERR Message 1 is no longer in the mailbox (removed by another program)"
    assert raw.command(b"RETR 2").startswith(b"+OK")
    assert b"Message-ID: <m32@sender.test>" in raw.multiline()
    assert raw.command(b"DELE 1").startswith(b"+OK")
    assert raw.command(b"DELE 2").startswith(b"+OK")
    assert raw.command(b"QUIT") == b"+OK Bye: 1 message(s) deleted"
    raw.close()
    assert [p.name for p in cur.iterdir()] == [third.name]
    (logout,) = wait_events(mx.events, lambda e: e["kind"] == "logout" and e["client_ip"] == "127.0.0.61")
    assert logout["detail"]["vanished"] == [first.name.partition(":")[0]] * 2  # at RETR and at QUIT
    (delete,) = [e for e in mx.events() if e["kind"] == "delete" and e["client_ip"] == "127.0.0.61"]
    assert delete["message_id"] == "<m32@sender.test>"


def test_a_silent_client_is_disconnected_and_deletes_nothing(tmp_path: Path) -> None:
    port = free_port()
    overrides = {"pop3": {"listen": [f"127.0.0.1:{port}"], "allow_plaintext_auth": True, "login_timeout": 1}}
    with running(tmp_path / "mx", overrides) as mw:
        raw = RawPop3(port)
        assert raw.line() == b"-ERR Disconnected for inactivity (1 seconds); nothing was deleted"
        assert raw.rest() == b""
        raw.close()
        (disconnect,) = wait_events(mw.events, lambda e: e["kind"] == "disconnect")
        assert disconnect["detail"]["reason"] == "timeout"
