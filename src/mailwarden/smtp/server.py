"""The SMTP protocol: aiosmtpd 1.4.6, extended where it falls short for an MX.

aiosmtpd provides the stream plumbing and STARTTLS; this subclass adds what it lacks (measured):
- a connect-time decision before the greeting (its 220 is sent from a private method),
- an inactivity timeout that any received byte resets, also during DATA, that does not run
  while we are still deciding, and that ends with a 421,
- streaming DATA (`smtp/data.py`, `smtp/spool.py`) instead of buffering the whole message,
  with lines up to a configurable length instead of refusing anything over 1,001 bytes,
- strict MAIL/RCPT parsing (`addresses.parse_path`) and enhanced status codes on every reply,
- limits on command length and errors, a half-closing client is answered before we close,
  and once a message is complete its transaction finishes even if the client goes away.
aiosmtpd's constructor introspects the handler with `inspect` on every connection (14 % of the
CPU per connection, measured), so this class sets up its state itself. Policy (what to
answer) lives in `smtp/gateway.py`; this module only speaks the protocol. Because it overrides
private methods, aiosmtpd is pinned to 1.4.6.
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import ssl
from typing import TYPE_CHECKING, Any, AnyStr, Final

from aiosmtpd.proxy_protocol import get_proxy
from aiosmtpd.smtp import SMTP, Envelope, Session, TLSSetupException

from mailwarden.addresses import EnvelopePath, PathSyntaxError, parse_path
from mailwarden.smtp.data import DataDecoder
from mailwarden.smtp.replies import with_enhanced_code
from mailwarden.text import printable

if TYPE_CHECKING:
    from mailwarden.smtp.gateway import Connection

log = logging.getLogger(__name__)

ERROR_LIMIT: Final = 20  # error replies in one session before we hang up (Postfix: smtpd_hard_error_limit)
NON_SMTP: Final = frozenset({"GET", "POST", "HEAD", "PUT", "CONNECT", "OPTIONS", "USER"})
READ_CHUNK: Final = 64 * 1024
PREGREET_PEEK: Final = 512  # bytes of an early talker's input looked at before the greeting
STREAM_LIMIT: Final = 64 * 1024  # what the stream reader buffers before pausing the socket
COMMANDS: Final = (
    "EHLO", "HELO", "MAIL", "RCPT", "DATA", "RSET", "NOOP", "QUIT", "VRFY", "EXPN", "HELP", "STARTTLS", "AUTH",
)  # fmt: skip
NEED_HELO: Final = frozenset({"MAIL", "RCPT", "DATA"})


class GatewaySMTP(SMTP):
    def __init__(self, connection: Connection, *, tls_context: ssl.SSLContext | None) -> None:
        # Deliberately not SMTP.__init__ (see the module docstring); these are the attributes
        # aiosmtpd's remaining code (connection_made, STARTTLS, push) relies on.
        loop = asyncio.get_running_loop()
        asyncio.StreamReaderProtocol.__init__(
            self, asyncio.StreamReader(limit=STREAM_LIMIT, loop=loop), client_connected_cb=self._cb_client_connected
        )
        settings = connection.gateway.config.smtp
        self.loop = loop
        self.hostname = settings.hostname
        self.tls_context = tls_context
        self._timeout_duration = settings.timeouts.command
        self._timeout_handle: asyncio.TimerHandle | None = None
        self._idle_deadline = 0.0
        self._tls_handshake_okay = True
        self._tls_protocol: Any = None
        self._original_transport: asyncio.BaseTransport | None = None
        self._handler_coroutine: asyncio.Task[None] | None = None
        self._handle_hooks = {"STARTTLS": connection.handle_STARTTLS}
        self.session: Session | None = None
        self.envelope: Envelope | None = None  # aiosmtpd's; our transaction state is `Connection.txn`
        self.transport: Any = None
        self.conn = connection
        self.settings = settings
        self._busy = False  # deciding on a command: the client is waiting for us, not idle
        self._in_data = False
        self._errors = 0
        self._command: str | None = None  # the verb being answered, for the record of a refusal
        self._closed_reported = False
        self._session_timer: asyncio.TimerHandle | None = None

    # ------------------------------------------------------------------ plumbing
    def data_received(self, data: bytes) -> None:
        """Any byte from the client counts as activity (aiosmtpd only counts complete commands)."""
        super().data_received(data)
        self._reset_timeout(self._idle_limit())

    def _idle_limit(self) -> float:
        timeouts = self.settings.timeouts
        return timeouts.data_block if self._in_data else timeouts.command

    def _reset_timeout(self, duration: float | None = None) -> None:
        """Move the idle deadline; the timer itself is only re-armed when it fires or must fire earlier.

        (aiosmtpd cancels and creates a timer on every call: on every chunk of data, with us.)
        """
        self._idle_deadline = self.loop.time() + (duration or self._timeout_duration)
        handle = self._timeout_handle
        if handle is None or handle.cancelled() or handle.when() > self._idle_deadline:
            if handle is not None:
                handle.cancel()
            self._timeout_handle = self.loop.call_at(self._idle_deadline, self._timeout_cb)

    def _timeout_cb(self) -> None:
        self._timeout_handle = None  # this one has fired
        if self.loop.time() < self._idle_deadline:  # activity since the timer was set: wait for the rest
            self._timeout_handle = self.loop.call_at(self._idle_deadline, self._timeout_cb)
            return
        if self._busy:  # a check is still running: the client is not idle
            self._reset_timeout(self._idle_limit())
            return
        self._hang_up(self.conn.on_timeout(self._idle_limit(), in_data=self._in_data))

    def _session_expired(self) -> None:
        self._hang_up(self.conn.on_timeout(self.settings.timeouts.session, in_data=self._in_data))

    def _hang_up(self, reply: str) -> None:
        """Send a final reply without waiting for the client, then close."""
        if self.transport is None:
            return
        try:
            self._writer.write(reply.encode("utf-8", "replace") + b"\r\n")
        except Exception:
            pass
        self.transport.close()

    def eof_received(self) -> bool | None:
        """The client half-closed: answer what it already sent, then close (aiosmtpd drops it all)."""
        self._reader.feed_eof()
        return self.session is None or self.session.ssl is None

    def connection_lost(self, error: Exception | None) -> None:
        if self._session_timer is not None:
            self._session_timer.cancel()
        if self._timeout_handle is not None:
            self._timeout_handle.cancel()
        self.conn.gateway.connections.discard(self)
        if not self._closed_reported:
            self._closed_reported = True
            self.conn.on_disconnect(lost=not self.conn.quit_seen)
        if self._original_transport is not None:
            self._original_transport.close()
        asyncio.StreamReaderProtocol.connection_lost(self, error)
        if self._handler_coroutine is not None:
            self._handler_coroutine.cancel()
        self.transport = None

    async def push(self, status: AnyStr, *, raw: bool = False) -> None:
        """Send a reply (`raw`: it has its enhanced code already).

        Every refusal passes here: one the gateway did not decide and record itself gets our ref and
        an event from `Connection.on_protocol_reply`, whichever string it started as.
        """
        text = status.decode("utf-8", "replace") if isinstance(status, bytes) else status
        if not raw:
            text = "\r\n".join(with_enhanced_code(line) for line in text.split("\r\n"))
        if text[:1] in "45":
            self._errors += 1
            if not self.conn.is_own_reply(status):
                text = self.conn.on_protocol_reply(text, self._command)
        if self.transport is None or self.transport.is_closing():
            return
        self._writer.write(text.encode("utf-8", "replace") + b"\r\n")
        await self._writer.drain()

    # ------------------------------------------------------------------ the session loop
    async def _handle_client(self) -> None:
        """Our replacement of aiosmtpd's private loop: PROXY, connect decision, commands."""
        assert self.session is not None and self.transport is not None
        peer = self.transport.get_extra_info("peername") or ("0.0.0.0", 0)
        self.conn.gateway.connections.add(self)
        self._session_timer = self.loop.call_later(self.settings.timeouts.session, self._session_expired)
        if self.settings.proxy_protocol:
            proxied = await self._read_proxy_header(peer)
            if proxied is None:
                return
            peer = proxied
        self._busy = True
        greeting, accepted = await self.conn.on_connect(str(peer[0]), int(peer[1]), self._input_before_greeting)
        self._busy = False
        await self.push(greeting, raw=True)
        if not accepted:
            self.transport.close()
            return
        self._reset_timeout(self.settings.timeouts.command)
        try:
            while self.transport is not None and not self.transport.is_closing():
                if not await self._next_command():
                    break
        except (ConnectionError, asyncio.IncompleteReadError):
            pass  # the client went away; connection_lost records it
        except TLSSetupException as error:
            log.info("session %s: TLS handshake failed: %s", self.conn.session.id, error.__cause__ or error)
        finally:
            if self.transport is not None:
                self.transport.close()

    async def _input_before_greeting(self, seconds: float) -> bytes | None:
        """What the client sends within `seconds` before our greeting (`checks.base.InputWatch`).

        It stays in the reader for the command loop; None when the client went away instead.
        """
        try:
            async with asyncio.timeout(seconds):
                sent: bytes = await self._reader.read(PREGREET_PEEK)
        except TimeoutError:
            return b""
        except ConnectionError:
            return None
        if sent:
            self._reader._buffer[0:0] = sent  # type: ignore[attr-defined]  # read again as commands
        return sent or None

    async def _next_command(self) -> bool:
        """Read, check and run one command; False when the session is over."""
        self._command = None
        line = await self._read_command_line()
        if self._errors >= ERROR_LIMIT:  # every error counts, also lines that are not even a command
            self._hang_up(self.conn.on_too_many_errors(self._errors))
            return False
        if line is None:
            return True
        if not line:
            await self.push("500 5.5.2 Error: empty command")
            return True
        problem = _command_problem(line)
        if problem:
            await self.push(f"500 5.5.2 Error: {problem}")
            return True
        text = line.decode("utf-8")
        verb, _, arg = text.partition(" ")
        verb = verb.upper()
        if verb in NON_SMTP:
            self._hang_up(self.conn.on_non_smtp(verb))
            return False
        if verb not in COMMANDS:
            await self.push(f'500 5.5.1 Error: command "{printable(verb, 32)}" not recognized')
            return True
        self.conn.count(verb)
        self._command = verb
        if verb in NEED_HELO and self.conn.session.helo is None:
            await self.push("503 5.5.1 Error: send HELO or EHLO first")
            return True
        self._busy = True
        try:
            await getattr(self, "smtp_" + verb)(arg.strip() or None)
        except (ConnectionError, asyncio.CancelledError, TLSSetupException, asyncio.IncompleteReadError):
            raise
        except Exception as error:  # a bug must not end the session silently
            log.exception("session %s: unexpected error in %s", self.conn.session.id, verb)
            await self.push(self.conn.on_internal_error(error), raw=True)
        finally:
            self._busy = False
            self._reset_timeout(self._idle_limit())  # the client's silence counts from our reply on
        return True

    async def _read_command_line(self) -> bytes | None:
        """One command line without its line end; None when it was too long (already answered)."""
        limit = self.settings.max_command_line
        try:
            line: bytes = await self._reader.readuntil(b"\n")
        except asyncio.LimitOverrunError as error:
            await self._skip_overlong_line(error.consumed)
            line = b""
        if not line or len(line) > limit:
            await self.push(f"500 5.5.2 Error: command line too long (at most {limit} bytes)")
            return None
        return line[:-2] if line.endswith(b"\r\n") else line[:-1]

    async def _skip_overlong_line(self, consumed: int) -> None:
        await self._reader.readexactly(consumed)
        while True:
            try:
                await self._reader.readuntil(b"\n")
                return
            except asyncio.LimitOverrunError as again:
                await self._reader.readexactly(again.consumed)

    async def _read_proxy_header(self, peer: tuple[Any, ...]) -> tuple[str, int] | None:
        """The client's real address from a PROXY v1/v2 header; None (answered, closed) if missing or untrusted."""
        trusted = any(
            ipaddress.ip_address(peer[0]) in ipaddress.ip_network(net, strict=False)
            for net in self.settings.proxy_trusted
        )
        problem = None
        if not trusted:
            problem = f"{peer[0]} is not allowed to send a PROXY header (smtp.proxy_trusted)"
        else:
            try:
                async with asyncio.timeout(self.settings.timeouts.command):
                    data = await get_proxy(self._reader)
            except (TimeoutError, asyncio.IncompleteReadError, ConnectionError):
                problem = "no PROXY header arrived"
            else:
                if not data.valid or data.src_addr is None:
                    problem = f"invalid PROXY header ({data.error or 'no source address'})"
        if problem is None:
            return str(data.src_addr), int(data.src_port or 0)
        log.warning("closing the connection from %s: %s", peer[0], problem)
        self._hang_up(self.conn.on_proxy_refused(str(peer[0]), int(peer[1]), problem))
        return None

    # ------------------------------------------------------------------ commands
    async def smtp_EHLO(self, hostname: str | None) -> None:
        await self._greet(hostname, esmtp=True)

    async def smtp_HELO(self, hostname: str | None) -> None:
        await self._greet(hostname, esmtp=False)

    async def _greet(self, hostname: str | None, *, esmtp: bool) -> None:
        if not hostname or " " in hostname:
            await self.push(f"501 5.5.4 Syntax: {'EHLO' if esmtp else 'HELO'} hostname")
            return
        refusal = await self.conn.on_helo(hostname, esmtp=esmtp)
        if refusal is not None:
            await self.push(refusal, raw=True)
            return
        if not esmtp:
            await self.push(f"250 {self.hostname}", raw=True)
            return
        lines = [
            self.hostname,
            "PIPELINING",
            f"SIZE {self.settings.max_message_size}",
            "8BITMIME",
            "SMTPUTF8",
            "ENHANCEDSTATUSCODES",
        ]
        if self.tls_context is not None and self._tls_protocol is None:
            lines.append("STARTTLS")
        await self.push("\r\n".join(f"250-{x}" for x in lines[:-1]) + f"\r\n250 {lines[-1]}", raw=True)

    async def smtp_MAIL(self, arg: str | None) -> None:
        path = _parsed(arg, "FROM", null_allowed=True)
        if isinstance(path, str):
            await self.push(path)
        elif (problem := _mail_params_problem(path, esmtp=self.conn.session.esmtp)) is not None:
            await self.push(problem)
        else:
            await self.push(await self.conn.on_mail(path), raw=True)

    async def smtp_RCPT(self, arg: str | None) -> None:
        path = _parsed(arg, "TO", postmaster_allowed=True)
        if isinstance(path, str):
            await self.push(path)
        elif path.params:  # DSN (NOTIFY, ORCPT) is not offered
            await self.push(f"555 5.5.4 Unsupported RCPT TO parameter {printable(next(iter(path.params)), 40)}")
        else:
            await self.push(await self.conn.on_rcpt(path), raw=True)

    async def smtp_DATA(self, arg: str | None) -> None:
        if arg:
            await self.push("501 5.5.4 Syntax: DATA")
            return
        refusal = await self.conn.on_data_start()
        if refusal is not None:
            await self.push(refusal, raw=True)
            return
        await self.push("354 End data with <CR><LF>.<CR><LF>", raw=True)
        decoder = DataDecoder(self.settings.max_line_length, self.settings.bare_newline == "normalize")
        spool = self.conn.new_spool()
        self._in_data, self._busy = True, False
        self._reset_timeout(self.settings.timeouts.data_block)
        try:
            # The spool never raises (a failure is kept in `spool.failure`): whatever happens to the
            # content, the loop reads on to the end marker, so no line of the message runs as a command.
            while not decoder.done:
                chunk = await self._reader.read(READ_CHUNK)
                if not chunk:
                    raise ConnectionResetError("connection closed during DATA")
                spool.write(decoder.feed(chunk))
            spool.finish()
        except BaseException as error:
            if isinstance(error, OSError) or not isinstance(error, Exception):  # connection gone, or cancelled
                self.conn.on_data_lost(spool)
                raise
            # Decoding failed: where the message ends is unknown, so nothing more is read from this client.
            log.exception("session %s: decoding DATA failed", self.conn.session.id)
            self._hang_up(self.conn.on_data_undecodable(spool, error))
            return
        finally:
            self._in_data, self._busy = False, True
        if decoder.leftover:  # pipelined commands after the final dot: give them back to the reader
            self._reader._buffer[0:0] = decoder.leftover  # type: ignore[attr-defined]
        # From here on the message is complete: decide and deliver even if the client goes away.
        finishing = self.conn.gateway.finish_soon(
            self.conn.on_data_end(spool, line_too_long=decoder.line_too_long, bare_newlines=decoder.bare_newlines)
        )
        reply = await asyncio.shield(finishing)
        await self.push(reply, raw=True)

    async def smtp_RSET(self, arg: str | None) -> None:
        if arg:
            await self.push("501 5.5.4 Syntax: RSET")
            return
        self.conn.on_rset()
        await self.push("250 2.0.0 OK", raw=True)

    async def smtp_NOOP(self, arg: str | None) -> None:
        await self.push("250 2.0.0 OK", raw=True)

    async def smtp_QUIT(self, arg: str | None) -> None:
        self.conn.quit_seen = True
        await self.push("221 2.0.0 Bye", raw=True)
        assert self.transport is not None
        self.transport.close()

    async def smtp_STARTTLS(self, arg: str | None) -> None:
        if self._tls_protocol is not None:
            await self.push("503 5.5.1 Error: TLS is already active")
        elif arg:
            await self.push("501 5.5.4 Syntax: STARTTLS")
        elif self.tls_context is None:
            await self.push("454 4.7.0 TLS not available")
        else:
            await super().smtp_STARTTLS(arg)

    async def smtp_AUTH(self, arg: str | None) -> None:
        await self.push("502 5.5.1 AUTH is not available on this MX; use your provider's submission service")

    async def smtp_VRFY(self, arg: str | None) -> None:
        await self.push("252 2.5.0 Cannot VRFY user, but will accept message and attempt delivery")

    async def smtp_EXPN(self, arg: str | None) -> None:
        await self.push("502 5.5.1 EXPN is disabled")

    async def smtp_HELP(self, arg: str | None) -> None:
        await self.push(f"214 2.0.0 This is an inbound MX; commands: {' '.join(COMMANDS)}")


def _command_problem(line: bytes) -> str | None:
    """Why a command line is unacceptable before it is even parsed (NUL, bare CR, not UTF-8)."""
    if b"\0" in line:
        return "NUL byte in command"
    if b"\r" in line:
        return "bare CR in command"
    try:
        line.decode("utf-8")
    except UnicodeDecodeError:
        return "command is not valid UTF-8"
    return None


_SYNTAX: Final = {
    "FROM": "501 5.5.4 Syntax: MAIL FROM:<address> [parameters]",
    "TO": "501 5.1.3 Syntax: RCPT TO:<address>",
}


def _parsed(arg: str | None, keyword: str, **allowed: bool) -> EnvelopePath | str:
    """The path of MAIL FROM or RCPT TO, or the reply that says what is wrong with it."""
    try:
        return parse_path(arg or "", keyword, **allowed)
    except PathSyntaxError as error:
        return f"{_SYNTAX[keyword]}: {printable(str(error), 200)}"


def _mail_params_problem(path: EnvelopePath, *, esmtp: bool) -> str | None:
    """The reply for MAIL FROM parameters we do not offer (we offer SIZE, BODY, SMTPUTF8), or None."""
    if path.params and not esmtp:
        return "501 5.5.4 Syntax: MAIL FROM parameters need EHLO, not HELO"
    for key, value in path.params.items():
        shown = printable(key if value is None else f"{key}={value}", 60)
        if key == "SIZE":
            if value is None or not value.isdigit() or len(value) > 20:
                return f"501 5.5.4 Syntax: malformed parameter {shown}"
        elif key == "BODY":
            if value is None or value.upper() not in ("7BIT", "8BITMIME"):
                return f"501 5.5.4 Syntax: BODY takes 7BIT or 8BITMIME, not {shown}"
        elif key == "SMTPUTF8":
            if value is not None:
                return f"501 5.5.4 Syntax: SMTPUTF8 takes no value, not {shown}"
        else:
            return f"555 5.5.4 Unsupported MAIL FROM parameter {shown}"
    return None
