"""`mailwarden trace` output: a table for people, CSV for spreadsheets, JSON for tools.

One row per message and recipient. The JSON form is the contract in docs/trace-json.md.
"""

from __future__ import annotations

import csv
import io
import json
from typing import Final

from mailwarden.events import us_to_iso
from mailwarden.text import printable, spreadsheet_safe
from mailwarden.trace.model import MessageTrace, RecipientFate
from mailwarden.trace.search import Counts, SearchResult

CSV_COLUMNS: Final = (
    "id",
    "ref",
    "first_seen",
    "node",
    "client_ip",
    "client_name",
    "helo",
    "sender",
    "message_id",
    "queue_id",
    "recipient",
    "status",
    "reason",
    "smtp_code",
    "enhanced_code",
    "reply",
    "at",
)
_TABLE: Final = (
    ("TIME (UTC)", 19),
    ("ID", 12),
    ("STATUS", 10),
    ("REASON", 22),
    ("FROM", 28),
    ("TO", 28),
    ("CLIENT", 15),
)


def _cell(value: object, width: int) -> str:
    text = printable("" if value is None else str(value))
    return (text if len(text) <= width else text[: width - 1] + "…").ljust(width)


def table(result: SearchResult) -> str:
    lines = ["  ".join(title.ljust(width) for title, width in _TABLE).rstrip()]
    for trace, fate in result.rows:
        row = (
            us_to_iso(trace.first_seen)[:19].replace("T", " "),
            trace.id,
            fate.status,
            fate.reason or "",
            "<>" if trace.sender == "" else trace.sender,
            fate.address,
            trace.client_ip,
        )
        lines.append("  ".join(_cell(v, w) for v, (_, w) in zip(row, _TABLE, strict=True)).rstrip())
    return "\n".join(lines) + "\n"


def _csv_row(trace: MessageTrace, fate: RecipientFate) -> list[object]:
    message = trace.to_json()
    values = {
        **{k: message.get(k) for k in CSV_COLUMNS},
        "recipient": fate.address,
        "status": fate.status,
        "reason": fate.reason,
        "smtp_code": fate.smtp_code,
        "enhanced_code": fate.enhanced_code,
        "reply": fate.reply,
        "at": us_to_iso(fate.at) if fate.at else None,
    }
    return [spreadsheet_safe(values[c]) for c in CSV_COLUMNS]


def as_csv(result: SearchResult) -> str:
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\r\n")
    writer.writerow(CSV_COLUMNS)
    for trace, fate in result.rows:
        writer.writerow(_csv_row(trace, fate))
    return out.getvalue()


def as_json(result: SearchResult) -> str:
    """The messages, each with the `cursor` that continues after it (`trace --cursor`)."""
    messages = [trace.to_json() | {"cursor": result.cursors.get(trace.key or "")} for trace in result.messages]
    return json.dumps(messages, ensure_ascii=False, indent=1) + "\n"


def counts_table(counts: Counts) -> str:
    """`trace --count`: recipients by status and reason, most first, and the total."""
    lines = [f"{'STATUS':<12}{'REASON':<32}{'RECIPIENTS':>10}"]
    lines += [f"{status:<12}{_cell(reason or '-', 31)} {number:>10,}" for status, reason, number in counts.rows]
    lines.append(f"{'total':<44}{counts.total:>10,}")
    return "\n".join(lines) + "\n"


def counts_json(counts: Counts) -> str:
    return json.dumps(counts.to_json(), ensure_ascii=False, indent=1) + "\n"
