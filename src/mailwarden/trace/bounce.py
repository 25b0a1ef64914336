"""`mailwarden explain-bounce`: turn a bounce a sender received into an answer.

Takes a DSN (RFC 3464: multipart/report with a message/delivery-status part) or any pasted
bounce text, finds the reporting and remote MTA, the status codes and the diagnostic text.
When it carries one of our refs, the answer is the trace of that message; otherwise the
enhanced status code is explained in plain words (`status_codes`).
"""

from __future__ import annotations

import email
import email.policy
import re
from dataclasses import dataclass, field
from email.message import Message
from typing import Any, Final

from mailwarden.catalog import Lang
from mailwarden.smtp import refs
from mailwarden.text import printable
from mailwarden.trace import status_codes
from mailwarden.trace.diagnose import Diagnosis
from mailwarden.trace.model import MessageTrace
from mailwarden.trace.phrases import phrase

MAX_INPUT: Final = 10 * 1024 * 1024
# Where our refs appear: "ref=…" and the why-URL in replies, our header and Received line in accepted mail.
_REF: Final = re.compile(
    rf"(?:ref=|/why/|X-Mailwarden-Ref:\s*|\(mailwarden\) with \S+ id )([{refs.ALPHABET}{refs.ALPHABET.lower()}oOiIlL]{{{refs.LENGTH}}})\b"
)
_REPLY: Final = re.compile(r"\b([245]\d\d)[ -]([245]\.\d{1,3}\.\d{1,3})\b")
_ENHANCED: Final = re.compile(r"(?<![\d.])([245]\.\d{1,3}\.\d{1,3})(?![\d.])")
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
    reply = _REPLY.search(text)
    if reply is not None:
        bounce.smtp_code, bounce.enhanced = int(reply.group(1)), reply.group(2)
        line_end = text.find("\n", reply.end())
        bounce.diagnostic = _clean(text[reply.start() : line_end if line_end != -1 else None])
    if diagnostic is not None:
        bounce.diagnostic = _clean(diagnostic.group(1))
    statuses = [r.status for r in bounce.recipients if r.status]
    if bounce.enhanced is None:
        enhanced = _ENHANCED.search(text)
        bounce.enhanced = statuses[0] if statuses else (enhanced.group(1) if enhanced else None)
    for match in _REF.finditer(text):
        ref = refs.normalize(match.group(1))
        if refs.is_ref(ref) and ref not in bounce.refs:
            bounce.refs.append(ref)
    return bounce


def bounced_recipient(bounce: Bounce, trace: MessageTrace) -> str | None:
    """The first recipient the bounce names that the message had (its report explains that one)."""
    return next((r.address for r in bounce.recipients if r.address and trace.fate(r.address) is not None), None)


def code_explanation(bounce: Bounce, lang: Lang) -> list[str]:
    return status_codes.explain(bounce.enhanced, lang) if bounce.enhanced else []


def as_text(bounce: Bounce, meaning: list[str], linked: list[Diagnosis], lang: Lang) -> str:
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
        out.append(f"{phrase('bounce.recipient', lang)}: {recipient.address or '-'} ({details})")
    for diagnosis in linked:
        out += ["", phrase("bounce.ours", lang, id=diagnosis.id), f"  {diagnosis.title}", f"  {diagnosis.summary}"]
        out += [f"  - {note}" for note in diagnosis.notes] + [f"  {diagnosis.remedy}", ""]
        out.append(phrase("bounce.full_report", lang, id=diagnosis.id))
    if bounce.refs and not linked:
        out += ["", phrase("bounce.unknown_ref", lang, refs=", ".join(bounce.refs))]
    if meaning and not linked:
        out += ["", f"{phrase('bounce.meaning', lang)} ({bounce.enhanced}):"] + [f"  {m}" for m in meaning]
    if not bounce.found_anything:
        out += ["", phrase("bounce.nothing", lang)]
    return "\n".join(out) + "\n"
