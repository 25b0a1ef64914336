"""Proxy mode against a real Dovecot: mailwarden hands each message to Dovecot's LMTP during the SMTP
session and answers the sender only with what Dovecot said, recipient by recipient."""

from __future__ import annotations

import smtplib
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.dovecot import Dovecot, running_dovecot
from tests.support.mailwarden import Mailwarden, running
from tests.support.pop3 import message, wait_events
from tests.support.postfix import running_postfix

pytestmark = pytest.mark.integration

USERS = {"bob@example.test": "secret", "full@example.test": "secret"}


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Mailwarden, Dovecot]]:
    root = tmp_path_factory.mktemp("proxy")
    with running_dovecot(USERS, quota_bytes={"full@example.test": 100}, keep_log_in=root) as dovecot:
        overrides = {"delivery": {"mode": "lmtp", "downstream": dovecot.lmtp_address, "timeout": 30}}
        with running(root / "mx", overrides, users=(*USERS, "ghost@example.test")) as mw:
            yield mw, dovecot


def transaction(mw: Mailwarden, recipients: list[str], data: bytes) -> tuple[int, str]:
    with smtplib.SMTP("127.0.0.1", mw.smtp_port, timeout=60) as client:
        client.ehlo("client.sender.test")
        client.mail("alice@sender.test")
        for recipient in recipients:
            assert client.rcpt(recipient)[0] == 250
        code, text = client.data(data)
    return code, text.decode()


def test_250_comes_after_dovecot_saved_the_message_and_the_event_keeps_dovecots_answer(
    stack: tuple[Mailwarden, Dovecot],
) -> None:
    mw, dovecot = stack
    code, text = transaction(mw, ["bob@example.test"], message(41))
    assert code == 250 and text.startswith("2.0.0 Message delivered for 1 recipient(s) ref=")
    ref = text.rpartition("ref=")[2]
    (saved,) = [p for p in (dovecot.maildir("bob@example.test") / "new").iterdir() if b"<m41@" in p.read_bytes()]
    assert f"X-Mailwarden-Ref: {ref}".encode() in saved.read_bytes()  # our trace headers went along
    assert not mw.messages("bob@example.test")  # nothing stored locally
    (deliver,) = wait_events(mw.events, lambda e: e["kind"] == "deliver" and e["ref"] == ref)
    assert deliver["detail"]["downstream_reply"].startswith("250 2.0.0 <bob@example.test> ")
    assert deliver["detail"]["downstream_reply"].endswith(" Saved")
    assert deliver["detail"]["downstream"] == f"lmtp {dovecot.lmtp_address}"


def test_a_recipient_over_quota_alone_gets_dovecots_permanent_refusal_with_our_ref(
    stack: tuple[Mailwarden, Dovecot],
) -> None:
    mw, _ = stack
    code, text = transaction(mw, ["full@example.test"], message(42, "full@example.test", b"x" * 400 + b"\r\n"))
    assert code == 552 and text.startswith("5.2.2 The mailbox full@example.test is full")
    ref = text.rpartition("ref=")[2]
    (refusal,) = wait_events(mw.events, lambda e: e["kind"] == "reject" and e["ref"] == ref)
    assert refusal["reason"] == "rcpt.mailbox_full" and refusal["recipient"] == "full@example.test"
    assert refusal["detail"]["downstream_reply"].startswith("552 5.2.2 <full@example.test> Quota exceeded")
    assert refusal["detail"]["downstream_stage"] == "data"


def test_a_mailbox_dovecot_does_not_know_is_refused_as_unknown_with_dovecots_words_in_the_event(
    stack: tuple[Mailwarden, Dovecot],
) -> None:
    mw, _ = stack
    code, text = transaction(mw, ["ghost@example.test"], message(46, "ghost@example.test"))
    assert code == 550 and text.startswith("5.1.1 The mailbox ghost@example.test does not exist here")
    ref = text.rpartition("ref=")[2]
    (refusal,) = wait_events(mw.events, lambda e: e["kind"] == "reject" and e["ref"] == ref)
    assert refusal["reason"] == "rcpt.unknown_user"
    assert refusal["detail"]["downstream_stage"] == "rcpt"
    assert "User doesn't exist" in refusal["detail"]["downstream_reply"]


def test_one_recipient_saved_and_one_refused_gives_250_that_names_the_refused_one(
    stack: tuple[Mailwarden, Dovecot],
) -> None:
    mw, dovecot = stack
    code, text = transaction(mw, ["bob@example.test", "full@example.test"], message(43) + b"y" * 400 + b"\r\n")
    assert code == 250
    assert "Message delivered for 1 recipient(s); refused by the mailbox server for full@example.test: 552 5.2.2" in (
        text.replace("\n", " ")
    )
    ref = text.rpartition("ref=")[2]
    events = wait_events(mw.events, lambda e: e["ref"] == ref and e["kind"] in ("deliver", "reject", "accept"), 3)
    assert {(e["kind"], e["recipient"]) for e in events} == {
        ("deliver", "bob@example.test"),
        ("reject", "full@example.test"),
        ("accept", None),
    }
    dovecot.wait_for_log("msgid=<m43@sender.test>: saved mail to INBOX")


def test_when_dovecot_is_down_the_sender_gets_451_4_4_1_and_nothing_is_accepted(tmp_path: Path) -> None:
    with running_dovecot(USERS) as dovecot:
        lmtp = dovecot.lmtp_address
    overrides = {"delivery": {"mode": "lmtp", "downstream": lmtp, "connect_timeout": 5}}
    with running(tmp_path / "mx", overrides) as mw:
        code, text = transaction(mw, ["bob@example.test"], message(44))
        assert code == 451 and text.startswith("4.4.1 The mailbox server is temporarily unavailable")
        ref = text.rpartition("ref=")[2]
        (tempfail,) = wait_events(mw.events, lambda e: e["kind"] == "tempfail" and e["ref"] == ref)
        assert tempfail["reason"] == "infra.downstream"
        assert not [e for e in mw.events() if e["kind"] in ("deliver", "accept")]


def test_a_deferred_recipient_defers_the_message_and_the_retry_reaches_only_it_so_nobody_gets_it_twice(
    tmp_path: Path,
) -> None:
    with running_dovecot(
        USERS, quota_bytes={"full@example.test": 100}, extra_config="quota_full_tempfail = yes\n"
    ) as dovecot:
        overrides = {"delivery": {"mode": "lmtp", "downstream": dovecot.lmtp_address}}
        with running(tmp_path / "mx", overrides, users=tuple(USERS)) as mw:
            data = message(45) + b"z" * 400 + b"\r\n"
            code, text = transaction(mw, ["bob@example.test", "full@example.test"], data)
            assert code == 452 and text.startswith("4.2.2 The mailbox full@example.test is full")
            code, text = transaction(mw, ["bob@example.test", "full@example.test"], data)  # the sender retries
            assert code == 452
            dovecot.set_quota("full@example.test", 10_000_000)  # the recipient made room
            code, text = transaction(mw, ["bob@example.test", "full@example.test"], data)
            assert code == 250 and text.startswith("2.0.0 Message delivered for 2 recipient(s)")

            def copies(user: str) -> int:
                return sum(b"<m45@sender.test>" in p.read_bytes() for p in (dovecot.maildir(user) / "new").iterdir())

            assert (copies("bob@example.test"), copies("full@example.test")) == (1, 1)
            last_ref = text.rpartition("ref=")[2]
            (bob,) = wait_events(
                mw.events,
                lambda e: e["kind"] == "deliver" and e["ref"] == last_ref and e["recipient"] == "bob@example.test",
            )
            assert bob["detail"]["downstream_stage"] == "earlier"
            first_ref = bob["detail"]["downstream_reply"].rpartition("ref=")[2]
            (first,) = wait_events(
                mw.events,
                lambda e: e["kind"] == "deliver" and e["ref"] == first_ref and e["recipient"] == "bob@example.test",
            )
            assert first["detail"]["content_sha256"] == bob["detail"]["content_sha256"]  # the same message


def test_two_different_messages_with_one_message_id_and_sender_both_reach_the_mailbox(
    stack: tuple[Mailwarden, Dovecot],
) -> None:
    """A reused (or forged) Message-ID must not make us drop a later, different message as a duplicate."""
    mw, dovecot = stack
    first = message(47, body=b"The first message.\r\n")
    second = message(47, body=b"A different message with the same Message-ID.\r\n")
    refs = []
    for data in (first, second):
        code, text = transaction(mw, ["bob@example.test"], data)
        assert code == 250 and text.startswith("2.0.0 Message delivered for 1 recipient(s) ref="), text
        refs.append(text.rpartition("ref=")[2])
    saved = [p.read_bytes() for p in (dovecot.maildir("bob@example.test") / "new").iterdir()]
    bodies = [m.replace(b"\r\n", b"\n").partition(b"\n\n")[2] for m in saved if b"<m47@sender.test>" in m]
    assert sorted(bodies) == [b"A different message with the same Message-ID.\n", b"The first message.\n"]
    delivered = wait_events(mw.events, lambda e: e["kind"] == "deliver" and e["ref"] in refs, 2)
    assert [e["detail"]["downstream_stage"] for e in delivered] == ["data", "data"]
    assert delivered[0]["detail"]["content_sha256"] != delivered[1]["detail"]["content_sha256"]


def test_smtp_mode_hands_the_message_to_another_mta_and_passes_on_its_refusal(tmp_path: Path) -> None:
    with running_postfix(local_domains=["example.test"], settings={"message_size_limit": "200000"}) as postfix:
        overrides = {"delivery": {"mode": "smtp", "downstream": f"127.0.0.1:{postfix.smtp_port}"}}
        with running(tmp_path / "mx", overrides) as mw:
            code, text = transaction(mw, ["bob@example.test"], message(47))
            assert code == 250
            ref = text.rpartition("ref=")[2]
            (deliver,) = wait_events(mw.events, lambda e: e["kind"] == "deliver" and e["ref"] == ref)
            assert deliver["detail"]["downstream_reply"].startswith("250 2.0.0 Ok: queued as ")
            (delivered,) = postfix.wait_delivered(1)
            assert delivered["Message-ID"] == "<m47@sender.test>" and delivered["X-Mailwarden-Ref"] == ref
            code, text = transaction(mw, ["bob@example.test"], message(48, body=(b"x" * 998 + b"\r\n") * 300))
            assert code == 552
            assert text.startswith("5.3.4 The mailbox server refused the message for bob@example.test: 552 5.3.4")
