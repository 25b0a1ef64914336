"""The verdict per message and recipient: status, cause, who must act, remedy and evidence.

Built from the reason catalog (title, explanation, remedy, actor in German and English) with
the values the deciding event recorded, plus what the rules in `rules.py` add. Nothing here
knows about terminals or web pages; reports and the web render a `Diagnosis`.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, Final

from mailwarden import catalog
from mailwarden.catalog import Actor, Lang
from mailwarden.events import now_us, us_to_iso
from mailwarden.store import Store
from mailwarden.store.base import IndexQuery
from mailwarden.trace import evidence, nearmiss
from mailwarden.trace.correlate import timeline
from mailwarden.trace.model import MessageTrace, RecipientFate
from mailwarden.trace.phrases import phrase
from mailwarden.trace.rules import Context, findings, scalar_values, when
from mailwarden.trace.search import RetentionNote, SearchSpec

RETRY_GRACE_US: Final = 3600 * 1_000_000  # a 4xx unanswered for an hour counts as "never retried"
NOT_FOUND: Final = "not_found"


@dataclass
class Diagnosis:
    """The verdict for one recipient (or for a message refused before any recipient was named)."""

    id: str
    ref: str | None
    recipient: str | None
    status: str
    reason: str | None
    responsibility: Actor
    title: str
    summary: str
    remedy: str
    lang: Lang
    at: int | None = None
    notes: list[str] = field(default_factory=list)
    evidence: list[str] = field(default_factory=list)
    evidence_ids: list[int] = field(default_factory=list)
    allowed: list[str] = field(default_factory=list)  # addresses shown unmasked when redacted

    def to_json(self) -> dict[str, Any]:
        """design.md's `explain --format json` contract, plus id, recipient, title, notes, at."""
        return {
            "ref": self.ref,
            "id": self.id,
            "recipient": self.recipient,
            "status": self.status,
            "reason": self.reason,
            "responsibility": self.responsibility,
            "title": self.title,
            "summary": self.summary,
            "remedy": self.remedy,
            "notes": self.notes,
            "evidence": self.evidence,
            "lang": self.lang,
            "at": us_to_iso(self.at) if self.at else None,
        }


def _values(trace: MessageTrace, fate: RecipientFate, lang: Lang) -> dict[str, object]:
    """Template values from what was recorded: the message, the recipient, the deciding event."""
    sender = trace.sender or ""
    values: dict[str, object] = {
        "client_ip": trace.client_ip,
        "client_name": trace.client_name,
        "helo": trace.helo,
        "sender": sender or "<>",
        "domain": sender.rpartition("@")[2] or None,
        "recipient": fate.address or None,
        "recipients": len(trace.recipients),
        "size": trace.size,
        "mailbox": fate.mailbox,
        "folder": fate.folder,
        "at": when(fate.at, lang),
        "delivered_at": when(fate.delivered_at, lang),
        "code": fate.smtp_code,
        "enhanced": fate.enhanced_code,
    }
    event = fate.decided_by
    if event is not None:
        values.update(scalar_values(event.detail))
        for record in event.detail.get("checks") or []:
            if (
                isinstance(record, dict)
                and record.get("reason") == fate.reason
                and isinstance(record.get("detail"), dict)
            ):
                values.update(scalar_values(record["detail"]))
    return {k: v for k, v in values.items() if v is not None}


def render_reason(template: str, reason: catalog.Reason, values: dict[str, object], lang: Lang) -> str:
    """A catalog text filled with recorded values; a value that was not recorded reads "(not recorded)"."""
    unknown = phrase("word.unknown", lang)
    filled = {name: unknown for name in reason.params} | values
    return catalog.render(template, reason.code, filled)


def evidence_events(trace: MessageTrace, fate: RecipientFate | None) -> list[Any]:
    """The events that prove this recipient's fate: the message's, without other recipients' ones."""
    steps = timeline(trace, fate.address if fate is not None and fate.address else None)
    seen: set[int] = set()
    events = []
    for step in steps:
        if step.event is not None and step.event.id is not None and step.event.id not in seen:
            seen.add(step.event.id)
            events.append(step.event)
    return events


def evidence_lines(
    trace: MessageTrace, fate: RecipientFate | None, redact: Callable[[str], str]
) -> tuple[list[str], list[int]]:
    events = evidence_events(trace, fate)
    return [redact(evidence.line(e)) for e in events], [int(e.id) for e in events if e.id is not None]


def allowed_addresses(trace: MessageTrace, fate: RecipientFate | None) -> list[str]:
    """What a report for this recipient shows unmasked: sender, the recipient itself, the Message-ID."""
    allowed = [trace.sender or "", (trace.message_id or "").strip("<>")]
    if fate is not None:
        allowed += [fate.address, fate.mailbox or ""]
    return sorted({a for a in allowed if a})


def diagnose(
    store: Store,
    trace: MessageTrace,
    *,
    recipient: str | None = None,
    lang: Lang = "en",
    domains: Iterable[str] = (),
    now: int | None = None,
    redact: bool = True,
    retry_grace_us: int = RETRY_GRACE_US,
) -> Diagnosis:
    """The verdict for `recipient` (default: the first) of `trace`."""
    fate = trace.fate(recipient)
    if fate is None:
        raise LookupError(f"{trace.id} has no recipient {recipient}")
    ctx = Context(store, trace, fate, lang, frozenset(d.lower() for d in domains), now or now_us(), retry_grace_us)
    found = findings(ctx)
    values = _values(trace, fate, lang) | found.values
    reason = catalog.CATALOG.get(fate.reason or "") or catalog.get(_fallback_reason(fate))
    status_line = phrase(f"status.{fate.status}", lang, **{k: values.get(k) for k in _STATUS_KEYS})
    explanation = render_reason(reason.explanation[lang], reason, values, lang)
    summary = status_line if reason.code in _SELF_EXPLAINING else f"{status_line} {explanation}"
    remedy = found.remedy or render_reason(reason.remedy[lang], reason, values, lang)
    allowed = sorted(set(allowed_addresses(trace, fate)) | set(found.reveal))
    scrub = evidence.redactor(allowed) if redact else _unchanged
    lines, ids = evidence_lines(trace, fate, scrub)
    return Diagnosis(
        id=trace.id,
        ref=trace.ref,
        recipient=fate.address or None,
        status=fate.status,
        reason=fate.reason,
        responsibility=found.responsibility or reason.actor,
        title=reason.title[lang],
        summary=scrub(summary),
        remedy=scrub(remedy),
        lang=lang,
        at=fate.at or None,
        notes=[scrub(n) for n in found.notes],
        evidence=lines,
        evidence_ids=ids,
        allowed=allowed,
    )


_STATUS_KEYS: Final = ("at", "code", "enhanced", "mailbox", "folder", "delivered_at")
_SELF_EXPLAINING: Final = frozenset({"delivered"})  # reasons whose status sentence says it all


def _unchanged(text: str) -> str:
    return text


def _fallback_reason(fate: RecipientFate) -> str:
    """A catalog entry for a fate whose event named none (e.g. a foreign log without a reason)."""
    by_status = {
        "delivered": "delivered",
        "junk": "delivered.junk",
        "accepted": "delivered",
        "retrieved": "access.retrieved",
        "deleted": "access.deleted",
        "deferred": "infra.downstream",
        "bounced": "infra.downstream",
        "tempfailed": "transaction.abandoned",
    }
    return by_status.get(fate.status, "protocol.violation")


# ---------------------------------------------------------------------------- nothing found
def near_misses(store: Store, spec: SearchSpec, domains: Iterable[str]) -> list[tuple[str, int]]:
    """Similar existing addresses for an exact recipient filter, with how many messages each had."""
    if spec.recipient is None or spec.recipient.mode != "exact":
        return []
    mailboxes = [m.address for m in store.list_mailboxes()]
    found = []
    for address in nearmiss.suggest(spec.recipient.value, mailboxes, domains):
        query = IndexQuery(recipient=address, since_us=spec.since_us, until_us=spec.until_us)
        found.append((address, sum(number for _, _, number in store.index_counts(query))))
    return found


def searched(spec: SearchSpec, lang: Lang, *, trace_id: str | None = None) -> str:
    """What was searched, in words."""
    if trace_id is not None:
        return phrase("not_found.unknown_id", lang, id=trace_id)
    parts = []
    if spec.sender is not None:
        parts.append(f"{phrase('word.from', lang)} {spec.sender}")
    if spec.recipient is not None:
        parts.append(f"{phrase('word.to', lang)} {spec.recipient}")
    for name, value in (("ref", spec.ref), ("message-id", spec.message_id), ("queue-id", spec.queue_id)):
        if value:
            parts.append(f"{name} {value}")
    if spec.client:
        parts.append(f"client {spec.client}")
    since = when(spec.since_us, lang) if spec.since_us else phrase("word.anytime", lang)
    until = when(spec.until_us, lang) if spec.until_us else phrase("word.now", lang)
    parts.append(phrase("word.window", lang, since=since, until=until))
    return ", ".join(parts)


def not_found(
    store: Store,
    spec: SearchSpec,
    *,
    lang: Lang = "en",
    domains: Sequence[str] = (),
    retention: RetentionNote | None = None,
    trace_id: str | None = None,
) -> Diagnosis:
    """ "Nothing found": the message never reached us; what was searched and what the sender should check."""
    notes = []
    for address, count in near_misses(store, spec, domains):
        key = "not_found.near_miss" if count else "not_found.near_miss_none"
        notes.append(phrase(key, lang, address=address, count=count))
    if retention is not None:
        notes.append(retention_text(retention, lang))
    return Diagnosis(
        id=trace_id or "-",
        ref=None,
        recipient=spec.recipient.value if spec.recipient is not None and spec.recipient.mode == "exact" else None,
        status=NOT_FOUND,
        reason=None,
        responsibility="sender",
        title=phrase("title.not_found", lang),
        summary=phrase("not_found.summary", lang, searched=searched(spec, lang, trace_id=trace_id)),
        remedy=phrase("not_found.remedy", lang),
        lang=lang,
        notes=notes,
    )


def retention_text(note: RetentionNote, lang: Lang) -> str:
    return phrase(
        "retention.note",
        lang,
        start=when(note.window_start_us, lang),
        days=note.retention_days,
        oldest=when(note.oldest_us, lang),
    )
