"""amavis: the verdict line of each message (`Passed CLEAN`, `Blocked INFECTED (name)`, `Blocked SPAM`).

`(4051607-09) Blocked INFECTED (Porcupine.Phishing) {DiscardedInbound,Quarantined}, [ip]:port [ip]
<from> -> <to>,<to2>, quarantine: ..., Queue-ID: QID, Message-ID: <m>, mail_id: ..., Hits: 1.2,
size: 2003, queued_as: NEWQID, ... 104 ms` becomes a `scan` (Passed) or `reject` (Blocked) event
for Postfix's queue id `QID`, with reason `msg.virus`, `msg.spam` or `msg.dangerous_attachment`.
`queued_as` links the re-injected copy (docs/ingest.md). The fields after the recipients are read
left to right and the first of each name counts: a Message-ID cannot forge the Queue-ID before it.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Final

from mailwarden.ingest.base import ADDRESS, Context, Emit, Parser, QueueLookup, message_id, to_int
from mailwarden.ingest.framing import Frame

_VERDICT: Final = re.compile(
    r"\((?P<id>[\w-]+)\) (?P<verdict>Passed|Blocked|Not-Delivered|Quarantined)(?: (?P<category>[A-Z][A-Z-]*))?"
    r"(?: \((?P<match>[^)]*)\))? \{(?P<actions>[^}]*)\},(?P<origin>(?: [A-Z]+)*)"
    r"(?: \[(?P<ip>[0-9A-Fa-f.:]+)\](?::(?P<port>\d+))?)?(?: \[(?P<origin_ip>[0-9A-Fa-f.:]+)\])?"
    rf" <(?P<from>{ADDRESS})> -> (?P<rcpts><{ADDRESS}>(?:,<{ADDRESS}>)*)"
)
_RCPT: Final = re.compile(rf"<({ADDRESS})>")
_FIELD: Final = re.compile(r", (quarantine|Queue-ID|Message-ID|mail_id|Hits|size|queued_as): ([^,]*)")
_REASONS: Final = {
    "INFECTED": "msg.virus",
    "SPAM": "msg.spam",
    "SPAMMY": "msg.spam",
    "BANNED": "msg.dangerous_attachment",
}


class AmavisParser(Parser):
    source = "amavis"

    def __init__(self, emit: Emit, queue_of: QueueLookup, link: Callable[[str, str, Context, int], str | None]) -> None:
        super().__init__(emit)
        self._queue_of = queue_of
        self._link = link

    def parse(self, frame: Frame) -> bool:
        found = _VERDICT.search(frame.message)
        if found is None:
            return not frame.message.startswith("(")  # start-up and child-process housekeeping
        fields: dict[str, str] = {}
        for field in _FIELD.finditer(frame.message, found.end()):
            fields.setdefault(field[1], field[2].strip())
        recipients = _RCPT.findall(found["rcpts"])
        category = found["category"]
        blocked = found["verdict"] != "Passed"
        detail: dict[str, object] = {
            "verdict": found["verdict"],
            "amavis_id": found["id"],
            "actions": found["actions"],
        }
        if category:
            detail["category"] = category
        if found["match"]:
            detail["virus" if category == "INFECTED" else "match"] = found["match"]
        for key, name in (("Hits", "hits"), ("quarantine", "quarantine"), ("mail_id", "mail_id")):
            if fields.get(key) not in (None, "", "-"):
                detail[name] = fields[key]
        if len(recipients) > 1:
            detail["recipients"] = recipients
        qid = fields.get("Queue-ID")
        context = self._queue_of(frame.node, qid) if qid else None
        queued_as = fields.get("queued_as")
        if queued_as:
            detail["next_queue_id"] = queued_as
            following = self._link(frame.node, queued_as, context, frame.ts) if context is not None else None
            if following is not None:
                detail["next_key"] = following
        event = self.event(
            "reject" if blocked else "scan",
            frame,
            queue_id=qid,
            message_id=message_id(fields.get("Message-ID")),
            client_ip=found["ip"] or found["origin_ip"],
            sender=found["from"],
            recipient=recipients[0] if recipients else None,
            size=to_int(fields.get("size")),
            reply=f"{found['verdict']} {category or ''}".strip(),
            reason=_REASONS.get(category or "") if blocked else None,
            detail=detail,
        )
        self.emit(event, context)
        return True
