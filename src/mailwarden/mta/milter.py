"""The milter server: Postfix asks at each stage of its SMTP session, the gateway's checks answer.

One connection per SMTP session (Postfix opens it when its client connects). We negotiate
version 6, name the macros we want per stage (so `milter_*_macros` need not change) and let
Postfix go on without waiting for us wherever our answer can wait (`NO_REPLY`): a refusal at
CONNECT or MAIL is given at the next RCPT, as the gateway and Postfix's smtpd_delay_reject do.
The stages map onto the gateway's handler (`mta/session.HostedConnection`): CONNECT, HELO, MAIL
and RCPT as they come; the header fields and body are written to a spool exactly as the message
will be queued, and the end of the message runs the DATA checks (content scanners included) on
it. A refusal is a
`SMFIR_REPLYCODE` with our code, enhanced code, sentence and ref, which Postfix sends to its
client as it is; an accepted message gets our header fields (`SMFIR_INSHEADER`, forged
Authentication-Results removed with `SMFIR_CHGHEADER`) and then `SMFIR_CONTINUE`.

Anything that breaks the protocol (a truncated or oversized packet, an unknown command, a
string without its end, a stage out of order) closes the connection; Postfix then applies
`milter_default_action` (tempfail: the client gets 451 and retries). So do a timeout and our
shutdown. Mail is never accepted unchecked because of us.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping
from typing import Final

from mailwarden.config import MilterConfig
from mailwarden.mta import milter_protocol as wire
from mailwarden.mta.session import AUTH_RESULTS, HostedConnection, envelope_path
from mailwarden.mta.sockets import listen
from mailwarden.smtp.gateway import Gateway
from mailwarden.spool import Spool

log = logging.getLogger(__name__)

# The macros we ask for, by the command they come with (for these stages Postfix sends these
# and no others, whatever its milter_*_macros say). The queue id (`i`) comes with the end of the
# message: Postfix has it only from the first recipient it accepted on, and the transaction's
# events wait for it anyway. At the other stages Postfix sends its main.cf milter_*_macros (an
# empty list in the negotiation means "the default" to it: `i` with DATA, every header field, the
# end of the headers and every body chunk); we do not decode those.
MACROS: Final[Mapping[int, str]] = {
    wire.CONNECT: "{client_addr} {client_name} {daemon_name}",
    wire.MAIL: "{mail_addr} {auth_authen}",
    wire.RCPT: "{rcpt_addr}",
    wire.END_OF_MESSAGE: "i",
}
ACTIONS: Final = wire.ADD_HEADERS | wire.CHANGE_HEADERS | wire.SET_SYMBOL_LIST
# Stages Postfix need not wait for: our answer to them cannot change anything yet (HELO: a refusal
# waits for RCPT, as in the gateway; headers and body are only spooled), or it can wait for the
# next RCPT, as Postfix's own smtpd_delay_reject does (CONNECT, MAIL). Each is one round trip less.
NO_REPLY: Final[Mapping[int, int]] = {
    wire.CONNECT: wire.NR_CONNECT,
    wire.HELO: wire.NR_HELO,
    wire.MAIL: wire.NR_MAIL,
    wire.DATA: wire.NR_DATA,
    wire.HEADER: wire.NR_HEADER,
    wire.END_OF_HEADERS: wire.NR_END_OF_HEADERS,
    wire.BODY: wire.NR_BODY,
    wire.UNKNOWN: wire.NR_UNKNOWN,
}
OPTIONS: Final = wire.HEADER_LEADING_SPACE | wire.NO_UNKNOWN | sum(NO_REPLY.values())


class MilterServer:
    def __init__(self, gateway: Gateway, settings: MilterConfig) -> None:
        self.gateway = gateway
        self.settings = settings
        self.conversations: set[Conversation] = set()
        self._servers: list[asyncio.AbstractServer] = []

    async def start(self) -> list[str]:
        self._servers, bound = await listen(
            self.gateway.config, self.settings.listen, self.settings.socket_mode, self._serve, role="milter"
        )
        return bound

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        conversation = Conversation(self, reader, writer)
        self.conversations.add(conversation)
        try:
            await conversation.run()
        finally:
            self.conversations.discard(conversation)

    async def stop(self) -> None:
        """Stop listening and hang up; Postfix applies milter_default_action to sessions still open.

        A message whose end is being decided is finished first (the gateway's `stop` waits for it).
        """
        for server in self._servers:
            server.close()
        for conversation in list(self.conversations):
            conversation.hang_up()
        for server in self._servers:
            await server.wait_closed()


class Conversation:
    """One milter connection: one SMTP session of Postfix's (or several, after QUIT_NC)."""

    def __init__(self, server: MilterServer, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.server = server
        self.reader = reader
        self.writer = writer
        self.handler = HostedConnection(server.gateway, "milter", hold_events=True)
        self.options = 0  # negotiated SMFIP_* flags
        self.negotiated = False
        self.connected = False
        self.spool: Spool | None = None
        self.quit = False
        self.closing = False
        self.macros: Mapping[str, str] = {}  # the latest MACRO packet's (they come before their command)
        self._early_refusal: str | None = None
        self.refused_session: str | None = None  # a refusal at CONNECT Postfix did not wait for: said at each RCPT
        self.refused_transaction: str | None = None  # the same for one at MAIL
        self._finishing: asyncio.Task[str] | None = None
        self._busy = False  # deciding: Postfix waits for us, it is not silent
        self._silent_since = 0.0
        self._timed_out = False
        self._watchdog: asyncio.TimerHandle | None = None

    def hang_up(self) -> None:
        self.closing = True
        if self._finishing is None:  # a message being decided is answered first, then the loop ends
            self.writer.close()

    async def run(self) -> None:
        settings = self.server.settings
        packets = wire.PacketReader(self.reader, settings.max_packet, {wire.MACRO: settings.max_macros})
        transport = self.writer.transport
        loop = asyncio.get_running_loop()
        self._silent_since = loop.time()
        self._watchdog = loop.call_later(settings.timeout, self._watch)
        try:
            while not self.quit and not self.closing:
                command, data = await packets.next()
                self._busy = True
                await self._dispatch(command, data)
                if transport.get_write_buffer_size():  # most stages write nothing, and a reply is sent at once
                    await self.writer.drain()
                self._busy = False
                self._silent_since = loop.time()  # Postfix's silence counts from our answer on
        except wire.ProtocolError as error:
            self._broken(f"protocol error: {error}", logging.WARNING)
        except (asyncio.IncompleteReadError, ConnectionError):
            if self._timed_out:
                self._broken(f"Postfix was silent for {settings.timeout:g} seconds", logging.INFO)
            elif self.closing:
                self._broken("mailwarden is shutting down", logging.INFO)
            elif self.connected:
                self._broken("Postfix closed the connection", logging.DEBUG)
        finally:
            self._watchdog.cancel()
            self._discard_spool()
            if self.connected:
                self.handler.on_disconnect(lost=not self.quit)
            self.writer.close()

    def _watch(self) -> None:
        """Close the connection once Postfix was silent for `milter.timeout` seconds.

        One timer per connection, moved only when it fires (a timeout per packet cost a tenth of
        the loop's time under smtp-source).
        """
        loop = asyncio.get_running_loop()
        due = self._silent_since + self.server.settings.timeout
        if not self._busy and loop.time() >= due:
            self._timed_out = True
            self.writer.close()  # the pending read ends, and with it the conversation
            return
        self._watchdog = loop.call_at(max(due, loop.time() + 1.0), self._watch)

    def _broken(self, problem: str, level: int) -> None:
        log.log(level, "milter connection closed: %s (session %s)", problem, self.handler.session.id or "-")
        self.handler.problem = problem

    async def _dispatch(self, command: int, data: bytes) -> None:
        if command == wire.NEGOTIATE and not self.connected:  # also again after QUIT_NC
            self._negotiate(wire.negotiation(data))
            return
        if not self.negotiated:
            raise wire.ProtocolError(f"{wire.printable_byte(command)} before the negotiation")
        if command == wire.MACRO:
            if data[:1] and data[0] not in MACROS:  # Postfix's defaults for a stage we asked nothing of
                self.macros = {}
                return
            _, values = wire.macros(data)
            self._learn(values)
        elif command == wire.CONNECT:
            await self._connect(wire.connect_info(data))
        elif command in (wire.HEADER, wire.END_OF_HEADERS, wire.BODY, wire.END_OF_MESSAGE, wire.DATA):
            await self._content(command, data)
        elif command in (wire.HELO, wire.MAIL, wire.RCPT):
            if not self.connected:
                raise wire.ProtocolError(f"{wire.printable_byte(command)} before CONNECT")
            await self._envelope(command, data)
        elif command == wire.ABORT:
            self._discard_spool()
            self.refused_transaction = None
            self.handler.on_rset()
        elif command == wire.QUIT:
            self.quit = True
        elif command == wire.QUIT_NEW_CONNECTION:  # the next SMTP session follows on this connection
            self.handler.quit_seen = True
            if self.connected:
                self.handler.on_disconnect(lost=False)
            self._discard_spool()
            self.handler = HostedConnection(self.server.gateway, "milter", hold_events=True)
            self.connected = False
            self.refused_session = self.refused_transaction = None
        elif command == wire.UNKNOWN:
            self._answer(command, None)
        else:  # OPTNEG within a session
            raise wire.ProtocolError(f"{wire.printable_byte(command)} within a session")

    def _negotiate(self, offer: wire.Negotiation) -> None:
        if offer.version < wire.VERSION:
            raise wire.ProtocolError(f"milter protocol {offer.version} offered; set milter_protocol = 6 in main.cf")
        self.options = OPTIONS & offer.options
        actions = ACTIONS & offer.actions
        self.negotiated = True
        self.writer.write(wire.negotiation_reply(actions, self.options, MACROS))

    def _learn(self, values: Mapping[str, str]) -> None:
        queue_id = values.get("i")
        if queue_id:
            self.handler.learn_queue_id(queue_id)
        for name in ("{client_name}", "{daemon_name}", "{auth_authen}"):
            if values.get(name):
                self.handler.mta[name.strip("{}")] = values[name]
        self.macros = values

    async def _connect(self, info: wire.ConnectInfo) -> None:
        if self.connected:
            raise wire.ProtocolError("a second CONNECT in one session")
        self.connected = True
        address = self.macros.get("{client_addr}") or (info.address if info.family in "46" else "")
        port = info.port if info.family in "46" else 0
        reply, accepted = await self.handler.on_connect(address, port)
        self._answer(wire.CONNECT, None if accepted else self.handler.answer(reply, "CONNECT"))

    async def _envelope(self, command: int, data: bytes) -> None:
        handler = self.handler
        standing = self.refused_session or self.refused_transaction
        if command == wire.HELO:
            (name,) = wire.strings(data, 1)
            handler.count("HELO")
            if standing is None:
                await handler.on_helo(name, esmtp=True)  # Postfix does not say which; a refusal waits for RCPT
            self._answer(command, None)
            return
        arguments = wire.strings(data)
        if command == wire.MAIL:
            handler.count("MAIL")
            path = envelope_path(arguments, "FROM", self.macros.get("{mail_addr}"))
            refusal = standing or handler.answer(await handler.on_mail(path), "MAIL")
            self._answer(command, refusal)
            return
        handler.count("RCPT")
        if standing is None:  # else: refused, and recorded, where it was decided
            path = envelope_path(arguments, "TO", self.macros.get("{rcpt_addr}"))
            standing = handler.answer(await handler.on_rcpt(path), "RCPT")
        self._answer(command, standing)

    def _answer(self, command: int, refusal: str | None) -> None:
        """Our answer to a stage; one Postfix does not wait for is kept and given at each RCPT."""
        if not self.options & NO_REPLY.get(command, 0):
            self.writer.write(wire.packet(wire.CONTINUE) if refusal is None else wire.reply_code(refusal))
        elif command == wire.CONNECT:
            self.refused_session = refusal
        elif command == wire.MAIL:
            self.refused_transaction = refusal

    async def _content(self, command: int, data: bytes) -> None:
        """DATA, header fields, their end, body chunks: spooled as the message will be queued; then the verdict."""
        handler = self.handler
        if handler.txn is None:
            raise wire.ProtocolError(f"{wire.printable_byte(command)} outside a transaction")
        if self.spool is None:
            handler.count("DATA")
            refusal = await handler.on_data_start()
            self.spool = handler.new_spool()
            if refusal is not None:  # no recipient of ours (Postfix sends DATA only after one): said at the end
                self._early_refusal = refusal
        spool = self.spool
        if command == wire.HEADER:
            name, value = wire.header(data)
            if name.lower() == AUTH_RESULTS.lower():
                handler.auth_results_at.append(spool.received)
            if not self.options & wire.HEADER_LEADING_SPACE:
                value = b" " + value
            # Postfix joins folded lines with LF; the queued message has CRLF, and so has the spool.
            folded = value.replace(b"\r\n", b"\n").replace(b"\n", b"\r\n")
            spool.write(name.encode("utf-8", "replace") + b":" + folded + b"\r\n")
        elif command == wire.END_OF_HEADERS:
            spool.write(b"\r\n")
        elif command in (wire.BODY, wire.END_OF_MESSAGE):
            spool.write(data)
        if command != wire.END_OF_MESSAGE:
            self._answer(command, None)
            return
        spool.finish()
        self.spool = None
        early, self._early_refusal = self._early_refusal, None
        if early is not None:
            spool.discard()
            reply = early
        else:
            # From here on the message is complete: decide and record even if Postfix goes away.
            self._finishing = handler.gateway.finish_soon(
                handler.on_data_end(spool, line_too_long=False, bare_newlines=0)
            )
            try:
                reply = await asyncio.shield(self._finishing)
            finally:
                self._finishing = None
        refusal = handler.answer(reply, "DATA")
        if refusal is None:
            # With HEADER_LEADING_SPACE Postfix keeps a value as given: the blank after the colon is ours to send.
            lead = " " if self.options & wire.HEADER_LEADING_SPACE else ""
            changes = [
                (wire.insert_header if change.insert else wire.change_header)(
                    change.index, change.name, lead + change.value if change.value else ""
                )
                for change in handler.changes
            ]
            self.writer.write(b"".join(changes) + wire.packet(wire.CONTINUE))  # one write, one wake-up of Postfix
        else:
            self.writer.write(wire.reply_code(refusal))
        handler.end_transaction()

    def _discard_spool(self) -> None:
        if self.spool is not None:
            self.spool.discard()
            self.spool = None
        self._early_refusal = None
