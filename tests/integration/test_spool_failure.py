"""A spool that fails in the middle of DATA, against a real `mailwarden serve`.

The spool directory is a small tmpfs, filled up (ENOSPC on the first flush) or mounted read-only
(EROFS when the spool file is created). The message's body holds thousands of NOOP lines and a
whole second transaction for another mailbox: all of it is message content. The gateway must read
and discard it to the end marker, answer one 4xx with its ref, record that, leave no spool file,
and never run a line of the body as a command.
"""

from __future__ import annotations

import errno
import subprocess
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.mailwarden import Mailwarden, running
from tests.support.smtp import events_of
from tests.support.wire import Wire

pytestmark = pytest.mark.integration

BOB = "bob@example.test"
CAROL = "carol@example.test"
SPOOL_SIZE = "256k"
MEMORY_SPOOL_LIMIT = 65_536  # the smallest allowed: everything past it goes to the spool file
# Past the memory limit and the spool file's 256 KiB write buffer, so the failure comes mid-stream.
NOOPS = b"NOOP\r\n" * 70_000
EMBEDDED = (
    b"MAIL FROM:<mallory@evil.test>\r\n"
    b"RCPT TO:<carol@example.test>\r\n"
    b"DATA\r\n"
    b"Subject: the second message\r\n\r\nsmuggled through a full disk\r\n"
)
BODY = b"From: alice@sender.test\r\nSubject: the first message\r\n\r\n" + NOOPS + EMBEDDED + b".\r\n"


def _mount_tmpfs(target: Path, options: str) -> None:
    result = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(target)], capture_output=True, text=True, check=False
    )
    if result.returncode != 0:
        pytest.skip(f"mounting a tmpfs for the spool is not permitted here (needs root): {result.stderr.strip()}")


def _fill(directory: Path) -> None:
    """Write until the file system refuses: ENOSPC from now on."""
    block = b"\0" * 4096
    with open(directory / "filler", "wb", buffering=0) as filler:
        try:
            while True:
                filler.write(block)
        except OSError as error:
            assert error.errno == errno.ENOSPC, error


@pytest.fixture(params=["full", "read-only"])
def broken_spool(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Path]:
    """A spool directory on a tmpfs that is full, or mounted read-only; unmounted afterwards."""
    target = tmp_path / "spool"
    target.mkdir()
    _mount_tmpfs(target, f"size={SPOOL_SIZE},ro" if request.param == "read-only" else f"size={SPOOL_SIZE}")
    try:
        if request.param == "full":
            _fill(target)
        yield target
    finally:
        subprocess.run(["umount", str(target)], check=True)


def _send_in_background(wire: Wire, data: bytes) -> threading.Thread:
    """Send while the test reads: a server that answered the body line by line would otherwise block us both."""

    def send() -> None:
        try:
            wire.send(data)
        except OSError:
            pass  # the server closed: the test's assertions say why

    sender = threading.Thread(target=send)
    sender.start()
    return sender


def _spool_files(spool: Path) -> list[Path]:
    return sorted(spool.glob("msg-*.spool"))


def test_a_spool_failure_mid_data_discards_to_the_end_marker_and_answers_452_once(broken_spool: Path) -> None:
    overrides = {
        "smtp": {"memory_spool_limit": MEMORY_SPOOL_LIMIT},
        "mail": {"spool_dir": str(broken_spool)},
    }
    with running(broken_spool.parent / "mw", overrides, users=(BOB, CAROL)) as server:
        with Wire(server.smtp_port) as wire:
            wire.greet()
            assert wire.command("MAIL FROM:<alice@sender.test>").code == 250
            assert wire.command(f"RCPT TO:<{BOB}>").code == 250
            assert wire.command("DATA").code == 354
            sender = _send_in_background(wire, BODY)
            reply = wire.reply()
            sender.join(timeout=60)
            assert reply.matches(r"^452 4\.3\.1 Temporary storage problem on our side.* ref=[0-9A-Z]{12}$"), reply.text
            # The next reply answers our next command: none of the body's lines was answered.
            assert wire.command("QUIT").code == 221
        ref = reply.text.rpartition("ref=")[2]
        assert _spool_files(broken_spool) == []
        assert server.messages(BOB) == [] and server.messages(CAROL) == []
        events = events_of(server, ref, "disconnect")
        (refusal,) = [e for e in events if e["kind"] == "tempfail"]
        assert (refusal["reason"], refusal["smtp_code"], refusal["detail"]["stage"]) == ("infra.storage", 452, "data")
        assert [e["kind"] for e in events if e["kind"] in ("mail", "rcpt", "data", "accept", "deliver")] == [
            "mail",
            "rcpt",
            "data",
        ]
        assert not [e for e in server.events() if e["sender"] == "mallory@evil.test" or e["recipient"] == CAROL]
        assert not [e for e in server.events() if e["ref"] != ref and e["kind"] not in ("connect", "disconnect")]
        _a_small_message_still_gets_through(server)


def _a_small_message_still_gets_through(server: Mailwarden) -> None:
    """Kept in memory, a small message does not need the broken spool."""
    with Wire(server.smtp_port) as wire:
        wire.greet()
        assert wire.command("MAIL FROM:<alice@sender.test>").code == 250
        assert wire.command(f"RCPT TO:<{BOB}>").code == 250
        assert wire.command("DATA").code == 354
        wire.send(b"Subject: small\r\n\r\nfits in memory\r\n.\r\n")
        assert wire.reply().code == 250
    assert len(server.messages(BOB)) == 1
