"""clamav-milter: what it logs per message (`LogInfected`, `LogClean`; formats from clamfi.c).

`Message QID from <s> to <r> with subject 'x' message-id '<m>' date 'd' infected by NAME` (Full)
or `Message from <s> to <r> infected by NAME` (Basic) becomes a `scan` event with reason
`msg.virus` and the signature in `detail.virus`; `Clean message QID from ...` a `scan` with result
clean. The queue id (the MTA's `{i}` macro) binds it to Postfix's queue file. The virus name is the
last word and the Message-ID the last `message-id '...'`, because subject and date are the
sender's text and come before them.
"""

from __future__ import annotations

import re
from typing import Final

from mailwarden.ingest.base import ADDRESS, Emit, Parser, QueueLookup, message_id
from mailwarden.ingest.framing import Frame

_MESSAGE: Final = re.compile(
    rf"(?P<clean>Clean message|Message)(?: (?P<qid>[0-9A-Za-z]{{5,24}}))? from <(?P<from>{ADDRESS})> "
    rf"to <(?P<to>{ADDRESS})>(?P<rest>.*?)(?: infected by (?P<virus>\S+))?$"
)
_MSGID: Final = re.compile(r".*' message-id '([^']*)'")


class ClamavMilterParser(Parser):
    source = "clamav-milter"

    def __init__(self, emit: Emit, queue_of: QueueLookup) -> None:
        super().__init__(emit)
        self._queue_of = queue_of

    def parse(self, frame: Frame) -> bool:
        found = _MESSAGE.match(frame.message)
        if found is None:
            return not frame.message.startswith(("Message ", "Clean message "))
        infected = found["virus"] is not None and found["clean"] == "Message"
        msgid = _MSGID.match(found["rest"])
        detail: dict[str, object] = {"result": "infected" if infected else "clean"}
        if infected:
            detail["virus"] = found["virus"]
        qid = found["qid"]
        event = self.event(
            "scan",
            frame,
            queue_id=qid,
            message_id=message_id(msgid[1]) if msgid else None,
            sender=found["from"],
            recipient=found["to"],
            reason="msg.virus" if infected else None,
            detail=detail,
        )
        self.emit(event, self._queue_of(frame.node, qid) if qid else None)
        return True
