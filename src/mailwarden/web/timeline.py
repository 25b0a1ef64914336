"""The message page's visual timeline: the report's entries grouped into the phases of a message's life.

received -> checks -> decision -> delivered -> fetched/deleted. Each phase is reached or not, and
marked good, warning (deferred, temporary refusal, a check that found something) or bad
(refused, bounced). Rendered on the server as plain HTML and CSS; no script.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Final, Literal

from mailwarden.catalog import Lang
from mailwarden.trace.report import Entry, Report
from mailwarden.trace.rules import when

Mark = Literal["good", "warn", "bad", "none"]
PHASES: Final = ("received", "checks", "decision", "delivered", "fetched")
_PHASE_OF: Final = {
    "connect": "received",
    "helo": "received",
    "mail": "received",
    "rcpt": "received",
    "data": "received",
    "attempt": "received",
    "check": "checks",
    "greylist": "checks",
    "scan": "checks",
    "reject": "decision",
    "tempfail": "decision",
    "accept": "decision",
    "deliver": "delivered",
    "defer": "delivered",
    "bounce": "delivered",
    "retrieve": "fetched",
    "delete": "fetched",
}
_MARK_OF: Final[dict[str, Mark]] = {
    "reject": "bad",
    "bounce": "bad",
    "tempfail": "warn",
    "defer": "warn",
    "check": "warn",
    "greylist": "warn",
}
# Where the recipient's status leaves the decision phase when no entry of it says so.
_DECISION_OF_STATUS: Final[dict[str, Mark]] = {
    "rejected": "bad",
    "tempfailed": "warn",
    "bounced": "bad",
    "deferred": "warn",
}


@dataclass(frozen=True)
class Item:
    at: str
    phase: str
    mark: Mark
    text: str
    node: str | None
    source: str | None


@dataclass
class Phase:
    name: str
    mark: Mark = "none"
    count: int = 0


@dataclass
class Timeline:
    phases: list[Phase] = field(default_factory=list)
    items: list[Item] = field(default_factory=list)


def _worse(a: Mark, b: Mark) -> Mark:
    order: dict[Mark, int] = {"none": 0, "good": 1, "warn": 2, "bad": 3}
    return a if order[a] >= order[b] else b


def _item(entry: Entry, lang: Lang) -> Item:
    phase = _PHASE_OF.get(entry.what, "other")  # disconnect, logins: shown, but no phase of the message
    return Item(when(entry.at, lang), phase, _MARK_OF.get(entry.what, "good"), entry.text, entry.node, entry.source)


def build(made: Report) -> Timeline:
    items = [_item(entry, made.lang) for entry in made.entries]
    phases = {name: Phase(name) for name in PHASES}
    for item in items:
        if item.phase not in phases:
            continue
        phase = phases[item.phase]
        phase.count += 1
        phase.mark = _worse(phase.mark, item.mark)
    decision = _DECISION_OF_STATUS.get(made.diagnosis.status)
    if decision is not None:
        phases["decision"].mark = _worse(phases["decision"].mark, decision)
    return Timeline(list(phases.values()), items)
