"""One POP3 connection: the protocol (RFC 1939, 2449, 2595, 5034) and the evidence it leaves.

States: AUTHORIZATION until a login succeeds and the mailbox lock is taken, then TRANSACTION;
QUIT in TRANSACTION is the UPDATE state, the only place where messages are deleted. Every
login (and failed login), retrieval (RETR, TOP), deletion and logout is an event of source
"pop3", carrying the mailbox address, the client address, whether TLS was on, and for messages
the Maildir uid, the Message-ID and the ref of the delivery - so a trace can join delivery,
retrieval and deletion. Deletion events are committed to the store before any file is removed.
"""

from __future__ import annotations

import asyncio
import binascii
import enum
import logging
import ssl
import time
from collections.abc import Awaitable, Callable
from typing import Any, BinaryIO, Final, cast

from mailwarden import metrics
from mailwarden.addresses import login_name
from mailwarden.deliver.maildir import MailboxLock
from mailwarden.dotstuff import DotStuffer
from mailwarden.events import Event
from mailwarden.pop3.maildrop import (
    CHUNK,
    Entry,
    Identity,
    Maildrop,
    identity_of,
    open_message,
    read_head,
    top_lines,
    uidl_of,
)
from mailwarden.pop3.server import Pop3Server
from mailwarden.store import StoreError
from mailwarden.text import ascii_printable, printable

log = logging.getLogger(__name__)

MAX_DISCARD: Final = 1024 * 1024  # bytes of one overlong line we skip before hanging up
PROTOCOL: Final = "pop3"


class State(enum.Enum):
    AUTHORIZATION = "authorization"
    TRANSACTION = "transaction"


class _LineTooLong:
    """Marker: the client sent a line longer than allowed (already skipped)."""


TOO_LONG: Final = _LineTooLong()


class Hangup(Exception):
    """End the session now (the reason is recorded in the logout/disconnect event)."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


Handler = Callable[["Pop3Session", str], Awaitable[None]]


class Pop3Session:
    def __init__(self, server: Pop3Server, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.server = server
        self.settings = server.settings
        self.reader = reader
        self.writer = writer
        self.id = server.refs.new()
        peer = writer.get_extra_info("peername") or ("0.0.0.0", 0)
        self.client_ip: str = peer[0]
        self.client_port: int = peer[1]
        self.state = State.AUTHORIZATION
        self.tls: str | None = None
        self.user: str | None = None  # the USER argument, waiting for PASS
        self.mailbox: str | None = None
        self.mechanism: str | None = None
        self.drop: Maildrop | None = None
        self.lock: MailboxLock | None = None
        self.errors = 0
        self.commands = 0
        self.retrieved = 0
        self.retrieved_octets = 0
        self.deleted = 0
        self.vanished: list[str] = []
        self.end_reason = "lost"
        self._forced_end: str | None = None  # set when the server ends the session
        self._started = time.monotonic()
        self._counted = False

    # ------------------------------------------------------------------ evidence
    def _new_event(self, kind: str, **fields: Any) -> Event:
        detail: dict[str, Any] = {"protocol": PROTOCOL, "port": self.client_port, "tls": self.tls}
        detail.update(fields.pop("detail", {}))
        fields.setdefault("ref", self.id)
        return Event(
            kind=kind,
            source=PROTOCOL,
            node=self.server.node,
            session=self.id,
            client_ip=self.client_ip,
            detail=detail,
            **fields,
        )

    def _event(self, kind: str, **fields: Any) -> Event:
        """Record an event (queued; committed with the next batch); a login is counted too."""
        event = self._new_event(kind, **fields)
        self.server.store.append(event)
        if kind == "login":
            metrics.count_pop3_login(event.reason)
        return event

    def _message_event(self, kind: str, entry: Entry, identity: Identity, **detail: Any) -> Event:
        """A retrieve or delete event for one message (not yet recorded)."""
        assert self.mailbox is not None
        return self._new_event(
            kind,
            recipient=self.mailbox,
            ref=identity.ref,
            message_key=identity.ref,  # the delivery's message (its X-Mailwarden-Ref)
            message_id=identity.message_id,
            size=entry.stored.size,
            reason="access.retrieved" if kind == "retrieve" else "access.deleted",
            detail={"uid": entry.stored.uid, "number": entry.number, "mailbox": self.mailbox, **detail},
        )

    # ------------------------------------------------------------------ the connection
    async def run(self) -> None:
        server = self.server
        server.sessions.add(self)
        metrics.count_pop3_session()
        server.per_ip[self.client_ip] += 1
        self._counted = True
        try:
            await self._serve()
        except Hangup as hangup:
            self.end_reason = hangup.reason
        except (ConnectionError, TimeoutError, ssl.SSLError, OSError) as exc:
            log.debug("pop3 session %s ended: %s", self.id, exc)
        except Exception:
            log.exception("pop3 session %s failed", self.id)
            self.end_reason = "internal error"
            await self._final("-ERR [SYS/TEMP] Internal error; nothing was deleted in this session")
        finally:
            self._finish()

    async def _serve(self) -> None:
        server, settings = self.server, self.settings
        if server.shutting_down:
            await self._final("-ERR [SYS/TEMP] Server shutting down; try again later")
            raise Hangup("shutdown")
        if len(server.sessions) > settings.max_connections or server.per_ip[self.client_ip] > (
            settings.max_connections_per_ip
        ):
            await self._final("-ERR [SYS/TEMP] Too many connections; try again later")
            raise Hangup("too many connections")
        await self._send(f"+OK {ascii_printable(server.config.smtp.hostname, 100)} POP3 server ready")
        while True:
            line = await self._read_line()
            if line is TOO_LONG:
                await self._error(f"-ERR Line too long: the limit is {settings.max_command_line} octets")
                continue
            assert isinstance(line, str)
            self.commands += 1
            verb, _, argument = line.partition(" ")
            verb = verb.upper()
            command = COMMANDS.get(verb)
            if command is None:
                shown = ascii_printable(verb, 20) or "(empty line)"
                await self._error(f"-ERR Unknown command {shown}")
                continue
            handler, states = command
            if self.state not in states:
                when = "after login" if self.state is State.AUTHORIZATION else "before login"
                await self._error(f"-ERR {verb} is only valid {when}")
                continue
            await handler(self, argument)

    def hang_up(self, reply: str) -> None:
        """End the session from outside (server shutdown): a last reply, then close."""
        self._forced_end = "shutdown"
        try:
            self.writer.write(reply.encode("ascii", "replace") + b"\r\n")
        except (RuntimeError, OSError):
            pass
        self.writer.close()

    def _finish(self) -> None:
        server = self.server
        if self._counted:
            server.sessions.discard(self)
            server.per_ip[self.client_ip] -= 1
            if server.per_ip[self.client_ip] <= 0:
                del server.per_ip[self.client_ip]
            self._counted = False
        if self.lock is not None:
            self.lock.release()
            self.lock = None
        detail: dict[str, Any] = {
            "reason": self._forced_end or self.end_reason,
            "commands": self.commands,
            "errors": self.errors,
            "seconds": round(time.monotonic() - self._started, 3),
        }
        if self.mailbox is not None and self.drop is not None:
            marked = len(self.drop.marked())
            detail.update(
                messages=len(self.drop.entries),
                retrieved=self.retrieved,
                retrieved_octets=self.retrieved_octets,
                deleted=self.deleted,
                mechanism=self.mechanism,
            )
            if marked and not self.deleted:
                detail["marked_not_deleted"] = marked  # DELE without QUIT: nothing was deleted
            if self.vanished:
                detail["vanished"] = self.vanished
            self._event("logout", recipient=self.mailbox, detail=detail)
        else:
            self._event("disconnect", detail=detail)
        self.writer.close()

    # ------------------------------------------------------------------ reading and writing
    def _timeout(self) -> float:
        return self.settings.timeout if self.state is State.TRANSACTION else self.settings.login_timeout

    async def _read_line(self, limit: int | None = None) -> str | _LineTooLong:
        """The next line without its line end; TOO_LONG for an overlong line (skipped)."""
        timeout = self._timeout()
        try:
            raw = await asyncio.wait_for(self.reader.readuntil(b"\n"), timeout)
        except TimeoutError:
            await self._final(f"-ERR Disconnected for inactivity ({int(timeout)} seconds); nothing was deleted")
            raise Hangup("timeout") from None
        except asyncio.IncompleteReadError:
            raise Hangup("lost") from None
        except asyncio.LimitOverrunError as exc:
            await self._skip_line(exc.consumed)
            return TOO_LONG
        if len(raw) > (limit or self.settings.max_command_line):
            return TOO_LONG
        return raw.rstrip(b"\r\n").decode("utf-8", "surrogateescape")

    async def _skip_line(self, buffered: int) -> None:
        timeout = self._timeout()
        skipped = 0
        while skipped <= MAX_DISCARD:
            chunk = await asyncio.wait_for(self.reader.read(max(buffered, 1)), timeout)
            if not chunk:
                raise Hangup("lost")
            skipped += len(chunk)
            if chunk.endswith(b"\n"):
                return
            try:
                await asyncio.wait_for(self.reader.readuntil(b"\n"), timeout)
                return
            except asyncio.LimitOverrunError as exc:
                buffered = exc.consumed
            except asyncio.IncompleteReadError:
                raise Hangup("lost") from None
        await self._final("-ERR Line too long; closing")
        raise Hangup("overlong line")

    async def _send(self, text: str, body: bytes = b"") -> None:
        """A reply line (none if `text` is empty: a continuation) and multi-line data after it."""
        self.writer.write((text.encode("utf-8", "replace") + b"\r\n" if text else b"") + body)
        await asyncio.wait_for(self.writer.drain(), self._timeout())

    async def _final(self, text: str) -> None:
        """A last reply before closing; the client may already be gone."""
        try:
            await self._send(text)
        except (ConnectionError, TimeoutError, OSError, RuntimeError):
            pass

    async def _error(self, text: str) -> None:
        """An error reply for a client mistake; too many of them end the session."""
        self.errors += 1
        if self.errors >= self.settings.max_errors:
            await self._final(f"{text} (too many errors: closing)")
            raise Hangup("too many errors")
        await self._send(text)

    async def _multiline(self, first: str, lines: list[str]) -> None:
        body = "".join(f"{line}\r\n" for line in lines) + ".\r\n"
        await self._send(first, body.encode("ascii"))

    # ------------------------------------------------------------------ AUTHORIZATION
    def _plaintext_allowed(self) -> bool:
        return self.tls is not None or self.settings.allow_plaintext_auth

    async def _refuse_plaintext(self, mechanism: str) -> None:
        self._event(
            "login",
            reason="access.login_failed",
            detail={"mechanism": mechanism, "problem": "plaintext login without TLS is not allowed"},
        )
        await self._error(
            "-ERR [AUTH] Plaintext authentication is not allowed on an unencrypted connection; use STLS first"
        )

    async def cmd_capa(self, argument: str) -> None:
        lines = ["TOP", "UIDL", "RESP-CODES", "AUTH-RESP-CODE", "PIPELINING", "EXPIRE NEVER"]
        if self.state is State.AUTHORIZATION:
            if self._plaintext_allowed():
                lines += ["USER", "SASL PLAIN"]
            if self.server.tls_context is not None and self.tls is None:
                lines.append("STLS")
        lines.append("IMPLEMENTATION mailwarden")
        await self._multiline("+OK Capability list follows", lines)

    async def cmd_stls(self, argument: str) -> None:
        context = self.server.tls_context
        if context is None:
            await self._error("-ERR STLS is not available on this server")
            return
        if self.tls is not None:
            await self._error("-ERR Already using TLS")
            return
        # Stop reading before the reply: the client's TLS handshake must stay in the socket for the
        # TLS layer, and commands pipelined behind STLS (plaintext, RFC 2595 4) are dropped unread.
        cast(asyncio.ReadTransport, self.writer.transport).pause_reading()
        buffered = getattr(self.reader, "_buffer", None)
        if isinstance(buffered, bytearray):
            buffered.clear()
        await self._send("+OK Begin TLS negotiation")
        try:
            await self.writer.start_tls(context, ssl_handshake_timeout=self.settings.login_timeout)
        except (ssl.SSLError, OSError, TimeoutError) as exc:
            raise Hangup(f"TLS handshake failed: {printable(str(exc), 200)}") from None
        ssl_object = self.writer.get_extra_info("ssl_object")
        self.tls = ssl_object.version() if ssl_object is not None else "TLS"
        self.user = None  # RFC 2595 4: nothing learnt before TLS carries over

    async def cmd_user(self, argument: str) -> None:
        if not self._plaintext_allowed():
            await self._refuse_plaintext("USER")
            return
        if not argument.strip():
            await self._error("-ERR USER needs a user name")
            return
        self.user = argument  # read by `login_name`, like a SASL PLAIN user name
        await self._send("+OK Send the password with PASS")

    async def cmd_pass(self, argument: str) -> None:
        if self.user is None:
            await self._error("-ERR Send USER first")
            return
        user, self.user = self.user, None
        await self._login(user, argument, "USER")

    async def cmd_auth(self, argument: str) -> None:
        mechanism, _, initial = argument.strip().partition(" ")
        if not mechanism:
            await self._multiline("+OK Supported mechanisms follow", ["PLAIN"])
            return
        if mechanism.upper() != "PLAIN":
            await self._error(f"-ERR Unsupported authentication mechanism {ascii_printable(mechanism, 20)}")
            return
        if not self._plaintext_allowed():
            await self._refuse_plaintext("PLAIN")
            return
        response = initial.strip()
        if not response:
            await self._send("+ ")
            line = await self._read_line(limit=self.server.stream_limit)
            if line is TOO_LONG:
                await self._error("-ERR [AUTH] Authentication response too long")
                return
            assert isinstance(line, str)
            response = line.strip()
        if response == "*":
            await self._error("-ERR Authentication cancelled")
            return
        credentials = _decode_plain("" if response == "=" else response)
        if credentials is None:
            await self._error("-ERR [AUTH] Malformed PLAIN response (RFC 4616: [authzid] NUL user NUL password)")
            return
        await self._login(credentials[0], credentials[1], "PLAIN")

    async def _login(self, name: str, password: str, mechanism: str) -> None:
        server = self.server
        login = login_name(name)  # the one reading of the name: lock, delay and lookup all use login.mailbox
        mailbox = login.mailbox
        shown_name = printable(name, 200)
        lock = server.guard.locked(self.client_ip, mailbox)
        if lock is not None:
            minutes = max(1, round(lock.remaining / 60))
            self._event(
                "login",
                recipient=mailbox,
                reason="access.login_locked",
                detail={
                    "mechanism": mechanism,
                    "user": shown_name,
                    "locked": self.client_ip if lock.scope == "address" else mailbox,
                    "scope": lock.scope,
                    "minutes": minutes,
                },
            )
            await self._send(
                f"-ERR [AUTH] Too many failed logins {'from this address' if lock.scope == 'address' else 'for this user'}; "
                f"try again in {minutes} minute(s) ref={self.id}"
            )
            return
        record = None
        if login.problem is None and mailbox is not None:
            try:
                record = await server.store.find_mailbox(mailbox)
            except StoreError as exc:
                log.error("pop3 login: the mailbox store failed: %s", exc)
                await self._send("-ERR [SYS/TEMP] The mailbox directory is temporarily unavailable; try again later")
                return
            if await server.check_password(record.password_hash if record else None, password):
                server.guard.succeeded(mailbox)
                await self._open_mailbox(mailbox, mechanism)
                return
        failures, delay = server.guard.failed(self.client_ip, mailbox)
        if login.problem is not None:
            problem = f"user name refused: {login.problem}"
        else:
            problem = "wrong password" if record else "no such mailbox"
        self._event(
            "login",
            recipient=mailbox,
            reason="access.login_failed",
            detail={
                "mechanism": mechanism,
                "user": shown_name,
                "problem": problem,
                "failures": failures,
                "delay": delay,
            },
        )
        await asyncio.sleep(delay)
        if login.problem is not None:
            await self._send(
                f"-ERR [AUTH] The user name is refused: {login.problem}; "
                f"log in with your mailbox address as local@domain ref={self.id}"
            )
        else:
            await self._send(f"-ERR [AUTH] Invalid user name or password ref={self.id}")

    async def _open_mailbox(self, mailbox: str, mechanism: str) -> None:
        maildirs = self.server.maildirs
        try:
            lock = await asyncio.to_thread(maildirs.lock, mailbox)
            if lock is None:
                self._event("login", recipient=mailbox, reason="access.in_use", detail={"mechanism": mechanism})
                await self._send("-ERR [IN-USE] The mailbox is in use by another session; try again later")
                return
            try:
                drop = await asyncio.to_thread(Maildrop.load, maildirs, mailbox)
            except BaseException:
                lock.release()
                raise
        except OSError as exc:
            log.error("pop3: cannot open the mailbox %s: %s", mailbox, exc)
            await self._send("-ERR [SYS/TEMP] The mailbox cannot be opened right now; try again later")
            return
        self.lock, self.drop, self.mailbox, self.mechanism = lock, drop, mailbox, mechanism
        self.state = State.TRANSACTION
        count, octets = drop.stat()
        self._event(
            "login",
            recipient=mailbox,
            detail={"mechanism": mechanism, "messages": count, "octets": octets},
        )
        await self._send(f"+OK Logged in: {count} message(s) ({octets} octets)")

    # ------------------------------------------------------------------ TRANSACTION
    def _drop(self) -> Maildrop:
        assert self.drop is not None
        return self.drop

    async def _entry(self, argument: str, *, allow_deleted: bool = False) -> Entry | None:
        """The message an argument names, or None after an error reply."""
        text = argument.strip()
        if not text.isascii() or not text.isdigit():
            await self._error("-ERR Give a message number")
            return None
        drop = self._drop()
        entry = drop.entry(int(text))
        if entry is None:
            await self._error(f"-ERR No such message; the maildrop has {len(drop.entries)} message(s)")
            return None
        if entry.deleted and not allow_deleted:
            await self._error(f"-ERR Message {entry.number} is marked as deleted")
            return None
        return entry

    async def cmd_stat(self, argument: str) -> None:
        count, octets = self._drop().stat()
        await self._send(f"+OK {count} {octets}")

    async def cmd_list(self, argument: str) -> None:
        await self._listing(argument, lambda e: str(e.stored.size))

    async def cmd_uidl(self, argument: str) -> None:
        await self._listing(argument, lambda e: uidl_of(e.stored.uid))

    async def _listing(self, argument: str, value: Callable[[Entry], str]) -> None:
        if argument.strip():
            entry = await self._entry(argument)
            if entry is not None:
                await self._send(f"+OK {entry.number} {value(entry)}")
            return
        count, octets = self._drop().stat()
        lines = [f"{e.number} {value(e)}" for e in self._drop().visible()]
        await self._multiline(f"+OK {count} message(s) ({octets} octets)", lines)

    async def cmd_retr(self, argument: str) -> None:
        entry = await self._entry(argument)
        if entry is not None:
            await self._transfer(entry, None)

    async def cmd_top(self, argument: str) -> None:
        number, _, lines = argument.strip().partition(" ")
        if not lines.strip().isascii() or not lines.strip().isdigit():
            await self._error("-ERR TOP needs a message number and a number of lines")
            return
        entry = await self._entry(number)
        if entry is not None:
            await self._transfer(entry, int(lines.strip()))

    async def _transfer(self, entry: Entry, top: int | None) -> None:
        """Send a message (RETR) or its head (TOP), then record the retrieval."""
        assert self.mailbox is not None
        maildirs, mailbox = self.server.maildirs, self.mailbox

        def open_and_read() -> tuple[BinaryIO | None, bytes]:
            handle = open_message(maildirs, mailbox, entry)
            if handle is None:
                return None, b""
            return handle, (b"".join(top_lines(handle, top)) if top is not None else handle.read(CHUNK))

        handle, head = await asyncio.to_thread(open_and_read)
        if handle is None:
            self.vanished.append(entry.stored.uid)
            await self._send(f"-ERR Message {entry.number} is no longer in the mailbox (removed by another program)")
            return
        encoder = DotStuffer()
        try:
            if top is not None:
                octets = len(head)
                await self._send("+OK Top of message follows", encoder.feed(head) + encoder.finish())
            else:
                octets = await self._stream(handle, head, f"+OK {entry.stored.size} octets", encoder)
        finally:
            handle.close()
        if entry.identity is None:
            entry.identity = identity_of(head)
        entry.retrieved = True
        self.retrieved += 1
        self.retrieved_octets += octets
        detail: dict[str, Any] = {"command": "RETR" if top is None else "TOP"}
        if top is not None:
            detail["lines"] = top
        self.server.store.append(self._message_event("retrieve", entry, entry.identity, **detail))

    async def _stream(self, handle: BinaryIO, chunk: bytes, status: str, encoder: DotStuffer) -> int:
        """Send a whole message chunk by chunk (a big one never sits in memory at once); returns its octets."""
        octets = 0
        while True:
            octets += len(chunk)
            body = encoder.feed(chunk)
            chunk = await asyncio.to_thread(handle.read, CHUNK) if len(chunk) == CHUNK else b""
            if not chunk:
                await self._send(status, body + encoder.finish())
                return octets
            await self._send(status, body)
            status = ""

    async def cmd_dele(self, argument: str) -> None:
        entry = await self._entry(argument)
        if entry is not None:
            entry.deleted = True
            await self._send(f"+OK Message {entry.number} marked; it is deleted at QUIT")

    async def cmd_rset(self, argument: str) -> None:
        drop = self._drop()
        drop.reset()
        count, octets = drop.stat()
        await self._send(f"+OK Maildrop has {count} message(s) ({octets} octets)")

    async def cmd_noop(self, argument: str) -> None:
        await self._send("+OK")

    async def cmd_quit(self, argument: str) -> None:
        if self.state is State.AUTHORIZATION:
            self.end_reason = "quit"
            await self._final("+OK Bye")
            raise Hangup("quit")
        reply = await self._update()
        await self._final(reply)
        raise Hangup(self.end_reason)

    async def _update(self) -> str:
        """The UPDATE state: record the deletions durably, then delete; the QUIT reply."""
        assert self.mailbox is not None
        maildirs, store = self.server.maildirs, self.server.store
        present: list[Entry] = []
        for entry in self._drop().marked():
            if entry.identity is None:
                head = await asyncio.to_thread(read_head, maildirs, self.mailbox, entry)
                if head is None:
                    self.vanished.append(entry.stored.uid)
                    continue
                entry.identity = identity_of(head)
            present.append(entry)
        deletions = [
            self._message_event("delete", entry, entry.identity, retrieved=entry.retrieved)
            for entry in present
            if entry.identity is not None
        ]
        try:  # the deletions are on record before any file goes, or nothing goes
            await store.durable(deletions)
        except StoreError as exc:
            log.error("pop3: deletions in %s not recorded (%s): nothing deleted", self.mailbox, exc)
            self.end_reason = "quit, deletion not recorded"
            return "-ERR [SYS/TEMP] The deletions could not be recorded, so nothing was deleted; try again later"
        removed = await asyncio.to_thread(maildirs.expunge, self.mailbox, [e.stored for e in present])
        self.deleted = len(removed)
        self.end_reason = "quit"
        removed_uids = {stored.uid for stored in removed}
        failed = [e for e in present if e.stored.uid not in removed_uids]
        for entry in failed:
            assert entry.identity is not None
            store.append(self._message_event("delete", entry, entry.identity, failed=True))
        await self._mark_seen()
        if failed:
            return f"-ERR [SYS/TEMP] {len(failed)} message(s) could not be deleted; {len(removed)} deleted"
        return f"+OK Bye: {len(removed)} message(s) deleted"

    async def _mark_seen(self) -> None:
        """Retrieved messages that stay get the Maildir "seen" flag, as other mail programs expect."""
        assert self.mailbox is not None
        kept = [e for e in self._drop().entries if e.retrieved and not e.deleted]
        for entry in kept:
            try:
                await asyncio.to_thread(self.server.maildirs.set_flags, self.mailbox, entry.stored, "S")
            except OSError as exc:
                log.warning("pop3: could not flag %s as seen: %s", entry.stored.uid, exc)


def _decode_plain(response: str) -> tuple[str, str] | None:
    """(user, password) from a SASL PLAIN response; None if malformed or asking to act as someone else."""
    try:
        raw = binascii.a2b_base64(response.encode("ascii"), strict_mode=True)
        authzid, user, password = raw.decode("utf-8").split("\0")
    except (ValueError, UnicodeError, binascii.Error):
        return None
    if not user or (authzid and authzid != user):
        return None
    return user, password


_AUTH: Final = frozenset({State.AUTHORIZATION})
_TRANSACTION: Final = frozenset({State.TRANSACTION})
_ANY: Final = frozenset(State)

COMMANDS: Final[dict[str, tuple[Handler, frozenset[State]]]] = {
    "CAPA": (Pop3Session.cmd_capa, _ANY),
    "STLS": (Pop3Session.cmd_stls, _AUTH),
    "USER": (Pop3Session.cmd_user, _AUTH),
    "PASS": (Pop3Session.cmd_pass, _AUTH),
    "AUTH": (Pop3Session.cmd_auth, _AUTH),
    "QUIT": (Pop3Session.cmd_quit, _ANY),
    "STAT": (Pop3Session.cmd_stat, _TRANSACTION),
    "LIST": (Pop3Session.cmd_list, _TRANSACTION),
    "UIDL": (Pop3Session.cmd_uidl, _TRANSACTION),
    "RETR": (Pop3Session.cmd_retr, _TRANSACTION),
    "TOP": (Pop3Session.cmd_top, _TRANSACTION),
    "DELE": (Pop3Session.cmd_dele, _TRANSACTION),
    "RSET": (Pop3Session.cmd_rset, _TRANSACTION),
    "NOOP": (Pop3Session.cmd_noop, _TRANSACTION),
}
