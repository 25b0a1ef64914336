"""Evidence reports for customers (`mailwarden explain`) and their verification (`verify-report`).

A report holds the verdict, the timeline and the evidence lines of one message for one
recipient, in German or English, as text, HTML, JSON or PDF. Third parties' addresses are
masked by default. Every format carries a manifest (trace id, recipient, event ids, SHA-256
over the evidence lines) after the marker `mailwarden-manifest:` in base64, so `verify-report`
can rebuild the evidence from the store and compare.
"""

from __future__ import annotations

import base64
import binascii
import csv
import html
import io
import json
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

from mailwarden.catalog import Lang
from mailwarden.events import now_us, us_to_iso
from mailwarden.store import EventQuery, Store
from mailwarden.text import printable, spreadsheet_safe
from mailwarden.trace import evidence
from mailwarden.trace.correlate import Step, key_of_id, link_attempts, load, timeline
from mailwarden.trace.diagnose import Diagnosis, diagnose, not_found
from mailwarden.trace.model import MessageTrace
from mailwarden.trace.phrases import phrase
from mailwarden.trace.rules import when
from mailwarden.trace.search import SearchSpec

MANIFEST_MARK: Final = "mailwarden-manifest:"
_MANIFEST_RE: Final = re.compile(rb"mailwarden-manifest:([A-Za-z0-9+/=]+)")
FORMATS: Final = ("text", "html", "json", "pdf", "csv")
CSV_COLUMNS: Final = ("section", "time", "node", "source", "what", "text")


class ReportError(Exception):
    """A report cannot be made or checked; the message says why."""


@dataclass(frozen=True)
class Entry:
    """One timeline entry as a report shows it: when, where, who, and the localized sentence."""

    at: int
    what: str  # the step's kind (connect, check, reject, deliver, retrieve, ...)
    text: str  # localized and redacted, without the time
    node: str | None = None
    source: str | None = None  # who acted: gateway, pop3, postfix, dovecot, ...


@dataclass
class Report:
    diagnosis: Diagnosis
    trace: MessageTrace | None
    entries: list[Entry] = field(default_factory=list)  # the timeline
    facts: list[tuple[str, str]] = field(default_factory=list)  # connection facts (label, value)
    redacted: bool = True
    generated_us: int = 0
    allowed: list[str] = field(default_factory=list)

    @property
    def lang(self) -> Lang:
        return self.diagnosis.lang

    @property
    def steps(self) -> list[str]:
        """The timeline as lines: time and sentence."""
        return [f"{when(entry.at, self.lang)}  {entry.text}" for entry in self.entries]

    def manifest(self) -> dict[str, Any]:
        return {
            "v": 1,
            "id": self.diagnosis.id,
            "recipient": self.diagnosis.recipient,
            "lang": self.lang,
            "redacted": self.redacted,
            "allowed": self.allowed if self.redacted else [],
            "event_ids": self.diagnosis.evidence_ids,
            "evidence_sha256": evidence.digest(self.diagnosis.evidence),
            "generated": when(self.generated_us, "en"),
        }

    def manifest_token(self) -> str:
        raw = json.dumps(self.manifest(), separators=(",", ":"), ensure_ascii=True).encode()
        return MANIFEST_MARK + base64.b64encode(raw).decode()


def find(store: Store, trace_id: str) -> MessageTrace | None:
    """The message a ref or trace id names, with all its events; None when the store has none."""
    key = key_of_id(store, trace_id)
    traces = load(store, [key]) if key is not None else []
    return traces[0] if traces else None


def build(
    store: Store,
    trace_id: str,
    *,
    recipient: str | None = None,
    lang: Lang = "en",
    redact: bool = True,
    domains: Sequence[str] = (),
    now: int | None = None,
) -> Report:
    """The report for a ref or trace id; a "nothing found" report when the store has no such message."""
    trace = find(store, trace_id)
    if trace is None:
        return Report(
            not_found(store, SearchSpec(), lang=lang, trace_id=printable(trace_id, 40)),
            None,
            generated_us=now or now_us(),
        )
    return build_for(store, trace, recipient=recipient, lang=lang, redact=redact, domains=domains, now=now)


def build_for(
    store: Store,
    trace: MessageTrace,
    *,
    recipient: str | None = None,
    lang: Lang = "en",
    redact: bool = True,
    domains: Sequence[str] = (),
    now: int | None = None,
) -> Report:
    """The report for one recipient (default: the first) of a message `find` returned."""
    current = now or now_us()
    if not trace.fates:
        seen = ", ".join(
            sorted({f"{e.source} {e.kind}" + (f" ({e.reason})" if e.reason else "") for e in trace.events})
        )
        raise ReportError(
            f"{trace.id} is a connection or mailbox session without a message ({seen}); "
            f"`mailwarden events --ref {trace.id}` shows its events"
        )
    link_attempts(store, trace)
    fate = trace.fate(recipient)
    if recipient is not None and fate is None:
        known = ", ".join(f.address for f in trace.recipients) or "none"
        raise ReportError(f"{trace.id} has no recipient {recipient}; its recipients: {known}")
    diagnosis = diagnose(store, trace, recipient=recipient, lang=lang, domains=domains, now=current, redact=redact)
    allowed = diagnosis.allowed
    scrub = evidence.redactor(allowed) if redact else (lambda text: text)
    focus = fate.address if fate is not None and fate.address and redact else None
    entries = [
        Entry(
            step.at,
            step.what,
            scrub(_step_text(step, lang)),
            step.event.node if step.event is not None else None,
            step.event.source if step.event is not None else None,
        )
        for step in timeline(trace, focus)
    ]
    return Report(diagnosis, trace, entries, _facts(trace, lang, scrub), redact, current, allowed)


def _facts(trace: MessageTrace, lang: Lang, scrub: Callable[[str], str]) -> list[tuple[str, str]]:
    rows = [
        ("label.client", trace.client_ip),
        ("label.rdns", trace.client_name),
        ("label.helo", trace.helo),
        ("label.tls", trace.tls),
        ("label.sender", f"<{trace.sender}>" if trace.sender is not None else None),
        ("label.message_id", trace.message_id),
        ("label.size", str(trace.size) if trace.size is not None else None),
    ]
    return [(phrase(label, lang), scrub(printable(value, 300))) for label, value in rows if value]


def _step_text(step: Step, lang: Lang) -> str:
    facts = dict(step.facts)
    what = step.what
    if what == "helo":
        facts["tls"] = f", TLS {facts['tls']}" if facts.get("tls") else ""
    if what == "connect" and not facts.get("client_name"):
        facts["client_name"] = phrase("word.no_rdns", lang)
    key = f"step.{what}"
    if what == "data" and facts.get("incomplete"):
        key = "step.data_incomplete"
    elif what == "data" and not facts.get("message_id"):
        key = "step.data_no_id"
    elif f"step.{what}" not in _STEP_KEYS:
        key = "step.other"
        facts["kind"] = what
    text = phrase(key, lang, **facts)
    if facts.get("passed") and what in ("connect", "helo", "mail", "rcpt", "data"):
        text += phrase("step.passed", lang, passed=facts["passed"])
    return text


_STEP_KEYS: Final = frozenset(
    f"step.{k}"
    for k in (
        "connect",
        "helo",
        "check",
        "mail",
        "rcpt",
        "reject",
        "tempfail",
        "data",
        "deliver",
        "accept",
        "retrieve",
        "delete",
        "defer",
        "bounce",
        "disconnect",
        "attempt",
    )
)


# ---------------------------------------------------------------------------- formats
def _header(report: Report) -> list[tuple[str, str]]:
    d, lang = report.diagnosis, report.lang
    rows = [(phrase("label.message", lang), d.id)]
    if d.recipient:
        rows.append((phrase("label.recipient", lang), d.recipient))
    rows += [
        (phrase("label.status", lang), f"{d.status} - {d.title}" + (f" ({d.reason})" if d.reason else "")),
        (phrase("label.summary", lang), d.summary),
        (phrase("label.responsibility", lang), phrase(f"actor.{d.responsibility}", lang)),
        (phrase("label.remedy", lang), d.remedy),
    ]
    return rows


def as_text(report: Report) -> str:
    d, lang = report.diagnosis, report.lang
    out = [f"mailwarden - {phrase('label.report', lang)}", ""]
    out += [f"{label}: {value}" for label, value in _header(report)]
    if d.notes:
        out += ["", f"{phrase('label.notes', lang)}:"] + [f"  - {note}" for note in d.notes]
    if report.facts:
        out += ["", f"{phrase('label.connection', lang)}:"] + [f"  {label}: {value}" for label, value in report.facts]
    if report.steps:
        out += ["", f"{phrase('label.timeline', lang)}:"] + [f"  {step}" for step in report.steps]
    if d.evidence:
        out += ["", f"{phrase('label.evidence', lang)}:"] + [f"  {line}" for line in d.evidence]
    out += ["", f"{phrase('label.sha256', lang)}: {evidence.digest(d.evidence)}"]
    out.append(f"{phrase('label.generated', lang)}: {when(report.generated_us, lang)}")
    if report.redacted:
        out.append(phrase("label.redacted", lang))
    out += [report.manifest_token(), ""]
    return "\n".join(out)


def as_json(report: Report) -> str:
    body = report.diagnosis.to_json()
    body.update(
        timeline=report.steps,
        connection=dict(report.facts),
        evidence_sha256=evidence.digest(report.diagnosis.evidence),
        generated=when(report.generated_us, "en"),
        redacted=report.redacted,
        manifest=report.manifest_token(),
    )
    return json.dumps(body, ensure_ascii=False, indent=1) + "\n"


def as_html(report: Report) -> str:
    """A self-contained page; every value is escaped (stranger-controlled text cannot inject markup)."""
    d, lang = report.diagnosis, report.lang
    e = html.escape

    def table(rows: Sequence[tuple[str, str]]) -> str:
        return "<table>" + "".join(f"<tr><th>{e(k)}</th><td>{e(v)}</td></tr>" for k, v in rows) + "</table>"

    def items(lines: Sequence[str], tag: str = "li") -> str:
        return "".join(f"<{tag}>{e(line)}</{tag}>" for line in lines)

    parts = [
        "<!DOCTYPE html>",
        f'<html lang="{e(lang)}"><head><meta charset="utf-8">',
        f"<title>{e(phrase('label.report', lang))} {e(d.id)}</title>",
        "<style>body{font-family:sans-serif;max-width:60em;margin:2em auto;line-height:1.4}"
        "th{text-align:left;vertical-align:top;padding-right:1em}code,pre{font-size:.85em}"
        "pre{white-space:pre-wrap;background:#f4f4f4;padding:.5em}</style></head><body>",
        f"<h1>{e(phrase('label.report', lang))}</h1>",
        table(_header(report)),
    ]
    if d.notes:
        parts += [f"<h2>{e(phrase('label.notes', lang))}</h2><ul>", items(d.notes), "</ul>"]
    if report.facts:
        parts += [f"<h2>{e(phrase('label.connection', lang))}</h2>", table(report.facts)]
    if report.steps:
        parts += [f"<h2>{e(phrase('label.timeline', lang))}</h2><ol>", items(report.steps), "</ol>"]
    if d.evidence:
        parts += [
            f"<h2>{e(phrase('label.evidence', lang))}</h2><pre>",
            "\n".join(e(line) for line in d.evidence),
            "</pre>",
        ]
    parts.append(f"<p>{e(phrase('label.sha256', lang))}: <code>{evidence.digest(d.evidence)}</code><br>")
    parts.append(f"{e(phrase('label.generated', lang))}: {e(when(report.generated_us, lang))}")
    if report.redacted:
        parts.append(f"<br>{e(phrase('label.redacted', lang))}")
    parts.append(f'</p><p hidden id="manifest">{report.manifest_token()}</p></body></html>\n')
    return "\n".join(parts)


def as_pdf(report: Report) -> bytes:
    """A PDF made offline with fpdf2's built-in fonts (Latin-1; other characters are escaped)."""
    from fpdf import FPDF

    def latin(text: str) -> str:
        return text.encode("latin-1", "backslashreplace").decode("latin-1")

    d, lang = report.diagnosis, report.lang
    pdf = FPDF(format="A4")
    pdf.set_title(latin(f"{phrase('label.report', lang)} {d.id}"))
    pdf.set_creator("mailwarden")
    pdf.set_keywords(report.manifest_token())
    pdf.set_auto_page_break(auto=True, margin=15)
    pdf.add_page()
    width = pdf.w - pdf.l_margin - pdf.r_margin

    def heading(text: str, size: int = 12) -> None:
        pdf.ln(2)
        pdf.set_font("Helvetica", "B", size)
        pdf.multi_cell(width, 7, latin(text), new_x="LMARGIN", new_y="NEXT")

    def body(text: str, size: int = 10, font: str = "Helvetica") -> None:
        pdf.set_font(font, "", size)
        pdf.multi_cell(width, 5, latin(text), new_x="LMARGIN", new_y="NEXT")

    heading(f"mailwarden - {phrase('label.report', lang)}", 16)
    for label, value in _header(report):
        heading(label, 10)
        body(value)
    if d.notes:
        heading(phrase("label.notes", lang))
        for note in d.notes:
            body(f"- {note}")
    if report.facts:
        heading(phrase("label.connection", lang))
        for label, value in report.facts:
            body(f"{label}: {value}")
    if report.steps:
        heading(phrase("label.timeline", lang))
        for step in report.steps:
            body(step, 9)
    if d.evidence:
        heading(phrase("label.evidence", lang))
        for line in d.evidence:
            body(line, 7, "Courier")
    heading(phrase("label.sha256", lang), 10)
    body(evidence.digest(d.evidence), 8, "Courier")
    body(f"{phrase('label.generated', lang)}: {when(report.generated_us, lang)}", 8)
    if report.redacted:
        body(phrase("label.redacted", lang), 8)
    return bytes(pdf.output())


def as_csv(report: Report) -> str:
    """One row per fact, timeline entry and evidence line; no cell can become a formula."""
    d, lang = report.diagnosis, report.lang
    rows: list[tuple[object, ...]] = [("verdict", "", "", "", label, value) for label, value in _header(report)]
    rows += [("note", "", "", "", "", note) for note in d.notes]
    rows += [("connection", "", "", "", label, value) for label, value in report.facts]
    rows += [("timeline", us_to_iso(e.at), e.node, e.source, e.what, e.text) for e in report.entries]
    rows += [("evidence", "", "", "", "", line) for line in d.evidence]
    rows += [
        ("sha256", "", "", "", phrase("label.sha256", lang), evidence.digest(d.evidence)),
        ("generated", us_to_iso(report.generated_us), "", "", "", when(report.generated_us, lang)),
        ("manifest", "", "", "", "", report.manifest_token()),
    ]
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\r\n")
    writer.writerow(CSV_COLUMNS)
    writer.writerows([spreadsheet_safe(cell if cell is not None else "") for cell in row] for row in rows)
    return out.getvalue()


def render(report: Report, fmt: str) -> bytes:
    if fmt == "pdf":
        return as_pdf(report)
    renderer = {"text": as_text, "html": as_html, "json": as_json, "csv": as_csv}.get(fmt)
    if renderer is None:
        raise ReportError(f"unknown format {fmt!r}; use one of {', '.join(FORMATS)}")
    return renderer(report).encode("utf-8")


# ---------------------------------------------------------------------------- verification
@dataclass
class Verification:
    ok: bool
    problems: list[str]
    manifest: dict[str, Any]


def read_manifest(data: bytes) -> dict[str, Any]:
    match = _MANIFEST_RE.search(data)
    if match is None:
        raise ReportError("no mailwarden manifest found: this is not a report made by `mailwarden explain`")
    try:
        manifest: dict[str, Any] = json.loads(base64.b64decode(match.group(1), validate=True))
    except (binascii.Error, ValueError) as exc:
        raise ReportError(f"the report's manifest is damaged ({exc})") from None
    if not isinstance(manifest, dict) or manifest.get("v") != 1 or not isinstance(manifest.get("event_ids"), list):
        raise ReportError("the report's manifest has an unknown form")
    return manifest


def verify(store: Store, path: Path) -> Verification:
    """Rebuild the report's evidence lines from the store and compare them with the report."""
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise ReportError(f"cannot read {path}: {exc.strerror}") from None
    return verify_bytes(store, data)


def verify_bytes(store: Store, data: bytes) -> Verification:
    """`verify` for a report's content (an upload to the web center)."""
    manifest = read_manifest(data)
    ids = [int(i) for i in manifest["event_ids"] if isinstance(i, int)]
    order = {event_id: index for index, event_id in enumerate(ids)}  # the report's order (trace.correlate.timeline)
    events = sorted(store.query_events(EventQuery(ids=ids)) if ids else [], key=lambda e: order[e.id or 0])
    problems = []
    missing = sorted(set(ids) - {e.id for e in events if e.id is not None})
    if missing:
        problems.append(
            f"{len(missing)} of {len(ids)} evidence events are no longer in the store (purged by retention?)"
        )
    scrub = evidence.redactor(manifest.get("allowed") or []) if manifest.get("redacted") else (lambda text: text)
    lines = [scrub(evidence.line(e)) for e in events]
    if not missing and evidence.digest(lines) != manifest.get("evidence_sha256"):
        problems.append("the evidence in the store does not match the report's SHA-256")
    if not data.startswith(b"%PDF"):
        text = data.decode("utf-8", "replace")
        shown = _json_evidence(text) if text.lstrip().startswith("{") else None
        if text.startswith(",".join(CSV_COLUMNS)):
            shown = _csv_evidence(text)
        for number, line in enumerate(lines, 1):
            present = line in shown if shown is not None else (line in text or html.escape(line) in text)
            if not present:
                problems.append(f"evidence line {number} in the report differs from the store: {line[:120]}")
    return Verification(not problems, problems, manifest)


def _json_evidence(text: str) -> list[str]:
    try:
        shown = json.loads(text).get("evidence", [])
    except (ValueError, AttributeError):
        return []
    return [line for line in shown if isinstance(line, str)] if isinstance(shown, list) else []


def _csv_evidence(text: str) -> list[str]:
    return [row[-1] for row in csv.reader(io.StringIO(text)) if len(row) == len(CSV_COLUMNS) and row[0] == "evidence"]
