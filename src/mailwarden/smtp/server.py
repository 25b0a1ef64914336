"""The SMTP protocol on `asyncio.Protocol`: bytes in, one command at a time to the policy, replies out.

Our own lean layer (aiosmtpd was a shell around our code by the end, pinned for the private
methods we replaced). Per connection: a byte buffer in which commands are found with
`bytearray.find`, and one task that runs the commands and awaits the policy (`smtp/gateway.py`,
`Connection.on_*`, which decides what to answer). Message content does not pass through the
buffer or wake the task: `data_received` feeds it straight into the decoder and the spool, and
the task only wakes when the message is complete. Beyond the plain protocol:
- a connect-time decision before the greeting, with a look at what an early talker sent (pregreet),
- an inactivity timeout that any received byte resets, also during DATA and BDAT, that does not
  run while we are still deciding and ends with a 421; a bound on the whole session,
- streaming DATA (`smtp/data.py`, `spool.py`) with lines up to a configurable length, and
  CHUNKING/BDAT (RFC 3030) with the same checks and replies,
- strict MAIL/RCPT parsing (`addresses.parse_path`) and enhanced status codes on every reply,
- limits on command length and errors, PROXY v1/v2 (`smtp/proxy.py`), STARTTLS (`loop.start_tls`),
- a half-closing client is answered before we close, and once a message is complete its
  transaction finishes even if the client goes away.
Replies are written when the next command must be waited for, so a pipelined group is answered
with one write (RFC 2920); a client that does not read them is not read from either.
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import ssl
from collections.abc import Callable, Coroutine
from typing import TYPE_CHECKING, Any, Final, Protocol, cast

from mailwarden.addresses import EnvelopePath, PathSyntaxError, parse_path
from mailwarden.smtp import proxy
from mailwarden.smtp.data import DataDecoder, LineChecks
from mailwarden.smtp.replies import with_enhanced_code
from mailwarden.spool import Spool
from mailwarden.text import decimal, printable

if TYPE_CHECKING:
    from mailwarden.smtp.gateway import Connection

log = logging.getLogger(__name__)

ERROR_LIMIT: Final = 20  # error replies in one session before we hang up (Postfix: smtpd_hard_error_limit)
NON_SMTP: Final = frozenset({"GET", "POST", "HEAD", "PUT", "CONNECT", "OPTIONS", "USER"})
PREGREET_PEEK: Final = 512  # bytes of an early talker's input looked at before the greeting
BUFFER_LIMIT: Final = 64 * 1024  # input kept while we decide; past it the socket is not read
PENDING_REPLIES: Final = 64  # replies to pipelined commands written together at most
CHUNK_SIZE_DIGITS: Final = 20
COMMANDS: Final = (
    "EHLO", "HELO", "MAIL", "RCPT", "DATA", "BDAT", "RSET", "NOOP", "QUIT", "VRFY", "EXPN", "HELP", "STARTTLS",
    "AUTH",
)  # fmt: skip
NEED_HELO: Final = frozenset({"MAIL", "RCPT", "DATA", "BDAT"})


class _Body(Protocol):
    """Where message content goes while it arrives, instead of the command buffer."""

    done: bool
    failure: Exception | None

    def feed(self, data: bytes) -> bytes:
        """Take content; return what came after the body's end (pipelined commands)."""


class _Dotted:
    """DATA: content up to <CR><LF>.<CR><LF>, unstuffed, into the spool."""

    def __init__(self, decoder: DataDecoder, spool: Spool) -> None:
        self.decoder = decoder
        self.spool = spool
        self.done = False
        self.failure: Exception | None = None

    def feed(self, data: bytes) -> bytes:
        self.spool.write(self.decoder.feed(data))  # the spool never raises; its failure waits for the end
        if not self.decoder.done:
            return b""
        self.done = True
        self.spool.finish()
        return self.decoder.leftover


class _Chunk:
    """A BDAT chunk: exactly `size` bytes, handed to `sink` (None: read and thrown away)."""

    def __init__(self, size: int, sink: Callable[[bytes], None] | None) -> None:
        self.remaining = size
        self.sink = sink
        self.done = size == 0
        self.failure: Exception | None = None

    def feed(self, data: bytes) -> bytes:
        piece, rest = (data, b"") if len(data) <= self.remaining else (data[: self.remaining], data[self.remaining :])
        self.remaining -= len(piece)
        if self.sink is not None:
            self.sink(piece)
        self.done = self.remaining == 0
        return rest


class _Chunked:
    """A message arriving in BDAT chunks: its spool and the line checks DATA's content gets too."""

    def __init__(self, spool: Spool, lines: LineChecks) -> None:
        self.spool = spool
        self.lines = lines

    def write(self, data: bytes) -> None:
        self.spool.write(self.lines.feed(data))

    def finish(self) -> None:
        self.spool.write(self.lines.finish())
        self.spool.finish()


class _ClientGone(ConnectionError):
    """The client closed its side while we needed more from it."""


class GatewaySMTP(asyncio.Protocol):
    def __init__(self, connection: Connection, *, tls_context: ssl.SSLContext | None) -> None:
        self.loop = asyncio.get_running_loop()
        self.conn = connection
        self.settings = connection.gateway.config.smtp
        self.hostname = self.settings.hostname
        self.tls_context = tls_context
        self.transport: asyncio.Transport | None = None
        self._tls = False
        self._buffer = bytearray()
        self._body: _Body | None = None  # content goes here, not into the buffer
        self._waiter: asyncio.Future[None] | None = None  # the task waits for input
        self._eof = False
        self._reading_paused = False
        self._writing_paused = False
        self._drained: asyncio.Future[None] | None = None
        self._out: list[bytes] = []  # replies not yet written
        self._task: asyncio.Task[None] | None = None
        self._idle_handle: asyncio.TimerHandle | None = None
        self._idle_deadline = 0.0
        self._session_timer: asyncio.TimerHandle | None = None
        self._busy = False  # deciding on a command: the client is waiting for us, not idle
        self._in_data = False
        self._errors = 0
        self._command: str | None = None  # the verb being answered, for the record of a refusal
        self._chunked: _Chunked | None = None  # a BDAT transaction before its LAST chunk
        self._torn_down = False

    # ------------------------------------------------------------------ asyncio.Protocol
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)
        self.conn.gateway.connections.add(self)
        self._reset_timeout(self.settings.timeouts.command)
        self._session_timer = self.loop.call_later(self.settings.timeouts.session, self._session_expired)
        self._task = self.loop.create_task(self._run())

    def data_received(self, data: bytes) -> None:
        # Any byte counts as activity (the deadline only moves here; the timer follows lazily).
        self._idle_deadline = self.loop.time() + self._idle_limit()
        body = self._body
        if body is not None:
            data = self._into(body, data)
            if not body.done and body.failure is None:
                return  # the task sleeps on until the whole message is in
            self._body = None
        if data:
            self._buffer += data
            if len(self._buffer) > BUFFER_LIMIT and not self._reading_paused and self.transport is not None:
                self._reading_paused = True
                self.transport.pause_reading()
        self._wake()

    def eof_received(self) -> bool:
        """The client half-closed: answer what it already sent, then close (TLS cannot half-close)."""
        self._eof = True
        self._wake()
        return not self._tls

    def connection_lost(self, error: Exception | None) -> None:
        self._teardown()

    def pause_writing(self) -> None:
        self._writing_paused = True

    def resume_writing(self) -> None:
        self._writing_paused = False
        if self._drained is not None and not self._drained.done():
            self._drained.set_result(None)

    # ------------------------------------------------------------------ plumbing
    @staticmethod
    def _into(body: _Body, data: bytes) -> bytes:
        """Feed a body; a fault in decoding is kept in `body.failure` (where the message ends is unknown then)."""
        try:
            return body.feed(data)
        except Exception as error:
            body.failure = error
            return b""

    def _wake(self) -> None:
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    async def _more_input(self) -> None:
        """Send the replies so far, then wait until more bytes arrive; `_ClientGone` at the client's end."""
        self._flush()
        if self._writing_paused and self.transport is not None:
            self._drained = self.loop.create_future()
            await self._drained  # the client reads no replies: read nothing more from it either
        if self._eof or self.transport is None:
            raise _ClientGone("the client closed the connection")
        if self._reading_paused:
            self._reading_paused = False
            self.transport.resume_reading()
        self._waiter = self.loop.create_future()
        try:
            await self._waiter
        finally:
            self._waiter = None

    def _flush(self) -> None:
        if not self._out:
            return
        data = self._out[0] if len(self._out) == 1 else b"".join(self._out)
        self._out.clear()
        if self.transport is not None and not self.transport.is_closing():
            self.transport.write(data)

    def _idle_limit(self) -> float:
        timeouts = self.settings.timeouts
        return timeouts.data_block if self._in_data else timeouts.command

    def _reset_timeout(self, duration: float) -> None:
        """Move the idle deadline; the timer itself is only re-armed when it fires or must fire earlier."""
        if self._torn_down:  # a session task ending after the connection must not time it out again
            return
        self._idle_deadline = self.loop.time() + duration
        handle = self._idle_handle
        if handle is None or handle.cancelled() or handle.when() > self._idle_deadline:
            if handle is not None:
                handle.cancel()
            self._idle_handle = self.loop.call_at(self._idle_deadline, self._timeout_cb)

    def _timeout_cb(self) -> None:
        self._idle_handle = None  # this one has fired
        if self.loop.time() < self._idle_deadline:  # activity since the timer was set: wait for the rest
            self._idle_handle = self.loop.call_at(self._idle_deadline, self._timeout_cb)
            return
        if self._busy:  # a check is still running: the client is not idle
            self._reset_timeout(self._idle_limit())
            return
        self.hang_up(self.conn.on_timeout(self._idle_limit(), in_data=self._in_data))

    def _session_expired(self) -> None:
        self.hang_up(self.conn.on_timeout(self.settings.timeouts.session, in_data=self._in_data))

    @property
    def deciding(self) -> bool:
        """A command is being decided, its reply not yet queued (the end of DATA: also after the transaction)."""
        return self._busy

    def hang_up(self, reply: str) -> None:
        """Send a final reply (with whatever is still pending) without waiting for the client, then close."""
        if self.transport is None:
            return
        self._out.append(reply.encode("utf-8", "replace") + b"\r\n")
        self._flush()
        self.transport.close()

    def _teardown(self) -> None:
        """The connection is gone (or TLS failed, which asyncio does not report as such): count it out once."""
        if self._torn_down:
            return
        self._torn_down = True
        for handle in (self._session_timer, self._idle_handle):
            if handle is not None:
                handle.cancel()
        self.conn.gateway.connections.discard(self)
        self._drop_chunks(lost=True)
        self.conn.on_disconnect(lost=not self.conn.quit_seen)
        if self._task is not None and self._task is not asyncio.current_task():
            self._task.cancel()
        if self._drained is not None and not self._drained.done():
            self._drained.set_result(None)
        self.transport = None

    def push(self, status: str, *, raw: bool = False) -> None:
        """Queue a reply (`raw`: it has its enhanced code already); written before we wait for the client.

        Every refusal passes here: one the gateway did not decide and record itself gets our ref and
        an event from `Connection.on_protocol_reply`, whichever string it started as.
        """
        text = status if raw else "\r\n".join(with_enhanced_code(line) for line in status.split("\r\n"))
        if text[:1] in ("4", "5"):
            self._errors += 1
            if not self.conn.is_own_reply(status):
                text = self.conn.on_protocol_reply(text, self._command)
        if self.transport is None or self.transport.is_closing():
            return
        self._out.append(text.encode("utf-8", "replace") + b"\r\n")
        if len(self._out) >= PENDING_REPLIES:
            self._flush()

    # ------------------------------------------------------------------ the session
    async def _run(self) -> None:
        """PROXY header, connect decision and greeting, then one command after the other."""
        assert self.transport is not None
        peer = self.transport.get_extra_info("peername") or ("0.0.0.0", 0)
        try:
            if self.settings.proxy_protocol:
                proxied = await self._read_proxy_header(peer)
                if proxied is None:
                    return
                peer = proxied
            self._busy = True
            greeting, accepted = await self.conn.on_connect(str(peer[0]), int(peer[1]), self._input_before_greeting)
            self._busy = False
            self.push(greeting, raw=True)
            if not accepted:
                return
            self._reset_timeout(self.settings.timeouts.command)
            while self.transport is not None and not self.transport.is_closing():
                if not await self._next_command():
                    break
        except ConnectionError:
            pass  # the client went away; connection_lost records it
        finally:
            self._flush()
            if self.transport is not None:
                self.transport.close()

    async def _input_before_greeting(self, seconds: float) -> bytes | None:
        """What the client sends within `seconds` before our greeting (`checks.base.InputWatch`).

        It stays in the buffer for the command loop; None when the client went away instead.
        """
        if not self._buffer:
            try:
                async with asyncio.timeout(seconds):
                    await self._more_input()
            except TimeoutError:
                return b""
            except ConnectionError:
                pass
        return bytes(self._buffer[:PREGREET_PEEK]) or None

    async def _read_proxy_header(self, peer: tuple[Any, ...]) -> tuple[str, int] | None:
        """The client's real address from a PROXY v1/v2 header; None (answered, closed) if missing or untrusted."""
        trusted = any(
            ipaddress.ip_address(peer[0]) in ipaddress.ip_network(net, strict=False)
            for net in self.settings.proxy_trusted
        )
        if not trusted:
            problem = f"{peer[0]} is not allowed to send a PROXY header (smtp.proxy_trusted)"
        else:
            result: proxy.Proxied | proxy.Unusable | None
            try:
                async with asyncio.timeout(self.settings.timeouts.command):
                    while (result := proxy.parse(self._buffer)) is None:
                        await self._more_input()
            except (TimeoutError, ConnectionError):
                result = proxy.Unusable("no PROXY header arrived")
            if isinstance(result, proxy.Proxied):
                del self._buffer[: result.length]
                return result.client_ip, result.client_port
            problem = result.problem
        log.warning("closing the connection from %s: %s", peer[0], problem)
        self.hang_up(self.conn.on_proxy_refused(str(peer[0]), int(peer[1]), problem))
        return None

    async def _next_command(self) -> bool:
        """Read, check and run one command; False when the session is over."""
        self._command = None
        line = await self._read_command_line()
        if self._errors >= ERROR_LIMIT:  # every error counts, also lines that are not even a command
            self.hang_up(self.conn.on_too_many_errors(self._errors))
            return False
        if line is None:
            return True
        if not line:
            self.push("500 5.5.2 Error: empty command")
            return True
        problem = _command_problem(line)
        if problem:
            self.push(f"500 5.5.2 Error: {problem}")
            return True
        verb, _, arg = line.decode("utf-8").partition(" ")
        verb = verb.upper()
        if verb in NON_SMTP:
            self.hang_up(self.conn.on_non_smtp(verb))
            return False
        handler = _HANDLERS.get(verb)
        if handler is None:
            self.push(f'500 5.5.1 Error: command "{printable(verb, 32)}" not recognized')
            return True
        self.conn.count(verb)
        self._command = verb
        if verb in NEED_HELO and self.conn.session.helo is None and verb != "BDAT":  # BDAT: its chunk first
            self.push("503 5.5.1 Error: send HELO or EHLO first")
            return True
        self._busy = True
        try:
            return await handler(self, arg.strip() or None) is not False
        except (ConnectionError, asyncio.CancelledError):
            raise
        except Exception as error:  # a bug must not end the session silently
            log.exception("session %s: unexpected error in %s", self.conn.session.id, verb)
            self.push(self.conn.on_internal_error(error), raw=True)
            return True
        finally:
            self._busy = False
            self._reset_timeout(self._idle_limit())  # the client's silence counts from our reply on

    async def _read_command_line(self) -> bytes | None:
        """One command line without its line end; None when it was too long (already answered)."""
        limit = self.settings.max_command_line
        skipping = False
        while True:
            end = self._buffer.find(b"\n")
            if end >= 0:
                if skipping or end + 1 > limit:
                    del self._buffer[: end + 1]
                    self.push(f"500 5.5.2 Error: command line too long (at most {limit} bytes)")
                    return None
                line = bytes(memoryview(self._buffer)[: end - 1 if end and self._buffer[end - 1] == 13 else end])
                del self._buffer[: end + 1]
                return line
            if len(self._buffer) > limit:  # no end in sight: keep nothing of it
                skipping = True
                self._buffer.clear()
            await self._more_input()

    # ------------------------------------------------------------------ message content
    async def _receive(self, body: _Body, spool: Spool | None) -> bool:
        """Stream content into `body` until it is complete; False (answered, closing) if it could not be decoded.

        The connection going away (or the session being cancelled) records the lost content and raises.
        """
        self._in_data, self._busy = True, False
        self._reset_timeout(self.settings.timeouts.data_block)
        try:
            if self._buffer:  # what came with the command (pipelined BDAT chunks, an eager client)
                pending = bytes(self._buffer)
                self._buffer.clear()
                self._buffer += self._into(body, pending)
            while not body.done and body.failure is None:
                self._body = body
                await self._more_input()
        except BaseException:
            if spool is not None:
                self.conn.on_data_lost(spool)
            raise
        finally:
            self._body = None
            self._in_data, self._busy = False, True
        if body.failure is None:
            return True
        # Decoding failed: where the message ends is unknown, so nothing more is read from this client.
        log.error("session %s: decoding the message failed", self.conn.session.id, exc_info=body.failure)
        assert spool is not None
        self.hang_up(self.conn.on_data_undecodable(spool, body.failure))
        return False

    async def _finish(self, spool: Spool, lines: LineChecks | DataDecoder) -> None:
        """The message is complete: decide and deliver even if the client goes away now, then answer."""
        finishing = self.conn.gateway.finish_soon(
            self.conn.on_data_end(spool, line_too_long=lines.line_too_long, bare_newlines=lines.bare_newlines)
        )
        self.push(await asyncio.shield(finishing), raw=True)

    def _drop_chunks(self, *, lost: bool = False) -> None:
        """A BDAT transaction ends before its LAST chunk (RSET, EHLO, STARTTLS, the connection lost)."""
        chunked, self._chunked = self._chunked, None
        if chunked is None:
            return
        if lost:
            self.conn.on_data_lost(chunked.spool)
        else:
            chunked.spool.discard()

    # ------------------------------------------------------------------ commands
    async def smtp_EHLO(self, hostname: str | None) -> None:
        await self._greet(hostname, esmtp=True)

    async def smtp_HELO(self, hostname: str | None) -> None:
        await self._greet(hostname, esmtp=False)

    async def _greet(self, hostname: str | None, *, esmtp: bool) -> None:
        if not hostname or " " in hostname:
            self.push(f"501 5.5.4 Syntax: {'EHLO' if esmtp else 'HELO'} hostname")
            return
        self._drop_chunks()
        refusal = await self.conn.on_helo(hostname, esmtp=esmtp)
        if refusal is not None:
            self.push(refusal, raw=True)
            return
        if not esmtp:
            self.push(f"250 {self.hostname}", raw=True)
            return
        lines = [
            self.hostname,
            "PIPELINING",
            f"SIZE {self.settings.max_message_size}",
            "8BITMIME",
            "SMTPUTF8",
            "ENHANCEDSTATUSCODES",
            "CHUNKING",
        ]
        if self.tls_context is not None and not self._tls:
            lines.append("STARTTLS")
        self.push("\r\n".join(f"250-{x}" for x in lines[:-1]) + f"\r\n250 {lines[-1]}", raw=True)

    async def smtp_MAIL(self, arg: str | None) -> None:
        path = _parsed(arg, "FROM", null_allowed=True)
        if isinstance(path, str):
            self.push(path)
        elif (problem := _mail_params_problem(path, esmtp=self.conn.session.esmtp)) is not None:
            self.push(problem)
        else:
            self.push(await self.conn.on_mail(path), raw=True)

    async def smtp_RCPT(self, arg: str | None) -> None:
        path = _parsed(arg, "TO", postmaster_allowed=True)
        if isinstance(path, str):
            self.push(path)
        elif path.params:  # DSN (NOTIFY, ORCPT) is not offered
            self.push(f"555 5.5.4 Unsupported RCPT TO parameter {printable(next(iter(path.params)), 40)}")
        else:
            self.push(await self.conn.on_rcpt(path), raw=True)

    async def smtp_DATA(self, arg: str | None) -> bool:
        if arg:
            self.push("501 5.5.4 Syntax: DATA")
            return True
        if self._chunked is not None:
            self.push("503 5.5.1 Error: DATA after BDAT; a message is sent with one or the other")
            return True
        refusal = await self.conn.on_data_start()
        if refusal is not None:
            self.push(refusal, raw=True)
            return True
        self.push("354 End data with <CR><LF>.<CR><LF>", raw=True)
        decoder = DataDecoder(self.settings.max_line_length, self.settings.bare_newline == "normalize")
        spool = self.conn.new_spool()
        if not await self._receive(_Dotted(decoder, spool), spool):
            return False
        await self._finish(spool, decoder)
        return True

    async def smtp_BDAT(self, arg: str | None) -> bool:
        """RFC 3030: the chunk follows the command whatever we answer, so it is read (or skipped) first."""
        chunk = _chunk_arguments(arg)
        if chunk is None:  # its size is unknown: the chunk cannot be told apart from commands
            self.hang_up(
                self.conn.on_protocol_reply(
                    f"421 4.7.0 {self.hostname} Error: malformed BDAT command (BDAT chunk-size [LAST]); "
                    "where its chunk ends is unknown, closing",
                    "BDAT",
                )
            )
            return False
        size, last = chunk
        refusal: str | None = None
        if self.conn.session.helo is None:
            refusal = "503 5.5.1 Error: send HELO or EHLO first"
        elif self._chunked is None:
            refusal = await self.conn.on_data_start()  # the same checks and replies as DATA
        if refusal is not None:
            await self._receive(_Chunk(size, None), None)
            self.push(refusal, raw=True)
            return True
        if self._chunked is None:
            lines = LineChecks(self.settings.max_line_length, self.settings.bare_newline == "normalize")
            self._chunked = _Chunked(self.conn.new_spool(), lines)
        chunked = self._chunked
        await self._receive(_Chunk(size, chunked.write), None)  # a loss: `_teardown` records it
        if not last and not chunked.spool.overflowed:
            self.push(f"250 2.0.0 {size} octets received", raw=True)
            return True
        # LAST, or past the size limit (refused at once: the rest need not be sent; later chunks get 503)
        self._chunked = None
        chunked.finish()
        await self._finish(chunked.spool, chunked.lines)
        return True

    async def smtp_RSET(self, arg: str | None) -> None:
        if arg:
            self.push("501 5.5.4 Syntax: RSET")
            return
        self._drop_chunks()
        self.conn.on_rset()
        self.push("250 2.0.0 OK", raw=True)

    async def smtp_NOOP(self, arg: str | None) -> None:
        self.push("250 2.0.0 OK", raw=True)

    async def smtp_QUIT(self, arg: str | None) -> bool:
        self.conn.quit_seen = True
        self.push("221 2.0.0 Bye", raw=True)
        return False

    async def smtp_STARTTLS(self, arg: str | None) -> bool:
        if self._tls:
            self.push("503 5.5.1 Error: TLS is already active")
        elif arg:
            self.push("501 5.5.4 Syntax: STARTTLS")
        elif self.tls_context is None:
            self.push("454 4.7.0 TLS not available")
        else:
            return await self._start_tls(self.tls_context)
        return True

    async def _start_tls(self, context: ssl.SSLContext) -> bool:
        assert self.transport is not None
        self.push("220 2.0.0 Ready to start TLS", raw=True)
        self._flush()
        self._buffer.clear()  # RFC 3207 4.2: nothing the client sent before the handshake counts
        self._drop_chunks()
        plain = self.transport
        try:
            secured = await self.loop.start_tls(
                plain, self, context, server_side=True, ssl_handshake_timeout=self.settings.timeouts.command
            )
        except (OSError, TimeoutError, ssl.SSLError) as error:
            log.info("session %s: TLS handshake failed: %s", self.conn.session.id, error)
            plain.close()
            self._teardown()  # asyncio reports no connection_lost for a handshake that failed
            return False
        if secured is None or self._torn_down:
            return False
        self.transport = secured
        self._tls = True
        ssl_object = secured.get_extra_info("ssl_object")
        self.conn.on_starttls(ssl_object.version() if ssl_object is not None else "TLS")
        return True

    async def smtp_AUTH(self, arg: str | None) -> None:
        self.push("502 5.5.1 AUTH is not available on this MX; use your provider's submission service")

    async def smtp_VRFY(self, arg: str | None) -> None:
        self.push("252 2.5.0 Cannot VRFY user, but will accept message and attempt delivery")

    async def smtp_EXPN(self, arg: str | None) -> None:
        self.push("502 5.5.1 EXPN is disabled")

    async def smtp_HELP(self, arg: str | None) -> None:
        self.push(f"214 2.0.0 This is an inbound MX; commands: {' '.join(COMMANDS)}")


_HANDLERS: Final[dict[str, Callable[[GatewaySMTP, str | None], Coroutine[Any, Any, bool | None]]]] = {
    verb: getattr(GatewaySMTP, f"smtp_{verb}") for verb in COMMANDS
}


def _command_problem(line: bytes) -> str | None:
    """Why a command line is unacceptable before it is even parsed (NUL, bare CR, not UTF-8)."""
    if b"\0" in line:
        return "NUL byte in command"
    if b"\r" in line:
        return "bare CR in command"
    if not line.isascii():
        try:
            line.decode("utf-8")
        except UnicodeDecodeError:
            return "command is not valid UTF-8"
    return None


def _chunk_arguments(arg: str | None) -> tuple[int, bool] | None:
    """BDAT's chunk size and whether it is the LAST; None if malformed."""
    words = (arg or "").split(" ")
    size = words[0]
    if not (size.isascii() and size.isdigit() and len(size) <= CHUNK_SIZE_DIGITS):
        return None
    if len(words) == 1:
        return int(size), False
    if len(words) == 2 and words[1].upper() == "LAST":
        return int(size), True
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
            if value is None or decimal(value) is None:
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
