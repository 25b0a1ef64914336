"""rspamd: the task log line of every scanned message (`rspamd_task_write_log`).

`id: <Message-ID>, qid: <QUEUE-ID>, ip: IP, from: <SENDER>, (default: F (no action): [score/required]
[SYMBOL(score){...},...]), len: N, time: ..., rcpts: <a,b>` becomes a `scan` event with the action,
score and symbol names in `detail`, bound to the MTA's queue id (rspamd's milter proxy logs Postfix's
`qid`). The verdict is the last one in the line and the fields before it are peeled off from the
right, so a Message-ID that imitates a verdict, `qid:` or `ip:` stays inside the Message-ID.
"""

from __future__ import annotations

import re
from typing import Final

from mailwarden.ingest.base import Emit, Parser, QueueLookup, message_id, to_float
from mailwarden.ingest.framing import Frame

_METRIC: Final = re.compile(
    r"\((?P<metric>[\w-]+): (?P<flag>[TFS]) \((?P<action>[^)]+)\): \[(?P<score>-?[\d.]+)/(?P<required>-?[\d.]+)\] "
    r"\[(?P<symbols>.*?)\]\)"
)
# The fields before the verdict, peeled off from the right (rspamd writes them in this order).
_TRAILING: Final = (
    ("from", re.compile(r", from: <([^<>]*)>, $")),
    ("user", re.compile(r", user: ([^,]*), $")),
    ("ip", re.compile(r", ip: ([0-9A-Fa-f.:]+), $")),
    ("qid", re.compile(r", qid: <([^<>,\s]*)>, $")),
)
_SYMBOL: Final = re.compile(r"(?:^|,)([A-Z0-9_]+)\(")
_RCPTS: Final = re.compile(r"\brcpts: <([^<>]*)>")
_SPAM_ACTIONS: Final = frozenset({"reject", "soft reject", "add header", "rewrite subject"})


class RspamdParser(Parser):
    source = "rspamd"

    def __init__(self, emit: Emit, queue_of: QueueLookup) -> None:
        super().__init__(emit)
        self._queue_of = queue_of

    def parse(self, frame: Frame) -> bool:
        text = frame.message
        start = text.find("rspamd_task_write_log: ")
        if start < 0:
            return text.startswith("#") or "; " in text[:80]  # rspamd's other workers' housekeeping
        verdicts = list(_METRIC.finditer(text, start))  # the last: the Message-ID before it may imitate one
        found = verdicts[-1] if verdicts else None
        head = text[start + 23 : found.start()] if found is not None else ""
        if found is None or not head.startswith("id: <"):
            return False
        fields: dict[str, str] = {}
        for name, pattern in _TRAILING:
            trailing = pattern.search(head)
            if trailing is not None:
                fields[name] = trailing[1]
                head = head[: trailing.start()] + ", "
        mid = head[5:].removesuffix(", ").removesuffix(">")
        action = found["action"]
        detail: dict[str, object] = {
            "action": action,
            "score": to_float(found["score"]),
            "required": to_float(found["required"]),
            "symbols": _SYMBOL.findall(found["symbols"]),
            "spam": found["flag"] == "T",
        }
        rcpts = _RCPTS.search(text, found.end())
        recipients = rcpts[1].split(",") if rcpts and rcpts[1] else []
        if len(recipients) > 1:
            detail["recipients"] = recipients
        qid = fields.get("qid") or None
        context = self._queue_of(frame.node, qid) if qid else None
        event = self.event(
            "scan",
            frame,
            queue_id=qid,
            message_id=message_id(mid) if mid != "undef" else None,
            client_ip=fields.get("ip"),
            sender=fields.get("from"),
            recipient=recipients[0] if recipients else None,
            reason="msg.spam" if action in _SPAM_ACTIONS else None,
            detail=detail,
        )
        self.emit(event, context)
        return True
