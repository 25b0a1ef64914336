"""Proxy-mode delivery against a scripted LMTP/SMTP server: per-recipient answers, and a downstream
that is down, silent, rude or breaks off - never an accept that was not given, never a hang."""

from __future__ import annotations

import asyncio
import io
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from mailwarden.checks.base import Action
from mailwarden.config import DeliveryConfig
from mailwarden.deliver.downstream import Downstream, DownstreamError, DownstreamReply, Outcome, decide
from tests.support.net import free_port

MESSAGE = b"Subject: hi\r\n\r\n.leading dot\r\nend"


@dataclass
class Script:
    """What the fake server answers; `None` for a reply means: say nothing more."""

    greeting: str | None = "220 fake ready"
    rcpt: dict[str, str] = field(default_factory=dict)  # mailbox -> reply (default 250)
    after_data: list[str | None] = field(default_factory=list)  # one per accepted recipient (LMTP)
    received: bytes = b""
    commands: list[str] = field(default_factory=list)


@asynccontextmanager
async def fake_server(script: Script, unix_path: str | None = None) -> AsyncIterator[int]:
    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        async def say(line: str | None) -> bool:
            if line is None:
                await asyncio.sleep(3600)
                return False
            writer.write(line.encode() + b"\r\n")
            await writer.drain()
            return True

        try:
            if not await say(script.greeting):
                return
            while line := (await reader.readline()).decode().rstrip("\r\n"):
                script.commands.append(line)
                verb = line.split()[0].upper()
                if verb in ("LHLO", "EHLO"):
                    await say("250-fake\r\n250-8BITMIME\r\n250 PIPELINING")
                elif verb == "RCPT":
                    await say(script.rcpt.get(line[9:-1], "250 2.1.5 OK"))
                elif verb == "DATA":
                    await say("354 go ahead")
                    while (chunk := await reader.readline()) != b".\r\n":
                        script.received += chunk
                    for reply in script.after_data:
                        if reply == "close":
                            writer.close()
                            return
                        if not await say(reply):
                            return
                elif verb == "QUIT":
                    await say("221 bye")
                    break
                else:
                    await say("250 OK")
        finally:
            writer.close()

    port = free_port()
    if unix_path is not None:
        server = await asyncio.start_unix_server(handle, unix_path)
    else:
        server = await asyncio.start_server(handle, "127.0.0.1", port)
    try:
        yield port
    finally:
        server.close()


def downstream(port: int, mode: str = "lmtp", timeout: float = 5.0) -> Downstream:
    settings = DeliveryConfig(mode=mode, downstream=f"127.0.0.1:{port}", timeout=timeout, connect_timeout=timeout)  # type: ignore[arg-type]
    return Downstream(settings, "mx.example.test")


def opener() -> Callable[[], io.BytesIO]:
    return lambda: io.BytesIO(MESSAGE)


async def deliver(script: Script, mailboxes: list[str], mode: str = "lmtp", wait: float = 5.0) -> list[Outcome]:
    async with fake_server(script) as port:
        return await downstream(port, mode, wait).deliver("alice@sender.test", mailboxes, b"X-Ref: 1\r\n", opener())


def test_lmtp_gives_each_recipient_its_own_answer_after_the_message() -> None:
    script = Script(
        after_data=["250 2.0.0 <bob@example.test> abc Saved", "552 5.2.2 <carol@example.test> Quota exceeded"]
    )
    outcomes = asyncio.run(deliver(script, ["bob@example.test", "carol@example.test"]))
    assert [(o.mailbox, o.reply.code, o.reply.enhanced, o.stage) for o in outcomes] == [
        ("bob@example.test", 250, "2.0.0", "data"),
        ("carol@example.test", 552, "5.2.2", "data"),
    ]
    assert script.received == b"X-Ref: 1\r\nSubject: hi\r\n\r\n..leading dot\r\nend\r\n"  # dot-stuffed, CRLF
    assert script.commands[:2] == ["LHLO mx.example.test", "MAIL FROM:<alice@sender.test>"]
    assert decide(outcomes) is None  # 250, the refusal is reported


def test_a_recipient_refused_at_rcpt_gets_no_data_reply_and_keeps_its_refusal() -> None:
    script = Script(
        rcpt={"nobody@example.test": "550 5.1.1 <nobody@example.test> User doesn't exist"},
        after_data=["250 2.0.0 <bob@example.test> Saved"],
    )
    outcomes = asyncio.run(deliver(script, ["nobody@example.test", "bob@example.test"]))
    assert [(o.reply.code, o.stage) for o in outcomes] == [(550, "rcpt"), (250, "data")]


def test_all_refused_for_good_gives_the_downstreams_permanent_code_and_a_catalog_reason() -> None:
    script = Script(rcpt={"nobody@example.test": "550 5.1.1 <nobody@example.test> User doesn't exist"}, after_data=[])
    outcomes = asyncio.run(deliver(script, ["nobody@example.test"]))
    verdict = decide(outcomes)
    assert verdict is not None and verdict.action is Action.REJECT
    assert (verdict.reason, verdict.code, verdict.enhanced_code) == ("rcpt.unknown_user", 550, "5.1.1")
    assert "DATA" not in script.commands


def test_any_deferred_recipient_defers_the_whole_message_so_nothing_is_lost() -> None:
    script = Script(after_data=["250 2.0.0 ok", "451 4.3.0 <carol@example.test> Temporary internal error"])
    verdict = decide(asyncio.run(deliver(script, ["bob@example.test", "carol@example.test"])))
    assert verdict is not None and verdict.action is Action.TEMPFAIL
    assert (verdict.reason, verdict.code, verdict.enhanced_code) == ("infra.downstream", 451, "4.4.1")


def test_a_full_mailbox_deferred_by_the_downstream_is_named_as_such() -> None:
    script = Script(after_data=["452 4.2.2 <bob@example.test> Mailbox full"])
    verdict = decide(asyncio.run(deliver(script, ["bob@example.test"])))
    assert verdict is not None and (verdict.reason, verdict.code, verdict.enhanced_code) == (
        "rcpt.mailbox_full",
        452,
        "4.2.2",
    )


def test_smtp_mode_applies_the_one_reply_after_data_to_every_recipient() -> None:
    script = Script(after_data=["250 2.0.0 queued as X1"])
    outcomes = asyncio.run(deliver(script, ["bob@example.test", "carol@example.test"], mode="smtp"))
    assert [o.reply.line for o in outcomes] == ["250 2.0.0 queued as X1"] * 2
    assert script.commands[0] == "EHLO mx.example.test"


def test_a_connection_lost_between_lmtp_replies_defers_the_unanswered_recipients_only() -> None:
    script = Script(after_data=["250 2.0.0 <bob@example.test> Saved", "close"])
    outcomes = asyncio.run(deliver(script, ["bob@example.test", "carol@example.test"]))
    assert outcomes[0].reply.accepted
    assert outcomes[1].reply.code == 451 and outcomes[1].reply.text.startswith("4.4.2 no answer")
    verdict = decide(outcomes)
    assert verdict is not None and verdict.action is Action.TEMPFAIL


def test_a_silent_downstream_after_the_message_defers_every_recipient_without_hanging() -> None:
    script = Script(after_data=[None])
    outcomes = asyncio.run(deliver(script, ["bob@example.test", "carol@example.test"], wait=0.5))
    assert [o.reply.code for o in outcomes] == [451, 451]


def test_a_downstream_that_is_down_silent_or_rude_raises_with_the_cause() -> None:
    port = free_port()  # nothing listens there
    with pytest.raises(DownstreamError, match="cannot connect"):
        asyncio.run(downstream(port).deliver("a@b.test", ["bob@example.test"], b"", opener()))
    with pytest.raises(DownstreamError, match=r"no reply within 0\.5 seconds"):
        asyncio.run(deliver(Script(greeting=None), ["bob@example.test"], wait=0.5))
    with pytest.raises(DownstreamError, match=r"not an SMTP/LMTP reply: HTTP/1\.1 400"):
        asyncio.run(deliver(Script(greeting="HTTP/1.1 400 Bad Request"), ["bob@example.test"]))
    with pytest.raises(DownstreamError, match="greeting 554 go away"):
        asyncio.run(deliver(Script(greeting="554 go away"), ["bob@example.test"]))


def test_reply_texts_from_the_downstream_cannot_forge_lines() -> None:
    reply = DownstreamReply(250, "2.0.0 ok")
    assert reply.enhanced == "2.0.0" and DownstreamReply(250, "ok").enhanced is None
    script = Script(after_data=["250 2.0.0 saved \x1b[31m"])
    (outcome,) = asyncio.run(deliver(script, ["bob@example.test"]))
    assert outcome.reply.text == "2.0.0 saved \\x1b[31m"


def test_the_downstream_may_be_a_unix_socket(tmp_path: Path) -> None:
    path = str(tmp_path / "lmtp")
    script = Script(after_data=["250 2.0.0 <bob@example.test> Saved"])

    async def run() -> list[Outcome]:
        async with fake_server(script, unix_path=path):
            settings = DeliveryConfig(mode="lmtp", downstream=path)
            return await Downstream(settings, "mx.example.test").deliver("", ["bob@example.test"], b"", opener())

    (outcome,) = asyncio.run(run())
    assert outcome.reply.accepted
    assert script.commands[1] == "MAIL FROM:<>"
