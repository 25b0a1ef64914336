"""Golden transcripts: exact SMTP dialogues with a real `mailwarden serve`, one file per dialogue.

Like Postfix's smtpd `*.ref` files. In `transcripts/NAME.txt`, `C: ` lines are sent and each is
answered by the `S: ` lines that follow it; `D: ` lines are message content, sent without a
reply; `#` lines are comments. Refs are normalised to `<REF1>`, `<REF2>`, ... in order of first
appearance and our hostname to `<HOST>`, so the files stay exact. Every 4xx/5xx in them must
carry our ref, and the store must hold an event with that ref and that reply (issue 11, item 6).
"""

from __future__ import annotations

import re
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from mailwarden.smtp.server import ERROR_LIMIT
from tests.support.mailwarden import Mailwarden, running
from tests.support.smtp import events_of
from tests.support.wire import Closed, Reply, Wire

pytestmark = pytest.mark.integration

HOST = "mx.example.test"
TRANSCRIPTS = Path(__file__).parent / "transcripts"
NAMES = sorted(p.stem for p in TRANSCRIPTS.glob("*.txt"))
CLOSED = "-- closed by the server"
_REF = re.compile(r"ref=([0-9A-Z]{12})")


@dataclass(frozen=True)
class Played:
    transcript: str  # normalised, as in the file
    refusals: list[Reply]  # the 4xx/5xx replies as sent


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Mailwarden]:
    with running(tmp_path_factory.mktemp("transcripts") / "mw", {"smtp": {"hostname": HOST}}) as instance:
        yield instance


@pytest.fixture(scope="module")
def played(server: Mailwarden) -> dict[str, Played]:
    """Each dialogue once; both tests below read it."""
    return {name: _play(server, _golden(name)) for name in NAMES}


def _golden(name: str) -> list[str]:
    return [line for line in (TRANSCRIPTS / f"{name}.txt").read_text().splitlines() if not line.startswith("#")]


def _play(server: Mailwarden, golden: list[str]) -> Played:
    lines: list[str] = []
    replies: list[Reply] = []
    with Wire(server.smtp_port) as wire:
        replies.append(wire.reply())
        for line in golden:
            kind, _, text = line.partition(":")
            text = text.removeprefix(" ")
            if kind not in ("C", "D"):
                continue
            lines.append(line.rstrip())
            wire.send(text.encode() + b"\r\n")
            if kind == "C":
                replies.append(wire.reply())
                lines.extend(_shown(replies[-1]))
        closed = wire.closed_by_server(timeout=30)
    rendered = [*_shown(replies[0]), *lines] + ([CLOSED] if closed else [])
    return Played(_normalised("\n".join(rendered)), [r for r in replies if r.code >= 400])


def _shown(reply: Reply) -> list[str]:
    last = len(reply.lines) - 1
    return [f"S: {reply.code}{' ' if i == last else '-'}{text}".rstrip() for i, text in enumerate(reply.lines)]


def _normalised(text: str) -> str:
    """Our refs and hostname in the server's lines replaced; what the client sent stays as it was."""
    numbers: dict[str, str] = {}

    def number(match: re.Match[str]) -> str:
        return "ref=" + numbers.setdefault(match.group(1), f"<REF{len(numbers) + 1}>")

    return "\n".join(
        _REF.sub(number, line.replace(HOST, "<HOST>")) if line.startswith("S: ") else line for line in text.split("\n")
    )


@pytest.mark.parametrize("name", NAMES)
def test_the_dialogue_matches_its_golden_transcript(played: dict[str, Played], name: str) -> None:
    expected = "\n".join(line.rstrip() for line in _golden(name))
    assert played[name].transcript == expected


@pytest.mark.parametrize("name", NAMES)
def test_every_refusal_in_the_dialogue_has_an_event_with_its_ref_and_reply(
    server: Mailwarden, played: dict[str, Played], name: str
) -> None:
    sent: Counter[tuple[str, str]] = Counter()
    for reply in played[name].refusals:
        refs = _REF.findall(reply.text)
        assert len(refs) == 1 and reply.text.endswith(f"ref={refs[0]}"), f"not one ref of ours, last: {reply.text}"
        sent[refs[0], f"{reply.code} " + " ".join(reply.lines)] += 1
    for (ref, line), times in sent.items():
        deadline = time.monotonic() + 30
        while len(recorded := [e for e in server.events("--ref", ref) if e["reply"] == line]) < times:
            assert time.monotonic() < deadline, f"{len(recorded)} of {times} events with ref {ref} record {line!r}"
            time.sleep(0.2)
        assert len(recorded) == times, f"more events than refusals: {recorded}"
        code, enhanced = int(line[:3]), line.split(" ")[1]
        for event in recorded:
            assert event["kind"] == ("reject" if code >= 500 else "tempfail")
            assert (event["smtp_code"], event["enhanced_code"]) == (code, enhanced)
            assert event["reason"], event


FLOODS = {"empty lines": b"", "NUL bytes": b"\0", "overlong lines": b"x" * 600, "unknown commands": b"BOGUS"}


@pytest.mark.parametrize("line", FLOODS.values(), ids=FLOODS.keys())
def test_a_flood_of_bad_lines_is_ended_at_the_error_limit_so_events_stay_few(server: Mailwarden, line: bytes) -> None:
    """Every refusal is an event: a client sending thousands of bad lines must not make thousands of them."""
    replies: list[Reply] = []
    with Wire(server.smtp_port) as wire:
        wire.greet()
        try:
            for _ in range(1000):
                wire.send(line + b"\r\n")
                replies.append(wire.reply())
        except (Closed, ConnectionError):
            pass
    assert replies[-1].matches(r"^421 4\.7\.0 .*too many errors.* ref=[0-9A-Z]{12}$"), replies[-1].text
    assert len(replies) <= ERROR_LIMIT + 2
    ref = _REF.findall(replies[-1].text)[0]
    refusals = [e for e in events_of(server, ref, "disconnect") if e["kind"] in ("reject", "tempfail")]
    assert len(refusals) == len(replies)
