"""Golden transcripts: exact SMTP dialogues with a real `mailwarden serve`, the contract of the protocol layer.

Like Postfix's smtpd `*.ref` files: `transcripts/SETUP/NAME.txt` is one dialogue (the format is in
tests/support/transcript.py), replayed byte for byte against a server started with that SETUP's
configuration (below). Every command, error path, pipelining group and kind of bad input the other
protocol tests cover has its dialogue here. Every 4xx/5xx in them must carry our ref, and the store
must hold an event with that ref and that reply (issue 11, item 6).

After a deliberate change of the protocol, `MAILWARDEN_RECORD_TRANSCRIPTS=1` rewrites the files
from what the server says (the comments kept) and fails every rewritten one: review the diff.
"""

from __future__ import annotations

import errno
import os
import re
import subprocess
import time
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from mailwarden.smtp.server import ERROR_LIMIT
from tests.support.mailwarden import Mailwarden, running
from tests.support.smtp import events_of
from tests.support.transcript import Player, golden
from tests.support.wire import Closed, Reply, Wire

pytestmark = pytest.mark.integration

HOST = "mx.example.test"
BOB = "bob@example.test"
TRANSCRIPTS = Path(__file__).parent / "transcripts"
RECORD = os.environ.get("MAILWARDEN_RECORD_TRANSCRIPTS") == "1"
_REF = r"ref=([0-9A-Z]{12})"
BASE: dict[str, dict[str, Any]] = {"smtp": {"hostname": HOST}, "mail": {"postmaster": BOB}}


def _with(overrides: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
    merged = {name: dict(values) for name, values in BASE.items()}
    for name, values in overrides.items():
        merged.setdefault(name, {}).update(values)
    return merged


def _plain(overrides: dict[str, dict[str, Any]], users: tuple[str, ...] = (BOB,)) -> Callable[[Path], Any]:
    return lambda root: running(root, _with(overrides), users=users)


@contextmanager
def _broken_mailbox(root: Path) -> Iterator[Mailwarden]:
    """carol@other.test's domain directory replaced by a plain file: her deliveries fail."""
    overrides = {"mail": {"domains": ["example.test", "other.test"], "postmaster": BOB}}
    with running(root, _with(overrides), users=(BOB, "carol@other.test")) as server:
        broken = server.maildir_root / "other.test"
        for path in sorted(broken.rglob("*"), reverse=True):
            path.rmdir() if path.is_dir() else path.unlink()
        broken.rmdir()
        broken.write_text("a plain file where the domain directory must be\n")
        yield server


@contextmanager
def _full_spool(root: Path) -> Iterator[Mailwarden]:
    """The spool directory on a full tmpfs: a large message fails to spool (ENOSPC) in the middle of DATA."""
    spool = root / "spool"
    spool.mkdir(parents=True)
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=256k", "tmpfs", str(spool)], capture_output=True, text=True, check=False
    )
    if mounted.returncode != 0:
        pytest.skip(f"mounting a tmpfs for the spool is not permitted here (needs root): {mounted.stderr.strip()}")
    try:
        with open(spool / "filler", "wb", buffering=0) as filler:
            try:
                while True:
                    filler.write(b"\0" * 4096)
            except OSError as error:
                assert error.errno == errno.ENOSPC, error
        overrides = {"smtp": {"memory_spool_limit": 65_536}, "mail": {"spool_dir": str(spool), "postmaster": BOB}}
        with running(root / "mw", _with(overrides)) as server:
            yield server
    finally:
        subprocess.run(["umount", str(spool)], check=True)


# What each directory of transcripts runs against.
SETUPS: dict[str, Callable[[Path], AbstractContextManager[Mailwarden]]] = {
    # the test base: recipients, size, content checks; STARTTLS offered; bob and postmaster (bob)
    "default": _plain({}),
    # the limits of test_limits.py and test_bad_input.py
    "limits": _plain(
        {"smtp": {"max_recipients": 3, "max_message_size": 20_000, "max_line_length": 5_000, "max_command_line": 512}},
        users=(BOB, "carol@example.test", "dave@example.test", "erin@example.test"),
    ),
    "timeouts": _plain({"smtp": {"timeouts": {"command": 2, "data_block": 2}}}),
    "session_timeout": _plain({"smtp": {"timeouts": {"session": 2, "command": 60}}}),
    "connections": _plain({"smtp": {"max_connections": 3, "max_connections_per_ip": 2}}),
    "bare_newline_reject": _plain({"smtp": {"bare_newline": "reject"}, "tls": {"enabled": False}}),
    "proxy": _plain({"smtp": {"proxy_protocol": True, "proxy_trusted": ["127.0.0.2/32"]}}),
    "pregreet": _plain({"checks": {"order": ["pregreet", "recipients", "size", "content"]}, "pregreet": {"wait": 2.0}}),
    "broken_mailbox": _broken_mailbox,
    "full_spool": _full_spool,
}
DIALOGUES = sorted((path.parent.name, path.stem) for path in TRANSCRIPTS.glob("*/*.txt"))


@dataclass(frozen=True)
class Dialogue:
    transcript: str  # normalised, as in the file
    refusals: list[tuple[str, str]]  # (our ref, the reply on one line as an event records it) of each 4xx/5xx


@dataclass
class Setup:
    name: str
    server: Mailwarden
    played: dict[str, Dialogue]
    events: list[dict[str, Any]]  # the store's events once every refusal played could be in it


def _one_line(reply: Reply) -> str:
    """A reply as its event records it: continuation lines joined, their repeated enhanced code left out."""
    enhanced = reply.lines[0].split(" ", 1)[0]
    rest = [line.removeprefix(f"{enhanced} ") for line in reply.lines[1:]]
    return " ".join([f"{reply.code} {reply.lines[0]}", *rest])


def _refusal(reply: Reply) -> tuple[str, str]:
    refs = re.findall(_REF, reply.text)
    assert len(refs) == 1 and reply.text.endswith(f"ref={refs[0]}"), f"not one ref of ours, last: {reply.text}"
    return refs[0], _one_line(reply)


def _events_once_recorded(server: Mailwarden, refusals: list[tuple[str, str]]) -> list[dict[str, Any]]:
    """All events, read when each refusal has its event (the writer batches), or after 30 s."""
    wanted = Counter(refusals)
    deadline = time.monotonic() + 30
    while True:
        events = server.events()
        recorded = Counter((e["ref"], e["reply"]) for e in events if e["kind"] in ("reject", "tempfail"))
        if all(recorded[key] >= times for key, times in wanted.items()) or time.monotonic() > deadline:
            return events
        time.sleep(0.2)


@pytest.fixture(scope="module")
def setup(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Setup]:
    """One server per setup, each of its dialogues played once (pytest groups the tests by setup)."""
    name: str = request.param
    with SETUPS[name](tmp_path_factory.mktemp(f"transcripts-{name}") / "mw") as server:
        player = Player(server, HOST)
        played = {}
        for setup_name, dialogue in DIALOGUES:
            if setup_name == name:
                result = player.run(golden(TRANSCRIPTS / name / f"{dialogue}.txt"))
                try:
                    refusals = [_refusal(reply) for reply in result.refusals]
                except AssertionError as error:  # shown by the event test, not in the way of the transcript's
                    refusals = [("", str(error))]
                played[dialogue] = Dialogue(player.normalised(result.lines), refusals)
        every = [r for dialogue in played.values() for r in dialogue.refusals if r[0]]
        yield Setup(name, server, played, _events_once_recorded(server, every) if every else [])


def _record(path: Path, transcript: str) -> None:
    comments = [line for line in path.read_text().splitlines() if line.startswith("#")]
    path.write_text("\n".join([*comments, transcript]) + "\n")


@pytest.mark.parametrize(
    ("setup", "name"), DIALOGUES, indirect=["setup"], scope="module", ids=[f"{s}/{n}" for s, n in DIALOGUES]
)
def test_the_dialogue_matches_its_golden_transcript(setup: Setup, name: str) -> None:
    path = TRANSCRIPTS / setup.name / f"{name}.txt"
    expected = "\n".join(golden(path))
    if RECORD and setup.played[name].transcript != expected:
        _record(path, setup.played[name].transcript)
        pytest.fail(f"{path} rewritten from the server's replies: review the diff")
    assert setup.played[name].transcript == expected


@pytest.mark.parametrize(
    ("setup", "name"), DIALOGUES, indirect=["setup"], scope="module", ids=[f"{s}/{n}" for s, n in DIALOGUES]
)
def test_every_refusal_in_the_dialogue_has_an_event_with_its_ref_and_reply(setup: Setup, name: str) -> None:
    for ref, problem in setup.played[name].refusals:
        assert ref, problem
    for (ref, line), times in Counter(setup.played[name].refusals).items():
        recorded = [e for e in setup.events if e["ref"] == ref and e["reply"] == line]
        assert len(recorded) == times, f"{len(recorded)} events for {times} refusals {line!r} with ref {ref}"
        code, enhanced = int(line[:3]), line.split(" ")[1]
        for event in recorded:
            assert event["kind"] == ("reject" if code >= 500 else "tempfail")
            assert (event["smtp_code"], event["enhanced_code"]) == (code, enhanced)
            assert event["reason"], event


FLOODS = {"empty lines": b"", "NUL bytes": b"\0", "overlong lines": b"x" * 600, "unknown commands": b"BOGUS"}


@pytest.mark.parametrize("setup", ["limits"], indirect=True, scope="module")
@pytest.mark.parametrize("line", FLOODS.values(), ids=FLOODS.keys())
def test_a_flood_of_bad_lines_is_ended_at_the_error_limit_so_events_stay_few(setup: Setup, line: bytes) -> None:
    """Every refusal is an event: a client sending thousands of bad lines must not make thousands of them."""
    replies: list[Reply] = []
    with Wire(setup.server.smtp_port) as wire:
        wire.greet()
        try:
            for _ in range(1000):
                wire.send(line + b"\r\n")
                replies.append(wire.reply())
        except (Closed, ConnectionError):
            pass
    assert replies[-1].matches(r"^421 4\.7\.0 .*too many errors.* ref=[0-9A-Z]{12}$"), replies[-1].text
    assert len(replies) <= ERROR_LIMIT + 2
    ref = re.findall(_REF, replies[-1].text)[0]
    refusals = [e for e in events_of(setup.server, ref, "disconnect") if e["kind"] in ("reject", "tempfail")]
    assert len(refusals) == len(replies)
