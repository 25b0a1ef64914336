"""`mailwarden explain-bounce`: turn a bounce a sender received into an answer.

Takes a DSN (RFC 3464: multipart/report with a message/delivery-status part) or any pasted
bounce text, finds the reporting and remote MTA, the status codes and the diagnostic text.
When it carries one of our refs, the answer is the trace of that message; otherwise the
enhanced status code is explained in plain words (`status_codes`).

A ref counts only where we put it: last in our reply (`ref=REF`, then the why-URL), or in our
header field and Received line of accepted mail. Replies quote stranger text, and a `ref=` inside
it is someone else's claim (our replies escape such text; older ones did not). A ref found is
also checked against the store (`mismatch`): one we do not know, or whose message had other
recipients or another sender than the bounce names, is not attributed.
"""

from __future__ import annotations

import email
import email.policy
import email.utils
import re
from dataclasses import dataclass, field
from email.message import Message
from typing import Any, Final, Literal

from mailwarden import refs, replycodes
from mailwarden.catalog import Lang
from mailwarden.text import printable
from mailwarden.trace import status_codes
from mailwarden.trace.diagnose import Diagnosis
from mailwarden.trace.model import MessageTrace
from mailwarden.trace.phrases import phrase

MAX_INPUT: Final = 10 * 1024 * 1024
_REF_CHARS: Final = rf"[{refs.ALPHABET}{refs.ALPHABET.lower()}oOiIlL]{{{refs.LENGTH}}}"
# Our reply's own position: the end of the reply, after which a bounce adds at most closing quotes or
# brackets and Postfix's "(in reply to ... command)". Matched on unfolded text (one line per reply).
_REPLY_REF: Final = re.compile(
    rf"(?:^|\s)ref=({_REF_CHARS})(?:\s+\S*/why/\1)?[\s'\"\]>).,;]*(?:\(in reply to [^()\n]*\)[\s.]*)?$", re.M
)
# Accepted mail quoted by a later bounce: our header field and our Received line.
_HEADER_REF: Final = re.compile(
    rf"^X-Mailwarden-Ref:[ \t]*({_REF_CHARS})[ \t]*$|\(mailwarden\) with \S+ id ({_REF_CHARS})\b", re.M
)
_FOLD: Final = re.compile(r"\r?\n(?=[ \t])")
_TEXT_RECIPIENT: Final = re.compile(r"^<([^<>\s]+)>: |after RCPT TO:<([^<>\s]+)>", re.M)
_POSTFIX_HOST: Final = re.compile(r"host (\S+?)\[([0-9A-Fa-f.:]+)\] said:")
_EXIM_HOST: Final = re.compile(r"SMTP error from remote mail server after [^\n]*?:\s+host (\S+) \[([0-9A-Fa-f.:]+)\]")
_MTA_FIELD: Final = re.compile(r"^(Reporting|Remote)-MTA:\s*(?:dns;)?\s*(\S+)", re.I | re.M)
_DIAGNOSTIC: Final = re.compile(r"^Diagnostic-Code:\s*(?:smtp;)?\s*(.+(?:\n[ \t]+.+)*)", re.I | re.M)


@dataclass
class BouncedRecipient:
    address: str | None
    action: str | None = None
    status: str | None = None
    diagnostic: str | None = None
    remote_mta: str | None = None


@dataclass
class Bounce:
    reporting_mta: str | None = None
    remote_mta: str | None = None
    remote_ip: str | None = None
    recipients: list[BouncedRecipient] = field(default_factory=list)
    smtp_code: int | None = None
    enhanced: str | None = None
    diagnostic: str | None = None
    sender: str | None = None  # whom the bounce went to: the sender of the bounced message
    refs: list[str] = field(default_factory=list)

    @property
    def found_anything(self) -> bool:
        return bool(self.enhanced or self.smtp_code or self.refs or self.recipients)

    def to_json(self) -> dict[str, Any]:
        return {
            "reporting_mta": self.reporting_mta,
            "remote_mta": self.remote_mta,
            "remote_ip": self.remote_ip,
            "smtp_code": self.smtp_code,
            "enhanced_code": self.enhanced,
            "diagnostic": self.diagnostic,
            "sender": self.sender,
            "refs": self.refs,
            "recipients": [vars(r) for r in self.recipients],
        }


def _clean(value: object, limit: int = 500) -> str | None:
    if value is None:
        return None
    text = " ".join(str(value).split())
    return printable(text, limit) or None


def _field_value(value: str | None) -> str | None:
    """`rfc822; bob@example.test` → `bob@example.test`; `dns; mx.example` → `mx.example`."""
    if value is None:
        return None
    return _clean(value.partition(";")[2] if ";" in value else value)


def _dsn_blocks(message: Message) -> list[Message]:
    for part in message.walk():
        if part.get_content_type() == "message/delivery-status":
            payload = part.get_payload()
            if isinstance(payload, list):
                return [block for block in payload if isinstance(block, Message)]
    return []


def parse(data: bytes) -> Bounce:
    """Everything useful in a DSN or in bounce text; never raises on odd input."""
    raw = data[:MAX_INPUT]
    text = raw.decode("utf-8", "replace")
    bounce = Bounce()
    message = email.message_from_bytes(raw, policy=email.policy.compat32)
    blocks = _dsn_blocks(message)
    if blocks:
        bounce.reporting_mta = _field_value(blocks[0].get("Reporting-MTA"))
        for block in blocks[1:]:
            recipient = BouncedRecipient(
                address=_field_value(block.get("Final-Recipient") or block.get("Original-Recipient")),
                action=_clean(block.get("Action")),
                status=_clean(block.get("Status")),
                diagnostic=_field_value(block.get("Diagnostic-Code")),
                remote_mta=_field_value(block.get("Remote-MTA")),
            )
            bounce.recipients.append(recipient)
    for kind, name in _MTA_FIELD.findall(text):
        if kind.lower() == "reporting":
            bounce.reporting_mta = bounce.reporting_mta or _clean(name)
        else:
            bounce.remote_mta = bounce.remote_mta or _clean(name)
    host = _POSTFIX_HOST.search(text) or _EXIM_HOST.search(text)
    if host is not None:
        bounce.remote_mta = bounce.remote_mta or _clean(host.group(1))
        bounce.remote_ip = _clean(host.group(2))
    for recipient in bounce.recipients:
        bounce.remote_mta = bounce.remote_mta or recipient.remote_mta
    diagnostic = _DIAGNOSTIC.search(text)
    unfolded = _FOLD.sub(" ", text)  # a reply wrapped over indented lines is one line again
    reply = replycodes.quoted(unfolded)
    if reply is not None:
        bounce.smtp_code, bounce.enhanced = reply.code, reply.enhanced
        line_end = unfolded.find("\n", reply.end)
        bounce.diagnostic = _clean(unfolded[reply.start : line_end if line_end != -1 else None])
    if diagnostic is not None:
        bounce.diagnostic = _clean(diagnostic.group(1))
    statuses = [r.status for r in bounce.recipients if r.status]
    if bounce.enhanced is None:
        bounce.enhanced = statuses[0] if statuses else replycodes.enhanced_in(text)
    if not bounce.recipients:  # pasted text: Postfix's "<address>: host ... said", Exim's "after RCPT TO:<address>"
        for match in _TEXT_RECIPIENT.finditer(text):
            address = _clean(match.group(1) or match.group(2))
            if address not in (r.address for r in bounce.recipients):
                bounce.recipients.append(BouncedRecipient(address=address))
    bounce.sender = _sole_address(message.get("To"))
    found = [m.group(1) for m in _REPLY_REF.finditer(unfolded)]
    found += [m.group(1) or m.group(2) for m in _HEADER_REF.finditer(unfolded)]
    for candidate in found:
        ref = refs.normalize(candidate)
        if refs.is_ref(ref) and ref not in bounce.refs:
            bounce.refs.append(ref)
    return bounce


def _sole_address(value: object) -> str | None:
    addresses = [a for _, a in email.utils.getaddresses([str(value)]) if a] if value is not None else []
    return _clean(addresses[0], 320) if len(addresses) == 1 else None


Mismatch = Literal["unknown", "recipient", "sender"]


def mismatch(bounce: Bounce, trace: MessageTrace | None) -> Mismatch | None:
    """Why the message `trace` (found by a ref in the bounce) is not the bounce's message; None if nothing says so."""
    if trace is None:
        return "unknown"
    addresses = [r.address for r in bounce.recipients if r.address]
    if addresses and trace.recipients and not any(trace.fate(a) is not None for a in addresses):
        return "recipient"
    if bounce.sender and trace.sender and bounce.sender.lower() != trace.sender.lower():
        return "sender"
    return None


def bounced_recipient(bounce: Bounce, trace: MessageTrace) -> str | None:
    """The first recipient the bounce names that the message had (its report explains that one)."""
    return next((r.address for r in bounce.recipients if r.address and trace.fate(r.address) is not None), None)


def code_explanation(bounce: Bounce, lang: Lang) -> list[str]:
    return status_codes.explain(bounce.enhanced, lang) if bounce.enhanced else []


def as_text(
    bounce: Bounce, meaning: list[str], linked: list[Diagnosis], unattributed: dict[str, Mismatch], lang: Lang
) -> str:
    out = [phrase("bounce.title", lang), ""]
    rows = [
        ("bounce.reporting", bounce.reporting_mta),
        ("bounce.remote", f"{bounce.remote_mta or ''} [{bounce.remote_ip}]" if bounce.remote_ip else bounce.remote_mta),
        ("bounce.status", " ".join(str(v) for v in (bounce.smtp_code, bounce.enhanced) if v)),
        ("bounce.diagnostic", bounce.diagnostic),
    ]
    out += [f"{phrase(label, lang)}: {value}" for label, value in rows if value]
    for recipient in bounce.recipients:
        details = ", ".join(v for v in (recipient.action, recipient.status) if v)
        shown = f"{recipient.address or '-'} ({details})" if details else recipient.address or "-"
        out.append(f"{phrase('bounce.recipient', lang)}: {shown}")
    for diagnosis in linked:
        out += ["", phrase("bounce.ours", lang, id=diagnosis.id), f"  {diagnosis.title}", f"  {diagnosis.summary}"]
        out += [f"  - {note}" for note in diagnosis.notes] + [f"  {diagnosis.remedy}", ""]
        out.append(phrase("bounce.full_report", lang, id=diagnosis.id))
    for ref, why in unattributed.items():
        out += ["", phrase(f"bounce.ref_{why}", lang, ref=ref)]
    if meaning and not linked:
        out += ["", f"{phrase('bounce.meaning', lang)} ({bounce.enhanced}):"] + [f"  {m}" for m in meaning]
    if not bounce.found_anything:
        out += ["", phrase("bounce.nothing", lang)]
    return "\n".join(out) + "\n"
