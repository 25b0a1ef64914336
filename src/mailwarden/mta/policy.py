"""The policy delegation service: Postfix's `check_policy_service`, for the envelope checks without a milter.

Postfix sends a request of `name=value` lines ended by an empty line whenever its restriction
list reaches `check_policy_service` (usually in `smtpd_recipient_restrictions`, once per RCPT),
and we answer `action=...` and an empty line. Every request carries the whole session so far:
client address and name, HELO, sender, recipient, queue id, and an `instance` shared by the
requests of one transaction. A new instance runs the connect, HELO and MAIL checks once
(`mta/session.HostedConnection`, the gateway's handler), every request the recipient's.

Answers, as access(5) actions:
- nothing against it: `DUNNO` (Postfix's own restrictions still decide; we never say OK, never relay);
- a refusal: our reply as it is, `550 5.1.1 <sentence> ref=...` (Postfix keeps the code and prefixes
  "<address>: Recipient address rejected:");
- a temporary refusal (a DNS or scanner fault, greylisting, a rate limit): `DEFER_IF_PERMIT 4.x.x
  <sentence> ref=...`, so a definite refusal by a later restriction still wins and Postfix
  answers 450; a 421 (going down, too busy) stays `421 ...` and Postfix hangs up.
The content checks need the message, which this protocol never sees: use the milter for them.

A request that breaks the protocol (no empty line within `policy.max_request` bytes, a line
without `=`, not `request=smtpd_access_policy`) closes the connection; Postfix then answers its
client with `smtpd_policy_service_default_action` (451 4.3.5).
"""

from __future__ import annotations

import asyncio
import logging
from typing import Final

from mailwarden.config import PolicyConfig
from mailwarden.mta.session import HostedConnection, envelope_path
from mailwarden.mta.sockets import listen
from mailwarden.smtp import replies
from mailwarden.smtp.gateway import Gateway
from mailwarden.text import decimal

log = logging.getLogger(__name__)

ENVELOPE_STATES: Final = frozenset({"MAIL", "RCPT"})
END_STATES: Final = frozenset({"DATA", "END-OF-MESSAGE"})
TERMINATOR: Final = b"\n\n"


class RequestError(Exception):
    """The request is not one of Postfix's policy requests; the message says why."""


def parse_request(raw: bytes) -> dict[str, str]:
    attributes: dict[str, str] = {}
    for line in raw.decode("utf-8", "replace").splitlines():
        if not line:
            continue
        name, sep, value = line.partition("=")
        if not sep or not name:
            raise RequestError(f"a line without name=value: {line[:60]!r}")
        attributes[name] = value
    if attributes.get("request") != "smtpd_access_policy":
        raise RequestError(f"request={attributes.get('request', '')[:40]!r}, not smtpd_access_policy")
    return attributes


def action_for(reply: str | None) -> str:
    """The access(5) action for one of our replies (None: nothing against it)."""
    if reply is None:
        return "DUNNO"
    parsed = replies.parse(reply)  # continuation lines joined: the action is one line
    if parsed.code >= 500 or parsed.code == 421:
        return parsed.line
    return f"DEFER_IF_PERMIT {parsed.enhanced} {parsed.text}"


class PolicyServer:
    def __init__(self, gateway: Gateway, settings: PolicyConfig) -> None:
        self.gateway = gateway
        self.settings = settings
        self.conversations: set[asyncio.StreamWriter] = set()
        self._servers: list[asyncio.AbstractServer] = []

    async def start(self) -> list[str]:
        self._servers, bound = await listen(
            self.gateway.config,
            self.settings.listen,
            self.settings.socket_mode,
            self._serve,
            role="policy",
            limit=self.settings.max_request,
        )
        return bound

    async def stop(self) -> None:
        """Stop listening and hang up; Postfix answers its clients with its default action until we are back."""
        for server in self._servers:
            server.close()
        for writer in list(self.conversations):
            writer.close()
        for server in self._servers:
            await server.wait_closed()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.conversations.add(writer)
        conversation = Conversation(self.gateway)
        try:
            while True:
                async with asyncio.timeout(self.settings.timeout):
                    raw = await reader.readuntil(TERMINATOR)
                action = await conversation.answer(parse_request(raw))
                writer.write(f"action={action}\n\n".encode())
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            pass  # Postfix closed it (smtpd_policy_service_max_idle, max_ttl) or went away
        except asyncio.LimitOverrunError:
            conversation.broken(f"a request longer than {self.settings.max_request} bytes", logging.WARNING)
        except RequestError as error:
            conversation.broken(f"protocol error: {error}", logging.WARNING)
        except TimeoutError:
            conversation.broken(f"Postfix was silent for {self.settings.timeout:g} seconds", logging.INFO)
        finally:
            conversation.end()
            self.conversations.discard(writer)
            writer.close()


class Conversation:
    """The requests of one policy connection (one smtpd process of Postfix's, its sessions one after another)."""

    def __init__(self, gateway: Gateway) -> None:
        self.gateway = gateway
        self.instance: str | None = None
        self.handler: HostedConnection | None = None
        self.standing: str | None = None  # the transaction's refusal at connect or MAIL, repeated for each RCPT

    async def answer(self, request: dict[str, str]) -> str:
        state = request.get("protocol_state", "").upper()
        instance = request.get("instance", "")
        if state in END_STATES and self.handler is not None and instance == self.instance:
            # Asked once more after the recipients: Postfix has its queue file now, and its id joins our events.
            self.handler.learn_queue_id(request.get("queue_id", ""))
            if state == "END-OF-MESSAGE" and self.standing is None:
                self.handler.queued(decimal(request.get("size", ""), max_digits=18))  # the event's size: 64 bits
            return "DUNNO"
        if state not in ENVELOPE_STATES:  # CONNECT, HELO, VRFY, ETRN: nothing of ours to add
            return "DUNNO"
        if self.handler is None or instance != self.instance:
            self.end()
            self.instance = instance
            self.standing = await self._begin(request)
        handler = self.handler
        assert handler is not None
        handler.learn_queue_id(request.get("queue_id", ""))
        if self.standing is not None or state == "MAIL":
            return action_for(self.standing)
        handler.count("RCPT")
        reply = await handler.on_rcpt(envelope_path([f"<{request.get('recipient', '')}>"], "TO"))
        return action_for(handler.answer(reply, "RCPT"))

    async def _begin(self, request: dict[str, str]) -> str | None:
        """A new transaction: the connect, HELO and MAIL stages, as our server would run them; their refusal if any."""
        handler = self.handler = HostedConnection(self.gateway, "policy", hold_events=False)
        for name, attribute in (("client_name", "client_name"), ("auth_authen", "sasl_username")):
            if request.get(attribute):
                handler.mta[name] = request[attribute]
        reply, accepted = await handler.on_connect(
            request.get("client_address", ""), decimal(request.get("client_port", ""), max_digits=5) or 0
        )
        # Postfix holds the client's connection, and its own limits count it; a request is not a connection.
        handler.release_slot()
        if not accepted:
            return handler.answer(reply, "CONNECT")
        if request.get("helo_name"):
            handler.count("HELO")
            await handler.on_helo(request["helo_name"], esmtp=request.get("protocol_name", "").upper() != "SMTP")
        size = decimal(request.get("size", ""))
        parameters = [f"SIZE={size}"] if size else []
        handler.count("MAIL")
        reply = await handler.on_mail(envelope_path([f"<{request.get('sender', '')}>", *parameters], "FROM"))
        return handler.answer(reply, "MAIL")

    def broken(self, problem: str, level: int) -> None:
        log.log(level, "policy connection closed: %s", problem)
        if self.handler is not None:
            self.handler.problem = problem

    def end(self) -> None:
        """The transaction is over (another began, or the connection closed)."""
        if self.handler is not None:
            self.handler.on_disconnect(lost=False)
        self.handler = None
        self.standing = None
