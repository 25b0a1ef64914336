"""The diagnosis rules: what to add to a catalog explanation, keyed by reason code or status.

The catalog (catalog.py) says what a reason means; a rule adds what only the trace knows:
"did you mean …", which device deleted the message and whether it is a usual one, whether
the sender retried after a 4xx. A new capability adds catalog entries and, when it needs
more than the event's recorded values, one entry in `RULES` - no if-chains elsewhere.

Lookup: `RULES[reason]`, then `RULES["status:<status>"]`; both apply when both exist.
"""

from __future__ import annotations

import ipaddress
from collections import Counter
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC
from typing import Final

from mailwarden.catalog import Actor, Lang
from mailwarden.events import us_to_datetime
from mailwarden.store import EventQuery, Store
from mailwarden.trace import nearmiss
from mailwarden.trace.model import Access, MessageTrace, RecipientFate
from mailwarden.trace.phrases import phrase

USUAL_DAYS: Final = 30
FAILED_LOGINS: Final = frozenset({"access.login_failed", "access.login_locked", "access.in_use"})
DAY_US: Final = 86400 * 1_000_000


def when(ts_us: int | None, lang: Lang) -> str:
    """A time as customers read it, always in UTC."""
    if not ts_us:
        return phrase("word.unknown", lang)
    moment = us_to_datetime(ts_us).astimezone(UTC)
    return moment.strftime("%d.%m.%Y %H:%M:%S UTC" if lang == "de" else "%Y-%m-%d %H:%M:%S UTC")


@dataclass
class Context:
    """What a rule may look at: the message, the recipient's fate, the store and the clock."""

    store: Store
    trace: MessageTrace
    fate: RecipientFate
    lang: Lang
    domains: frozenset[str]
    now: int
    retry_grace_us: int


@dataclass
class Finding:
    """A rule's contribution: template values, extra notes, and overrides of who acts and the remedy."""

    values: dict[str, object] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    reveal: list[str] = field(default_factory=list)  # addresses a redacted report may show (suggestions)
    responsibility: Actor | None = None
    remedy: str | None = None


Rule = Callable[[Context], Finding]


# ---------------------------------------------------------------------------- refusals
def _did_you_mean(ctx: Context) -> Finding:
    address = ctx.fate.address
    mailboxes = [m.address for m in ctx.store.list_mailboxes()]
    suggestions = nearmiss.suggest(address, mailboxes, ctx.domains)
    finding = Finding(reveal=suggestions)
    if suggestions:
        finding.notes.append(phrase("note.did_you_mean", ctx.lang, suggestions=", ".join(suggestions)))
    return finding


def _did_you_mean_domain(ctx: Context) -> Finding:
    finding = _did_you_mean(ctx)
    if finding.notes:
        return finding
    domain = ctx.fate.address.rpartition("@")[2]
    close = nearmiss.suggest_domain(domain, ctx.domains) if domain else []
    if close:
        finding.notes.append(phrase("note.did_you_mean_domain", ctx.lang, suggestions=", ".join(close), domain=domain))
    return finding


def _retries(ctx: Context) -> Finding:
    """After a 4xx: did the sender come back? A sender that never did must act."""
    finding = Finding()
    later = ctx.fate.later
    for attempt in later[:3]:
        finding.notes.append(
            phrase("note.retried", ctx.lang, at=when(attempt.at, ctx.lang), id=attempt.id, status=attempt.status)
        )
    if later:
        return finding
    waited = ctx.now - ctx.fate.at
    if waited < ctx.retry_grace_us:
        finding.notes.append(phrase("note.not_retried_yet", ctx.lang))
        return finding
    finding.notes.append(
        phrase("note.never_retried", ctx.lang, until=when(ctx.now, ctx.lang), hours=waited // (3600 * 1_000_000))
    )
    finding.responsibility = "sender"
    finding.remedy = phrase("remedy.never_retried", ctx.lang)
    return finding


# ---------------------------------------------------------------------------- accepted mail
def _greylisted_before(ctx: Context) -> Finding:
    finding = Finding()
    for attempt in ctx.fate.earlier:
        if attempt.status == "tempfailed":
            minutes = max(0, (ctx.trace.first_seen - attempt.at) // (60 * 1_000_000))
            finding.notes.append(
                phrase(
                    "note.greylisted_before",
                    ctx.lang,
                    at=when(attempt.at, ctx.lang),
                    id=attempt.id,
                    reason=attempt.reason,
                    minutes=minutes,
                )
            )
    return finding


def _delivery_values(ctx: Context) -> Finding:
    finding = _greylisted_before(ctx)
    fate = ctx.fate
    score = fate.decided_by.detail.get("score") if fate.decided_by else None
    finding.values.update(folder=fate.folder, mailbox=fate.mailbox, recipient=fate.mailbox or fate.address)
    if score is not None:
        finding.values["score"] = score
    return finding


def _same_network(a: str, b: str) -> bool:
    try:
        first, second = ipaddress.ip_address(a), ipaddress.ip_address(b)
    except ValueError:
        return False
    if first.version != second.version:
        return False
    prefix = 24 if first.version == 4 else 64
    return second in ipaddress.ip_network(f"{first}/{prefix}", strict=False)


def usual_clients(store: Store, mailbox: str, before_us: int, exclude_session: str | None) -> Counter[str]:
    """Client addresses that logged in to `mailbox` in the `USUAL_DAYS` before `before_us` (every
    retrieval and deletion comes after a login of its session, from the same address)."""
    query = EventQuery(
        recipient=mailbox,
        keyless=True,  # a login belongs to its session, not to a message
        kinds=("login",),
        since_us=before_us - USUAL_DAYS * DAY_US,
        until_us=before_us,
        newest_first=True,
        limit=2000,
    )
    return Counter(
        e.client_ip
        for e in store.query_events(query)
        if e.client_ip
        and (e.session is None or e.session != exclude_session)
        and e.reason not in FAILED_LOGINS
        and e.detail.get("result") != "failed"  # an attacker's attempts are nobody's usual client
    )


def _accesses(ctx: Context) -> Finding:
    fate = ctx.fate
    finding = _delivery_values(ctx)
    if not fate.accesses:
        return finding
    for access in fate.accesses:
        word = phrase("word.deleted" if access.kind == "delete" else "word.fetched", ctx.lang)
        finding.notes.append(
            phrase(
                "note.access",
                ctx.lang,
                what=word,
                at=when(access.at, ctx.lang),
                protocol=access.protocol.upper(),
                client_ip=access.client_ip,
            )
        )
    decisive: Access = next((a for a in fate.accesses if a.kind == "delete"), fate.accesses[-1])
    finding.values.update(
        client_ip=decisive.client_ip, protocol=decisive.protocol.upper(), at=when(decisive.at, ctx.lang)
    )
    finding.notes.extend(_device_notes(ctx, decisive))
    return finding


def _device_notes(ctx: Context, access: Access) -> list[str]:
    """Flag a client that is not among the mailbox's usual ones."""
    mailbox = ctx.fate.mailbox or ctx.fate.address
    if not access.client_ip:
        return []
    usual = usual_clients(ctx.store, mailbox, access.at, access.event.session)
    if not usual:
        return []
    if access.client_ip in usual:
        return [phrase("note.usual_device", ctx.lang, client_ip=access.client_ip)]
    shown = ", ".join(ip for ip, _ in usual.most_common(3))
    near = any(_same_network(access.client_ip, ip) for ip in usual)
    key = "note.other_device_network" if near else "note.other_device_foreign"
    return [phrase(key, ctx.lang, client_ip=access.client_ip, usual=shown, days=USUAL_DAYS)]


RULES: Final[dict[str, Rule]] = {
    "rcpt.unknown_user": _did_you_mean,
    "rcpt.relay_denied": _did_you_mean_domain,
    "status:tempfailed": _retries,
    "status:delivered": _delivery_values,
    "status:junk": _delivery_values,
    "status:accepted": _greylisted_before,
    "status:retrieved": _accesses,
    "status:deleted": _accesses,
}


def findings(ctx: Context) -> Finding:
    """Apply the rules for the fate's reason and status, merged in that order."""
    merged = Finding()
    for key in (ctx.fate.reason or "", f"status:{ctx.fate.status}"):
        rule = RULES.get(key)
        if rule is None:
            continue
        found = rule(ctx)
        merged.values.update(found.values)
        merged.notes.extend(n for n in found.notes if n not in merged.notes)
        merged.reveal.extend(found.reveal)
        merged.responsibility = merged.responsibility or found.responsibility
        merged.remedy = merged.remedy or found.remedy
    return merged


def scalar_values(detail: Mapping[str, object]) -> dict[str, object]:
    """The template values a check recorded: `detail.values` and scalar detail fields."""
    values: dict[str, object] = {k: v for k, v in detail.items() if isinstance(v, str | int | float)}
    recorded = detail.get("values")
    if isinstance(recorded, Mapping):
        values.update({str(k): v for k, v in recorded.items() if isinstance(v, str | int | float)})
    return values
