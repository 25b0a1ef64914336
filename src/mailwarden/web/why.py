"""The public page behind every ref (`/why/REF`): what the sender already knows, in plain words.

The sending server got our reply, with the ref, during its SMTP session; this page shows that
reply again with the cause and the remedy from the catalog, the time and the connecting client's
address, in German or English. Nothing else: no mailbox a recipient resolved to, no other
message, no verdict of the trace's rules (a "did you mean" would tell which mailboxes exist).

A ref that is unknown, malformed, or names a message we accepted gets the same answer, made
the same way: the same store query (a malformed ref queries a ref that cannot exist), the same
template, no echo of what was asked. So the page cannot be used to find out which refs exist.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

from mailwarden import catalog
from mailwarden.catalog import Lang
from mailwarden.events import Event
from mailwarden.refs import is_ref, normalize
from mailwarden.store import EventQuery, Store
from mailwarden.trace.diagnose import render_reason
from mailwarden.trace.rules import scalar_values, when

# A well-formed ref no node can issue before 2092: what a malformed ref is looked up as.
_NO_REF: Final = "ZZZZZZZZZZZZ"
MAX_SHOWN: Final = 20
# Who writes refusals with our refs: the gateway, and the milter and policy service inside Postfix.
OUR_SOURCES: Final = frozenset({"gateway", "milter", "policy"})


@dataclass(frozen=True)
class Refusal:
    at: str
    client_ip: str | None
    reply: str  # code, enhanced code and text, as sent
    title: str
    explanation: str
    remedy: str
    temporary: bool


def refusals(store: Store, asked: str, lang: Lang) -> list[Refusal]:
    """Our refusals in the transaction `asked` names; empty for anything else."""
    text = asked[:40]
    ref = normalize(text) if is_ref(text) else _NO_REF
    query = EventQuery(ref=ref, kinds=("reject", "tempfail"), limit=MAX_SHOWN)
    return [
        _refusal(event, lang)
        for event in store.query_events(query)
        if event.source in OUR_SOURCES and event.smtp_code is not None
    ]


def _refusal(event: Event, lang: Lang) -> Refusal:
    reason = catalog.CATALOG.get(event.reason or "") or catalog.get("protocol.violation")
    recorded: dict[str, object] = {"client_ip": event.client_ip, "sender": event.sender, "recipient": event.recipient}
    recorded.update(scalar_values(event.detail))
    values: dict[str, object] = {
        name: value for name, value in recorded.items() if name in reason.params and value is not None
    }
    reply = event.reply or " ".join(str(part) for part in (event.smtp_code, event.enhanced_code) if part)
    return Refusal(
        at=when(event.ts, lang),
        client_ip=event.client_ip,
        reply=reply,
        title=reason.title[lang],
        explanation=render_reason(reason.explanation[lang], reason, values, lang),
        remedy=render_reason(reason.remedy[lang], reason, values, lang),
        temporary=event.kind == "tempfail",
    )
