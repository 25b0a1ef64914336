"""Proxy mode: hand the message to the mailbox server (LMTP, e.g. Dovecot) or to another MTA (SMTP)
during the SMTP session, and turn its answers into our one reply to the sender.

Nothing is queued here: the sender hears "250" only when the downstream has taken the message for
every recipient, and a downstream that is down, slow or speaks nonsense gives a 451 4.4.1
(infra.downstream), so the sender retries and nothing is lost. LMTP answers after the message once
per recipient (RFC 2033 4.2); `decide` maps those answers onto ours:
- all accepted: 250;
- any deferred (4xx): 451 for the whole message - the sender retries; recipients that already
  got it may get it twice, which is better than losing it for the deferred one;
- all refused for good (5xx): the downstream's refusal, with its enhanced status code;
- some accepted, the rest refused for good: 250, and the reply text names each refused recipient
  with the downstream's reason (and each refusal is an event).

A deferral after some recipients already have the message would make the sender's retry deliver
it to them again. So before a transaction is handed on, recipients for which the store already
holds a proxy delivery of the same message - same Message-ID, same sender and the same content,
by its SHA-256 digest (`content_digest`, in each deliver event's `detail.content_sha256`) - within
`DEDUP_DAYS` are skipped and counted as delivered: retries reach only those still missing, while
a different message that reuses a Message-ID (forged, or a sender's bug) is delivered.

Our own client: smtplib.LMTP reads a single reply after DATA whatever the number of recipients
(cpython#76984) and aiosmtplib has no LMTP. One connection per transaction; every read has a timeout.
"""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import BinaryIO, Final, Literal

from mailwarden import replycodes
from mailwarden.checks.base import Action, Verdict
from mailwarden.config import DeliveryConfig, parse_hostport
from mailwarden.dotstuff import DotStuffer
from mailwarden.events import now_us
from mailwarden.store import EventQuery, Store
from mailwarden.text import printable

CHUNK: Final = 1024 * 1024
DEDUP_DAYS: Final = 7
MAX_REPLY_LINES: Final = 100

Stage = Literal["mail", "rcpt", "data", "earlier"]


class DownstreamError(Exception):
    """The downstream could not be reached or did not behave; the message is deferred (451 4.4.1)."""

    def __init__(self, problem: str) -> None:
        super().__init__(problem)
        self.problem = problem


@dataclass(frozen=True)
class DownstreamReply:
    code: int
    text: str  # the reply's lines joined by spaces, control characters escaped

    @property
    def accepted(self) -> bool:
        return 200 <= self.code < 300

    @property
    def temporary(self) -> bool:
        return 400 <= self.code < 500

    @property
    def enhanced(self) -> str | None:
        return replycodes.leading(self.text).enhanced

    @property
    def line(self) -> str:
        return f"{self.code} {self.text}"


@dataclass(frozen=True)
class Outcome:
    """The downstream's answer for one recipient, and at which stage it came."""

    mailbox: str
    reply: DownstreamReply
    stage: Stage


def verdict_for(outcome: Outcome) -> Verdict:
    """Our catalog reason for a downstream refusal of one recipient."""
    reply = outcome.reply
    values = {"recipient": outcome.mailbox, "reply": reply.line, "problem": f"it answered {reply.line}"}
    detail = {"downstream_reply": reply.line, "downstream_stage": outcome.stage}
    if reply.temporary:
        if (reply.enhanced or "")[2:] == "2.2":  # mailbox full: say so, the recipient can act
            return Verdict(Action.TEMPFAIL, "rcpt.mailbox_full", values, detail, reply.code, reply.enhanced)
        return Verdict(Action.TEMPFAIL, "infra.downstream", values, detail)
    enhanced = reply.enhanced or "5.0.0"
    reason = {"1.1": "rcpt.unknown_user", "2.2": "rcpt.mailbox_full"}.get(enhanced[2:], "rcpt.downstream_refused")
    return Verdict(Action.REJECT, reason, values, detail, reply.code, enhanced)


def decide(outcomes: Sequence[Outcome]) -> Verdict | None:
    """The verdict for the whole message (None: answer 250); see the module docstring."""
    refused = [o for o in outcomes if not o.reply.accepted]
    if not refused:
        return None
    deferred = [o for o in refused if o.reply.temporary]
    if deferred:
        return verdict_for(deferred[0])
    if len(refused) == len(outcomes):
        return verdict_for(refused[0])
    return None


def content_digest(open_message: Callable[[], BinaryIO]) -> str:
    """SHA-256 (hex) of the message as the client sent it; blocking, run it in a worker thread.

    Our trace headers are not part of it (their ref and time differ per attempt), so a sender's
    retry of the same message has the same digest.
    """
    digest = hashlib.sha256()
    with open_message() as handle:
        while chunk := handle.read(CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def earlier_deliveries(
    store: Store, message_id: str | None, sender: str, digest: str, mailboxes: Sequence[str]
) -> dict[str, str]:
    """Mailboxes that already got this message through the downstream: mailbox -> the ref it came with.

    The same message: the same Message-ID, sender and content digest. Blocking (a store query):
    run it in a worker thread.
    """
    if message_id is None:
        return {}
    query = EventQuery(
        since_us=now_us() - DEDUP_DAYS * 86_400_000_000,
        kinds=("deliver",),
        source="gateway",
        message_id=message_id,
        sender=sender,
    )
    wanted = set(mailboxes)
    found: dict[str, str] = {}
    for event in store.query_events(query):
        mailbox = event.detail.get("mailbox")
        same = event.detail.get("content_sha256") == digest and "downstream" in event.detail
        if mailbox in wanted and same and event.ref:
            found.setdefault(mailbox, event.ref)
    return found


def already_delivered(mailbox: str, ref: str) -> Outcome:
    return Outcome(mailbox, DownstreamReply(250, f"2.0.0 already delivered with ref={ref}"), "earlier")


class _Connection:
    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, timeout: float) -> None:
        self.reader = reader
        self.writer = writer
        self.timeout = timeout

    async def reply(self, within: float | None = None) -> DownstreamReply:
        seconds = within or self.timeout
        lines: list[str] = []
        code = 0
        while len(lines) < MAX_REPLY_LINES:
            try:
                raw = await asyncio.wait_for(self.reader.readuntil(b"\n"), seconds)
            except TimeoutError:
                raise DownstreamError(f"no reply within {seconds:g} seconds") from None
            except asyncio.IncompleteReadError:
                raise DownstreamError("the connection was closed") from None
            except asyncio.LimitOverrunError:
                raise DownstreamError("a reply line is too long") from None
            line = replycodes.wire_line(raw)
            if line is None or (code and line[0] != code):
                raise DownstreamError(f"not an SMTP/LMTP reply: {printable(raw.decode('latin-1'), 200)}")
            code, last, text = line
            lines.append(printable(text.decode("utf-8", "replace"), 1000))
            if last:
                return DownstreamReply(code, " ".join(lines))
        raise DownstreamError(f"a reply of more than {MAX_REPLY_LINES} lines")

    async def command(self, line: str) -> DownstreamReply:
        self.writer.write(line.encode("utf-8") + b"\r\n")
        await self.drain()
        return await self.reply()

    async def drain(self) -> None:
        try:
            await asyncio.wait_for(self.writer.drain(), self.timeout)
        except TimeoutError:
            raise DownstreamError(f"it took no data for {self.timeout:g} seconds") from None
        except OSError as exc:
            raise DownstreamError(f"the connection broke: {exc.strerror or exc}") from None


class Downstream:
    """The configured downstream: `deliver` runs one transaction on a fresh connection."""

    def __init__(self, settings: DeliveryConfig, helo: str) -> None:
        self.settings = settings
        self.helo = helo
        self.lmtp = settings.mode == "lmtp"
        self.label = f"{settings.mode} {settings.downstream}"

    async def _connect(self) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        if self.settings.downstream.startswith("/"):
            return await asyncio.open_unix_connection(self.settings.downstream)
        host, port = parse_hostport(self.settings.downstream)
        return await asyncio.open_connection(host, port)

    async def deliver(
        self,
        sender: str,
        mailboxes: Sequence[str],
        prefix: bytes,
        open_message: Callable[[], BinaryIO],
        *,
        smtputf8: bool = False,
        eightbit: bool = False,
    ) -> list[Outcome]:
        """Deliver `prefix` + the message to `mailboxes`; one outcome per mailbox, in their order.

        Raises DownstreamError when nothing can be said per recipient (connection, greeting, protocol).
        """
        settings = self.settings
        try:
            reader, writer = await asyncio.wait_for(self._connect(), settings.connect_timeout)
        except TimeoutError:
            raise DownstreamError(f"{self.label}: no connection within {settings.connect_timeout:g} seconds") from None
        except OSError as exc:
            raise DownstreamError(f"{self.label}: cannot connect ({exc.strerror or exc})") from None
        connection = _Connection(reader, writer, settings.timeout)
        try:
            return await self._transaction(connection, sender, mailboxes, prefix, open_message, smtputf8, eightbit)
        except DownstreamError as exc:
            raise DownstreamError(f"{self.label}: {exc.problem}") from None
        finally:
            writer.close()

    async def _transaction(
        self,
        connection: _Connection,
        sender: str,
        mailboxes: Sequence[str],
        prefix: bytes,
        open_message: Callable[[], BinaryIO],
        smtputf8: bool,
        eightbit: bool,
    ) -> list[Outcome]:
        greeting = await connection.reply(within=self.settings.connect_timeout)
        if greeting.code != 220:
            raise DownstreamError(f"greeting {greeting.line}")
        hello = await connection.command(f"{'LHLO' if self.lmtp else 'EHLO'} {self.helo}")
        if hello.code != 250:
            raise DownstreamError(f"{'LHLO' if self.lmtp else 'EHLO'} answered {hello.line}")
        features = {word.upper() for word in hello.text.split()}
        parameters = ""
        if eightbit and "8BITMIME" in features:
            parameters += " BODY=8BITMIME"
        if smtputf8 and "SMTPUTF8" in features:
            parameters += " SMTPUTF8"
        mail = await connection.command(f"MAIL FROM:<{sender}>{parameters}")
        if not mail.accepted:
            return [Outcome(m, mail, "mail") for m in mailboxes]
        outcomes: dict[str, Outcome] = {}
        for mailbox in mailboxes:
            reply = await connection.command(f"RCPT TO:<{mailbox}>")
            if not reply.accepted:
                outcomes[mailbox] = Outcome(mailbox, reply, "rcpt")
        accepted = [m for m in mailboxes if m not in outcomes]
        if accepted:
            data = await connection.command("DATA")
            if data.code != 354:
                outcomes.update((m, Outcome(m, data, "data")) for m in accepted)
            else:
                await self._send_message(connection, prefix, open_message)
                outcomes.update(await self._final_replies(connection, accepted))
        await self._quit(connection)
        return [outcomes[m] for m in mailboxes]

    async def _send_message(self, connection: _Connection, prefix: bytes, open_message: Callable[[], BinaryIO]) -> None:
        encoder = DotStuffer()
        connection.writer.write(encoder.feed(prefix))
        handle = await asyncio.to_thread(open_message)
        try:
            while chunk := await asyncio.to_thread(handle.read, CHUNK):
                connection.writer.write(encoder.feed(chunk))
                await connection.drain()
        finally:
            handle.close()
        connection.writer.write(encoder.finish())
        await connection.drain()

    async def _final_replies(self, connection: _Connection, accepted: list[str]) -> dict[str, Outcome]:
        """The replies after the message: one per recipient for LMTP, one for all for SMTP.

        Once the message is sent, a recipient without an answer (the connection broke, the
        downstream went silent) is deferred, while those answered keep their answer.
        """
        outcomes: dict[str, Outcome] = {}
        if not self.lmtp:
            reply = await connection.reply()
            return {m: Outcome(m, reply, "data") for m in accepted}
        missing: DownstreamReply | None = None
        for mailbox in accepted:
            if missing is None:
                try:
                    outcomes[mailbox] = Outcome(mailbox, await connection.reply(), "data")
                    continue
                except DownstreamError as exc:
                    missing = DownstreamReply(
                        451, f"4.4.2 no answer from the downstream for this recipient: {exc.problem}"
                    )
            outcomes[mailbox] = Outcome(mailbox, missing, "data")
        return outcomes

    async def _quit(self, connection: _Connection) -> None:
        try:
            connection.writer.write(b"QUIT\r\n")
            await connection.reply(within=2.0)
        except (DownstreamError, OSError):
            pass  # the outcome is known; a rude goodbye changes nothing
