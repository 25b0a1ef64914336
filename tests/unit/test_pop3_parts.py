"""The POP3 server's parts on their own: wire encoding, login guard, SASL PLAIN, message identity,
and the Maildir reading semantics it shares with the gateway's delivery."""

from __future__ import annotations

import base64
import io
from pathlib import Path

from hypothesis import given
from hypothesis import strategies as st

from mailwarden.deliver.maildir import Maildirs, Target
from mailwarden.dotstuff import DotStuffer
from mailwarden.loginguard import LoginGuard
from mailwarden.pop3.maildrop import identity_of, top_lines, uidl_of
from mailwarden.pop3.session import _decode_plain


def wire(stored: bytes) -> bytes:
    """The POP3 form of a whole message, written the obvious (slow) way."""
    lines = stored.replace(b"\r\n", b"\n").split(b"\n")
    if lines[-1] == b"":
        lines.pop()
    return b"".join((b"." + line if line.startswith(b".") else line) + b"\r\n" for line in lines) + b".\r\n"


@given(
    st.lists(st.sampled_from([b"a", b".", b"\r\n", b"\n", b"..", b"x" * 7, b"\r"]), max_size=60).map(b"".join),
    st.lists(st.integers(min_value=1, max_value=9), max_size=20),
)
def test_dot_stuffing_does_not_depend_on_where_the_chunks_end(stored: bytes, cuts: list[int]) -> None:
    encoder = DotStuffer()
    out, position = b"", 0
    for size in cuts:
        out += encoder.feed(stored[position : position + size])
        position += size
    out += encoder.feed(stored[position:]) + encoder.finish()
    if b"\r" not in stored.replace(b"\r\n", b""):  # a bare CR is passed through, not a line end
        assert out == wire(stored)
    assert out.endswith(b"\r\n.\r\n") or out == b".\r\n"


def test_top_sends_the_header_the_empty_line_and_n_body_lines() -> None:
    message = b"Subject: x\r\nFrom: a\r\n\r\nline 1\r\nline 2\r\nline 3\r\n"
    assert b"".join(top_lines(io.BytesIO(message), 2)) == b"Subject: x\r\nFrom: a\r\n\r\nline 1\r\nline 2\r\n"
    assert b"".join(top_lines(io.BytesIO(message), 0)) == b"Subject: x\r\nFrom: a\r\n\r\n"
    assert b"".join(top_lines(io.BytesIO(b"Subject: no body\r\n"), 5)) == b"Subject: no body\r\n"


def test_uidl_is_the_unique_name_unless_rfc_1939_forbids_it() -> None:
    assert uidl_of("1764309600.M1P2Q3.host,S=120") == "1764309600.M1P2Q3.host,S=120"
    long_name = "1764309600.M1P2Q3." + "h" * 80
    assert len(uidl_of(long_name)) == 64 and uidl_of(long_name) == uidl_of(long_name)
    assert uidl_of("with space") != "with space"


def test_the_delivery_ref_is_the_first_x_mailwarden_ref_and_a_forged_one_below_is_ignored() -> None:
    head = (
        b"Received: from x\r\nX-Mailwarden-Ref: 0A1B2C3D4E5F\r\nMessage-ID: <a@b>\r\n"
        b"X-Mailwarden-Ref: ZZZZZZZZZZZZ\r\n\r\nbody"
    )
    identity = identity_of(head)
    assert (identity.message_id, identity.ref) == ("<a@b>", "0A1B2C3D4E5F")
    assert identity_of(b"Subject: x\r\nMessage-ID: <last@b>\r\n\r\nMessage-ID: <body@b>\r\n").message_id == "<last@b>"
    assert identity_of(b"X-Mailwarden-Ref: not a ref\r\n\r\n").ref is None
    assert identity_of(b"no header at all").message_id is None


def test_sasl_plain_takes_user_and_password_and_refuses_acting_as_another_user() -> None:
    def b64(raw: bytes) -> str:
        return base64.b64encode(raw).decode()

    assert _decode_plain(b64(b"\0bob@example.test\0pass word")) == ("bob@example.test", "pass word")
    assert _decode_plain(b64(b"bob@example.test\0bob@example.test\0pw")) == ("bob@example.test", "pw")
    assert _decode_plain(b64(b"admin\0bob@example.test\0pw")) is None
    assert _decode_plain(b64(b"\0\0pw")) is None
    assert _decode_plain(b64(b"no nul bytes")) is None
    assert _decode_plain("%%%") is None
    assert _decode_plain(b64(b"\0\xff\0pw")) is None


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_failed_logins_double_the_delay_then_lock_address_and_user_until_the_lock_expires() -> None:
    clock = Clock()
    guard = LoginGuard(base_delay=1, max_delay=3, max_failures=3, lock_seconds=60, clock=clock)
    assert guard.failed("192.0.2.1", "bob") == (1, 1)
    assert guard.failed("192.0.2.1", "bob") == (2, 2)
    assert guard.locked("192.0.2.1", "bob") is None
    assert guard.failed("192.0.2.1", "bob") == (3, 3)  # capped at max_delay
    lock = guard.locked("192.0.2.9", "bob")
    assert lock is not None and lock.scope == "user"
    lock = guard.locked("192.0.2.1", "carol")
    assert lock is not None and lock.scope == "address"
    clock.now += 61
    assert guard.locked("192.0.2.1", "bob") is None


def test_failures_older_than_the_window_are_forgotten_and_success_forgets_only_the_users() -> None:
    clock = Clock()
    guard = LoginGuard(base_delay=1, max_delay=30, max_failures=3, lock_seconds=60, clock=clock)
    guard.failed("192.0.2.1", "bob")
    guard.failed("192.0.2.1", "bob")
    guard.succeeded("bob")
    assert guard.failed("192.0.2.2", "bob") == (1, 1)  # bob's count started over
    assert guard.failed("192.0.2.1", "carol") == (3, 4)  # the address kept its two
    clock.now += 120
    assert guard.failed("192.0.2.3", "dave") == (1, 1)


def deliver(maildirs: Maildirs, mailbox: str, data: bytes) -> str:
    (copy,) = maildirs.deliver([Target(mailbox)], lambda handle: handle.write(data))
    return copy.uid


def test_reading_moves_new_mail_to_cur_in_delivery_order_and_keeps_the_uid(tmp_path: Path) -> None:
    maildirs = Maildirs(tmp_path)
    uids = [deliver(maildirs, "bob@example.test", b"message %d\r\n" % n) for n in range(12)]
    listed = maildirs.messages("bob@example.test")
    assert [m.uid for m in listed] == uids
    assert all(m.path.parent.name == "cur" and m.path.name == f"{m.uid}:2," for m in listed)
    assert not any((tmp_path / "example.test" / "bob" / "new").iterdir())
    assert [m.size for m in listed] == [len(b"message %d\r\n" % n) for n in range(12)]
    assert [m.uid for m in maildirs.messages("bob@example.test")] == uids  # stable on a second look


def test_a_message_is_found_by_uid_after_renames_and_expunge_reports_what_was_there(tmp_path: Path) -> None:
    maildirs = Maildirs(tmp_path)
    first, second = (deliver(maildirs, "bob@example.test", b"x\r\n") for _ in range(2))
    one, two = maildirs.messages("bob@example.test")
    flagged = maildirs.set_flags("bob@example.test", one, "S")
    assert flagged is not None and flagged.path.name == f"{first}:2,S"
    assert maildirs.locate("bob@example.test", first) == flagged.path
    two.path.unlink()
    assert maildirs.locate("bob@example.test", second) is None
    removed = maildirs.expunge("bob@example.test", [one, two])  # `one` is stale: it was renamed
    assert [m.uid for m in removed] == [first]
    assert maildirs.messages("bob@example.test") == []


def test_the_gateway_can_take_back_a_delivery_a_reader_already_moved_to_cur(tmp_path: Path) -> None:
    maildirs = Maildirs(tmp_path)
    delivered = maildirs.deliver([Target("bob@example.test")], lambda handle: handle.write(b"x\r\n"))
    maildirs.messages("bob@example.test")  # new -> cur
    maildirs.remove(delivered)
    assert maildirs.messages("bob@example.test") == []


def test_only_one_reader_holds_a_mailbox_at_a_time(tmp_path: Path) -> None:
    maildirs = Maildirs(tmp_path)
    lock = maildirs.lock("bob@example.test")
    assert lock is not None
    assert maildirs.lock("bob@example.test") is None
    assert maildirs.lock("carol@example.test") is not None
    lock.release()
    assert maildirs.lock("bob@example.test") is not None
