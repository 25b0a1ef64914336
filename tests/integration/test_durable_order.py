"""250 means on disk, seen from outside: the real server's system calls for one message, under strace.

fsync(the message file) -> fdatasync(the delivery journal) -> linkat(into new/) -> fsync(new/)
-> fdatasync(the SQLite WAL, the commit of the events) -> write("250 ...") to the client. A call
must have returned before the next one starts (strace's log is in the order things happened,
across all threads).
"""

from __future__ import annotations

import re
import smtplib
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.support.mailwarden import Mailwarden

pytestmark = pytest.mark.integration

BOB = "bob@example.test"
SYSCALLS = "fsync,fdatasync,linkat,write,writev,sendto,sendmsg"
_UNFINISHED = " <unfinished ...>"
_LINE = re.compile(r"^\d+ +(?:<\.\.\. (?P<resumed>\w+) resumed>|(?P<name>\w+)\()(?P<rest>.*)$")


@dataclass
class Syscall:
    name: str
    text: str  # its arguments and result as strace printed them (-y: descriptors with their paths)
    started: int  # line numbers in the log
    ended: int


def syscalls(log: str) -> list[Syscall]:
    """The calls in a `strace -f -y` log, each with the lines where it started and returned."""
    done: list[Syscall] = []
    open_calls: dict[str, Syscall] = {}  # pid -> its call interrupted by another thread's line
    for number, line in enumerate(log.splitlines()):
        found = _LINE.match(line)
        if found is None:
            continue
        pid = line.split(" ", 1)[0]
        if found["resumed"]:
            call = open_calls.pop(pid)
            call.text += found["rest"]
            call.ended = number
            done.append(call)
        elif line.endswith(_UNFINISHED):
            open_calls[pid] = Syscall(found["name"], found["rest"].removesuffix(_UNFINISHED), number, number)
        else:
            done.append(Syscall(found["name"], found["rest"], number, number))
    return sorted(done, key=lambda call: call.started)


def first(calls: list[Syscall], names: tuple[str, ...], needle: str, *, after: int = -1) -> Syscall:
    for call in calls:
        if call.name in names and needle in call.text and call.started > after:
            return call
    raise AssertionError(f"no {'/'.join(names)} with {needle!r} after line {after}")


def test_the_real_server_syncs_file_journal_link_directory_and_events_before_it_sends_250(tmp_path: Path) -> None:
    server = Mailwarden(tmp_path / "mw")
    server.add_user(BOB)
    log = tmp_path / "strace.log"
    server.start(
        wrapper=["strace", "-f", "--seccomp-bpf", "-y", "-s", "120", "-o", str(log), "-e", f"trace={SYSCALLS}"]
    )
    try:
        with smtplib.SMTP("127.0.0.1", server.smtp_port, timeout=60) as client:
            client.ehlo("client.sender.test")
            client.mail("alice@sender.test")
            client.rcpt(BOB)
            code, text = client.data(b"Subject: on disk\r\n\r\nHello.\r\n")
    finally:
        server.stop()
    assert code == 250, text
    (stored,) = (server.maildir(BOB) / "new").iterdir()
    calls = syscalls(log.read_text())

    mailbox = str(server.maildir(BOB))
    file_synced = first(calls, ("fsync", "fdatasync"), f"{mailbox}/tmp/")
    journaled = first(calls, ("fdatasync", "fsync"), "/.mailwarden-journal/", after=file_synced.ended)
    linked = first(calls, ("linkat",), f'{mailbox}/new>, "{stored.name}"', after=journaled.ended)
    dir_synced = first(calls, ("fsync",), f"{mailbox}/new>)", after=linked.ended)
    committed = first(calls, ("fdatasync", "fsync"), "mailwarden.db-wal>", after=dir_synced.ended)
    replied = first(calls, ("write", "writev", "sendto", "sendmsg"), '"250 2.0.0 Message accepted', after=-1)
    assert committed.ended < replied.started, "250 was written before the events were committed"
