"""Exim's mainlog: arrivals, deliveries, bounces, deferrals, rejects and failed logins.

A message is keyed by Exim's message id (old `1Unmew-0000ea-SE`, new `10HmaX-000000005vi-0000`),
which becomes the event's `queue_id`; the arrival line (`<=`) gives sender, client, size and
Message-ID (`id=`) for every later line of that message, until `Completed`. Rejects before DATA
carry no message id: each is a message of its own (`messages.keys.line_key`), with the client (`H=`).

Flags: `<=` arrival (`accept`), `=>` delivery and `->` further address of it, `>>` cutthrough, `*>`
suppressed (all `deliver`), `**` failure (`bounce`), `==` deferral (`defer`). Field values are
read left to right and the first of each name counts, so a Message-ID or subject that contains
` S=1` or ` H=...` cannot replace a field Exim wrote before it.
"""

from __future__ import annotations

import re
from typing import Final

from mailwarden import replycodes
from mailwarden.ingest.base import ADDRESS, Context, Emit, Parser, bounded_pop, expire, message_id, to_float, to_int
from mailwarden.ingest.framing import Frame
from mailwarden.ingest.reasons import classify, dnsbl_zone
from mailwarden.messages.keys import derived_key

_ID: Final = r"[0-9A-Za-z]{6}-(?:[0-9A-Za-z]{11}-[0-9A-Za-z]{4}|[0-9A-Za-z]{6}-[0-9A-Za-z]{2})"
_PREFIX: Final = re.compile(r"(?:\[\d+\] )?(?:(" + _ID + r") )?")
_HOST: Final = r"(?:([^\s()\[\]]+) )?(?:\((.*?)\) )?\[([0-9A-Fa-f.:]+)\](?::(\d+))?"
_H_FIELD: Final = re.compile(r"(?:^| )H=" + _HOST)
_FIELD: Final = re.compile(r' ([A-Za-z][A-Za-z0-9]{0,3})=("(?:[^"\\]|\\.)*"|\S+)')
_FLAGGED: Final = re.compile(r"(<=|=>|->|>>|\*>|\*\*|==) (\S+)(?: <(" + ADDRESS + r")>)?")
# `rejected RCPT <a@b>: reason` (older Exim: `rejected RCPT a@b: reason`). The reason is what
# follows the address, which a stranger chose: a bare one ends at the first `:` outside quotes.
_BARE_ADDRESS: Final = r'(?:"(?:[^"\\]|\\.)*"|\[[^\]\s]*\]|[^\s"<>:\[\]])+'
_REJECTED: Final = re.compile(
    r"(temporarily )?rejected (RCPT|MAIL|after DATA|EHLO or HELO|connection in \"\w+\" ACL|by non-SMTP ACL"
    r"|during MIME ACL checks|by local_scan\(\)|\S+)"
    rf"(?: (?:<({ADDRESS})>|({_BARE_ADDRESS})))?(?:: (.*)| *)$"
)
_BY_STAGE: Final = {"EHLO or HELO": "helo.invalid"}  # Exim's HELO refusals name no cause of their own
_AUTH_FAILED: Final = re.compile(r"(\S+) authenticator failed for " + _HOST + r"(?: I=\S+)?(?: Ci=\d+)?: (.*)$")
_ANY_HOST: Final = re.compile(r"(?:H=|from )" + _HOST)
_VIOLATIONS: Final = (
    "SMTP protocol synchronization error",
    "SMTP call from",
    "SMTP protocol error",
    "SMTP syntax error",
)
_SESSION_LINE: Final = re.compile(
    r"no MAIL in SMTP connection from|SMTP connection from|dropped by|no host name found for IP address"
    r"|no IP address found for host|sender verify fail"
)
_IP: Final = re.compile(r"\[([0-9A-Fa-f.:]+)\]|address ([0-9A-Fa-f.:]+)$")
_VERIFY_FOR: Final = re.compile(r"sender verify fail for <(" + ADDRESS + r")>(?:: (.*))?")
_SA_ACTION: Final = re.compile(r"SA: Action: (.*?): score=(-?[\d.]+) required=(-?[\d.]+)")
_SA_HOST: Final = re.compile(r"\(host=(\S+) \[([0-9A-Fa-f.:]+)\]\)")
_SET_ID: Final = re.compile(r"\(set_id=(.*)\)\s*$")
_QUIET: Final = (
    "Completed",
    "SMTP connection from",
    "Start queue run",
    "End queue run",
    "no host name found",
    "no IP address found",
    "exim ",
    "Spool file is locked",
    "Message is frozen",
    "Frozen",
    "Unfrozen",
    "cwd=",
    "Warning:",
    "DKIM:",
    "TLS error",
    "SMTP command timeout",
    "SMTP data timeout",
    "unexpected disconnection",
    "SMTP connection lost",
    "Connection from",
    "sender verify",
    "H=",
    "SMTP protocol",
    "SMTP call from",
    "SMTP syntax error",
    "ignoring AUTH",
    "dropped:",
    "Received from",
)


def _codes(reply: str | None) -> tuple[int | None, str | None]:
    """The code and enhanced code of the remote reply Exim quotes: at the text's start or after
    the first `: ` that is followed by a code (`... after RCPT TO:<a@b>: 550 5.1.1 ...`)."""
    at = 0
    while reply is not None and at >= 0:
        found = replycodes.leading(reply, at)
        if found.code is not None:
            return found.code, found.enhanced
        at = reply.find(": ", at)
        at = at + 2 if at >= 0 else at
    return None, None


def _fields(text: str) -> dict[str, str]:
    fields: dict[str, str] = {}
    for found in _FIELD.finditer(text):
        value = found[2]
        if value.startswith('"') and value.endswith('"') and len(value) > 1:
            value = value[1:-1]
        fields.setdefault(found[1], value)
    return fields


class EximParser(Parser):
    source = "exim"
    MESSAGE_LIMIT = 200_000  # messages kept in memory (the oldest go first)

    def __init__(self, emit: Emit) -> None:
        super().__init__(emit)
        self.messages: dict[tuple[str, str], Context] = {}

    def parse(self, frame: Frame) -> bool:
        prefix = _PREFIX.match(frame.message)
        assert prefix is not None  # every part of it is optional
        exim_id, text = prefix[1], frame.message[prefix.end() :]
        if exim_id is not None:
            flagged = _FLAGGED.match(text)
            if flagged is not None:
                return self._flagged(frame, exim_id, flagged, text)
            if text.startswith("Completed"):
                self._message(frame, exim_id).closed_us = frame.ts
                return True
        rejected = _REJECTED.search(text)
        if rejected is not None:
            host = _H_FIELD.search(text, 0, rejected.start())
            if host is not None or exim_id is not None:
                return self._rejected(frame, exim_id, host, text, rejected)
        session = _SESSION_LINE.search(text)
        if session is not None:
            return self._session_line(frame, exim_id, session[0], text)
        if text.startswith("SA: Action: "):
            return self._spamassassin(frame, exim_id, text)
        failed = _AUTH_FAILED.match(text)
        if failed is not None:
            return self._auth_failed(frame, failed)
        if text.startswith(_VIOLATIONS):
            return self._violation(frame, text)
        return text.startswith(_QUIET) or (exim_id is not None and text.startswith(("removed by", "Message ")))

    def _message(self, frame: Frame, exim_id: str) -> Context:
        key = (frame.node, exim_id)
        context = self.messages.get(key)
        if context is None:
            bounded_pop(self.messages, self.MESSAGE_LIMIT)
            context = self.messages[key] = Context(frame.ts)
            context["message_key"] = derived_key("X", frame.node, exim_id)  # Exim never reuses its ids
        context.seen_us = frame.ts
        return context

    def _flagged(self, frame: Frame, exim_id: str, found: re.Match[str], text: str) -> bool:
        flag, address, original = found[1], found[2], found[3]
        rest = text[found.end() :]
        fields = _fields(rest)
        host = _H_FIELD.search(rest)
        context = self._message(frame, exim_id)
        detail: dict[str, object] = {}
        for name, key in (("R", "router"), ("T", "transport"), ("P", "protocol"), ("U", "user")):
            if name in fields and not (name == "T" and flag == "<="):
                detail[key] = fields[name]
        if flag == "<=":
            context["sender"] = "" if address == "<>" else address.strip("<>")
            context["message_id"] = message_id(fields.get("id"))
            if (size := to_int(fields.get("S"))) is not None:
                context["size"] = size
            if host is not None:
                context["client_name"], context["helo"], context["client_ip"] = host[1], host[2], host[3]
            if flag == "<=" and "R" in fields:
                detail = {"bounce_of": fields["R"]}
            self.emit(self.event("accept", frame, queue_id=exim_id, detail=detail), context)
            return True
        kind = {"**": "bounce", "==": "defer"}.get(flag, "deliver")
        reply: str | None = fields.get("C")
        if kind != "deliver":
            _, _, reply = rest.partition(": ")
            reply = reply or rest.strip() or None
        if host is not None:
            detail["host"] = f"{host[1] or ''} [{host[3]}]".strip()
        if original:
            detail["orig_to"] = original
        code, enhanced = _codes(reply)
        event = self.event(
            kind,
            frame,
            queue_id=exim_id,
            recipient=address,
            smtp_code=code,
            enhanced_code=enhanced,
            reply=reply,
            reason="delivered" if kind == "deliver" else classify(reply, enhanced),
            detail=detail,
        )
        self.emit(event, context)
        return True

    def _rejected(
        self, frame: Frame, exim_id: str | None, host: re.Match[str] | None, text: str, found: re.Match[str]
    ) -> bool:
        stage, subject, reply = found[2], found[3] if found[3] is not None else found[4], found[5]
        fields = _fields(text[: found.start()])
        sender = fields.get("F")
        recipient = subject if stage == "RCPT" else None
        if stage == "MAIL":
            sender = subject
        detail: dict[str, object] = {"stage": stage}
        zone = dnsbl_zone(reply or "")
        if zone:
            detail["zone"] = zone
        code, enhanced = _codes(reply)
        event = self.event(
            "tempfail" if found[1] else "reject",
            frame,
            queue_id=exim_id,
            client_ip=host[3] if host else None,
            client_name=host[1] if host else None,
            helo=host[2] if host else None,
            sender=sender.strip("<>") if sender is not None else None,
            recipient=recipient,
            smtp_code=code,
            enhanced_code=enhanced,
            reply=reply,
            reason=classify(reply, enhanced) or _BY_STAGE.get(stage),
            detail=detail,
        )
        self.emit(event, self._message(frame, exim_id) if exim_id else None)
        return True

    def _session_line(self, frame: Frame, exim_id: str | None, what: str, text: str) -> bool:
        """A connection that ended without mail, was dropped by an ACL, or whose client failed a DNS check."""
        host = _ANY_HOST.search(text)
        verified = _VERIFY_FOR.search(text) if what.startswith("sender verify") else None
        kind, reason = "disconnect", None
        if "DROP" in text or what.startswith("dropped"):
            kind = "reject"
        elif what.startswith("no host name"):
            kind, reason = "check", "client.no_rdns"
        elif what.startswith("no IP address"):
            kind, reason = "check", "client.fcrdns_mismatch"
        elif what.startswith("sender verify"):
            # The cause follows the address; a recipient's (`Unrouteable address`) is the sender domain's here.
            cause = classify(verified[2]) if verified is not None else None
            kind = "check"
            reason = cause if cause is not None and cause.startswith("sender.") else "sender.domain_missing"
        address = _IP.search(text) if host is None else None
        ip = host[3] if host else (address[1] or address[2]) if address else None
        event = self.event(
            kind,
            frame,
            queue_id=exim_id,
            client_ip=ip,
            client_name=host[1] if host else None,
            helo=host[2] if host else None,
            sender=verified[1] if verified else None,
            reply=text,
            reason=reason,
        )
        self.emit(event, None)
        return True

    def _spamassassin(self, frame: Frame, exim_id: str | None, text: str) -> bool:
        """sa-exim's verdict: `SA: Action: silently tossed message: score=31.0 required=5.0 ...`."""
        found = _SA_ACTION.match(text)
        if found is None:
            return False
        host = _SA_HOST.search(text)
        action = found[1]
        tossed = "tossed" in action or "rejected" in action
        event = self.event(
            "reject" if tossed else "scan",
            frame,
            queue_id=exim_id,
            client_ip=host[2] if host else None,
            client_name=host[1] if host and host[1] != "NULL" else None,
            reply=action,
            reason="msg.spam" if tossed or "Spam" in action else None,
            detail={"score": to_float(found[2]), "required": to_float(found[3]), "action": action},
        )
        self.emit(event, self._message(frame, exim_id) if exim_id else None)
        return True

    def _violation(self, frame: Frame, text: str) -> bool:
        """A client breaking the protocol (talking before the greeting, too many non-mail commands).

        Exim quotes the offending command before `H=`, so the client is the last `H=` of the line."""
        hosts = list(_ANY_HOST.finditer(text))
        host = hosts[-1] if hosts else None
        event = self.event(
            "reject",
            frame,
            client_ip=host[3] if host else None,
            client_name=host[1] if host else None,
            reply=text,
            reason="protocol.violation",
        )
        self.emit(event, None)
        return True

    def _auth_failed(self, frame: Frame, found: re.Match[str]) -> bool:
        reply = found[6]
        user = _SET_ID.search(reply)
        code, _ = _codes(reply)
        event = self.event(
            "login",
            frame,
            client_ip=found[4],
            client_name=found[2],
            helo=found[3],
            recipient=user[1] if user else None,
            smtp_code=code,
            reply=reply,
            detail={"result": "failed", "protocol": "smtp", "method": found[1]},
        )
        self.emit(event, None)
        return True

    def evict(self, now_us: int) -> None:
        expire(self.messages, now_us, open_for_us=10 * 86_400_000_000, closed_for_us=60_000_000)
