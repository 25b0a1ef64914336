"""The SMTP protocol: aiosmtpd 1.4.6, extended where it falls short for an MX.

aiosmtpd parses commands and runs STARTTLS; this subclass adds what it lacks (measured):
- a connect-time decision before the greeting (its 220 is sent from a private method),
- an inactivity timeout that is reset by any received byte, also during DATA, and a 421 on expiry,
- streaming DATA (`smtp/data.py`, `smtp/spool.py`) instead of buffering the whole message,
  with lines up to a configurable length instead of refusing anything over 1,001 bytes,
- enhanced status codes on every reply (ENHANCEDSTATUSCODES) and PIPELINING advertised,
- limits on command length and error counts, and no AUTH/VRFY/EXPN on the MX.
Policy (what to answer) lives in `smtp/gateway.py`; this module only speaks the protocol.
Because it overrides private methods, aiosmtpd is pinned to 1.4.6.
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import ssl
from typing import TYPE_CHECKING, Any, AnyStr, Final

from aiosmtpd.proxy_protocol import get_proxy
from aiosmtpd.smtp import SMTP, syntax

from mailwarden.smtp.data import DataDecoder
from mailwarden.smtp.replies import with_enhanced_code
from mailwarden.text import printable

if TYPE_CHECKING:
    from mailwarden.smtp.gateway import Connection

log = logging.getLogger(__name__)

BOGUS_LIMIT: Final = 5  # unknown commands before we hang up (as aiosmtpd)
ERROR_LIMIT: Final = 20  # error replies in one session before we hang up (Postfix: smtpd_hard_error_limit)
NON_SMTP: Final = frozenset({"GET", "POST", "HEAD", "PUT", "CONNECT", "OPTIONS", "USER"})
READ_CHUNK: Final = 64 * 1024


class GatewaySMTP(SMTP):
    # aiosmtpd sizes its stream buffer with this; commands are limited separately (max_command_line).
    line_length_limit = 64 * 1024

    def __init__(self, connection: Connection, *, tls_context: ssl.SSLContext | None) -> None:
        settings = connection.gateway.config.smtp
        super().__init__(
            connection,
            data_size_limit=None,  # the size check decides, with a catalog reply and a ref
            enable_SMTPUTF8=True,
            decode_data=False,
            hostname=settings.hostname,
            ident="ESMTP mailwarden",
            tls_context=tls_context,
            timeout=settings.timeouts.command,
        )
        self.conn = connection
        self.settings = settings
        self._in_data = False
        self._errors = 0
        self._closed_reported = False
        self._session_timer: asyncio.TimerHandle | None = None

    # ------------------------------------------------------------------ plumbing
    def data_received(self, data: bytes) -> None:
        """Any byte from the client counts as activity (aiosmtpd only counts complete commands)."""
        super().data_received(data)
        timeouts = self.settings.timeouts
        self._reset_timeout(timeouts.data_block if self._in_data else timeouts.command)

    def _timeout_cb(self) -> None:
        seconds = self.settings.timeouts.data_block if self._in_data else self.settings.timeouts.command
        self._hang_up(self.conn.on_timeout(seconds, in_data=self._in_data))

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

    def connection_lost(self, error: Exception | None) -> None:
        if self._session_timer is not None:
            self._session_timer.cancel()
        self.conn.gateway.connections.discard(self)
        if not self._closed_reported:
            self._closed_reported = True
            self.conn.on_disconnect(lost=not self.conn.quit_seen)
        super().connection_lost(error)

    async def push(self, status: AnyStr, *, raw: bool = False) -> None:
        """Send a reply; protocol-level refusals get an enhanced code and are recorded."""
        text = status.decode("utf-8", "replace") if isinstance(status, bytes) else status
        if not raw:
            text = "\r\n".join(with_enhanced_code(line) for line in text.split("\r\n"))
            if text[:1] in "45":
                self._errors += 1
                if not self.conn.is_own_reply(status):
                    self.conn.on_protocol_reply(text)
        if self.transport is None:
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
            peer = await self._read_proxy_header(peer)
            if peer is None:
                self.transport.close()
                return
        greeting, accepted = await self.conn.on_connect(str(peer[0]), int(peer[1]))
        await self.push(greeting, raw=True)
        if not accepted:
            await self._refuse_session(greeting)
            return
        bogus = BOGUS_LIMIT
        while self.transport is not None:
            try:
                try:
                    line: bytes = await self._reader.readuntil()
                except asyncio.LimitOverrunError as error:
                    await self._skip_overlong_line(error.consumed)
                    await self.push(
                        f"500 5.5.2 Error: command line too long (at most {self.settings.max_command_line} bytes)"
                    )
                    continue
                if len(line) > self.settings.max_command_line:
                    await self.push(
                        f"500 5.5.2 Error: command line too long (at most {self.settings.max_command_line} bytes)"
                    )
                    continue
                line = line.rstrip(b"\r\n")
                if not line or b"\0" in line:
                    await self.push("500 5.5.2 Error: bad syntax" if line else "500 5.5.2 Error: empty command")
                    continue
                verb_bytes, _, arg_bytes = line.partition(b" ")
                try:
                    verb = verb_bytes.upper().decode("ascii")
                except UnicodeDecodeError:
                    await self.push("500 5.5.2 Error: bad syntax")
                    continue
                arg = arg_bytes.strip().decode("utf-8", "surrogateescape") if arg_bytes.strip() else None
                if verb in NON_SMTP:
                    self._hang_up(self.conn.on_non_smtp(verb))
                    return
                if self._errors >= ERROR_LIMIT:
                    self._hang_up(self.conn.on_too_many_errors(self._errors))
                    return
                method = self._smtp_methods.get(verb)
                if method is None:
                    bogus -= 1
                    if bogus < 1:
                        await self.push("502 5.5.1 Too many unrecognized commands, goodbye")
                        self.transport.close()
                        return
                    await self.push(f'500 5.5.1 Error: command "{printable(verb, 32)}" not recognized')
                    continue
                if (
                    self.require_starttls
                    and not self._tls_protocol
                    and verb not in {"NOOP", "EHLO", "STARTTLS", "QUIT"}
                ):
                    await self.push("530 5.7.0 Must issue a STARTTLS command first")
                    continue
                self.conn.count(verb)
                await method(arg)
            except asyncio.CancelledError:
                self._writer.close()
                raise
            except ConnectionError:
                self._writer.close()
                raise
            except Exception as error:  # a bug must not kill the session silently
                log.exception("session %s: unexpected error", self.conn.session.id)
                await self.push(self.conn.on_internal_error(error))

    async def _read_proxy_header(self, peer: tuple[Any, ...]) -> tuple[str, int] | None:
        trusted = any(
            ipaddress.ip_address(peer[0]) in ipaddress.ip_network(net, strict=False)
            for net in self.settings.proxy_trusted
        )
        if not trusted:
            log.warning("PROXY header expected, but %s is not in smtp.proxy_trusted: closing", peer[0])
            return None
        try:
            async with asyncio.timeout(self.settings.timeouts.command):
                data = await get_proxy(self._reader)
        except (TimeoutError, asyncio.IncompleteReadError):
            return None
        if not data.valid or data.src_addr is None:
            log.warning("invalid PROXY header from %s: %s", peer[0], data.error or "no source address")
            return None
        return str(data.src_addr), int(data.src_port or 0)

    async def _skip_overlong_line(self, consumed: int) -> None:
        await self._reader.read(consumed)
        while True:
            try:
                await self._reader.readuntil()
                return
            except asyncio.LimitOverrunError as again:
                await self._reader.read(again.consumed)

    async def _refuse_session(self, greeting: str) -> None:
        """After a 554 greeting: answer 503 to everything but QUIT (RFC 5321 3.1); after 421: close."""
        if greeting.startswith("421"):
            assert self.transport is not None
            self.transport.close()
            return
        while self.transport is not None:
            line = await self._reader.readuntil()
            if line.strip().upper() == b"QUIT":
                await self.push("221 2.0.0 Bye", raw=True)
                self.transport.close()
                return
            self._errors += 1
            if self._errors >= ERROR_LIMIT:
                self.transport.close()
                return
            await self.push("503 5.5.1 Error: no commands accepted in this session; send QUIT", raw=True)

    # ------------------------------------------------------------------ commands
    @syntax("EHLO hostname")
    async def smtp_EHLO(self, hostname: str | None) -> None:
        await self._greet(hostname, esmtp=True)

    @syntax("HELO hostname")
    async def smtp_HELO(self, hostname: str | None) -> None:
        await self._greet(hostname, esmtp=False)

    async def _greet(self, hostname: str | None, *, esmtp: bool) -> None:
        if not hostname:
            await self.push(f"501 5.5.4 Syntax: {'EHLO' if esmtp else 'HELO'} hostname")
            return
        assert self.session is not None
        self._set_rset_state()  # type: ignore[no-untyped-call]
        refusal = await self.conn.on_helo(hostname, esmtp=esmtp)
        if refusal is not None:
            await self.push(refusal, raw=True)
            return
        self.session.host_name = hostname
        self.session.extended_smtp = esmtp
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

    async def smtp_AUTH(self, arg: str | None) -> None:
        await self.push("502 5.5.1 AUTH is not available on this MX; use your provider's submission service")

    async def smtp_VRFY(self, arg: str | None) -> None:
        await self.push("252 2.5.0 Cannot VRFY user, but will accept message and attempt delivery")

    async def smtp_EXPN(self, arg: str | None) -> None:
        await self.push("502 5.5.1 EXPN is disabled")

    @syntax("DATA")
    async def smtp_DATA(self, arg: str | None) -> None:
        if await self.check_helo_needed():
            return
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
        self._in_data = True
        self._reset_timeout(self.settings.timeouts.data_block)
        try:
            while not decoder.done:
                chunk = await self._reader.read(READ_CHUNK)
                if not chunk:
                    raise ConnectionResetError("connection closed during DATA")
                spool.write(decoder.feed(chunk))
        except BaseException:
            self.conn.on_data_lost(spool)
            raise
        finally:
            self._in_data = False
        if decoder.leftover:  # pipelined commands after the final dot: give them back to the reader
            self._reader._buffer[0:0] = decoder.leftover  # type: ignore[attr-defined]
        self._reset_timeout(self.settings.timeouts.command)
        spool.finish()
        reply = await self.conn.on_data_end(
            spool, line_too_long=decoder.line_too_long, bare_newlines=decoder.bare_newlines
        )
        self._set_post_data_state()  # type: ignore[no-untyped-call]
        await self.push(reply, raw=True)

    @syntax("QUIT")
    async def smtp_QUIT(self, arg: str | None) -> None:
        self.conn.quit_seen = True
        await super().smtp_QUIT(arg)

    @syntax("RSET")
    async def smtp_RSET(self, arg: str | None) -> None:
        if arg:
            await self.push("501 5.5.4 Syntax: RSET")
            return
        self._set_rset_state()  # type: ignore[no-untyped-call]
        self.conn.on_rset()
        await self.push("250 2.0.0 OK", raw=True)
