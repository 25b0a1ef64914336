""" "Did you mean …": addresses among our mailboxes that are one or two typing errors away.

A sender who typed `bbo@example.test` or `bob@exmaple.test` gets a refusal; the support agent
(and the customer) should see at once which existing mailbox was probably meant.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Final

MAX_SUGGESTIONS: Final = 3


def distance(a: str, b: str) -> int:
    """Edit distance counting a swap of two neighbouring characters as one error (typing errors)."""
    previous2: list[int] = []
    previous = list(range(len(b) + 1))
    for i, char_a in enumerate(a, 1):
        current = [i] + [0] * len(b)
        for j, char_b in enumerate(b, 1):
            cost = 0 if char_a == char_b else 1
            current[j] = min(previous[j] + 1, current[j - 1] + 1, previous[j - 1] + cost)
            if i > 1 and j > 1 and char_a == b[j - 2] and a[i - 2] == char_b:
                current[j] = min(current[j], previous2[j - 2] + 1)
        previous2, previous = previous, current
    return previous[len(b)]


def _close(a: str, b: str) -> int | None:
    """The distance if `b` is a plausible typo of `a` (1 error, 2 for longer words), else None."""
    allowed = 1 if max(len(a), len(b)) <= 4 else 2
    found = distance(a, b)
    return found if found <= allowed else None


def suggest(address: str, mailboxes: Iterable[str], domains: Iterable[str]) -> list[str]:
    """Existing mailboxes the sender probably meant, closest first (never the address itself)."""
    local, at, domain = address.strip().lower().rpartition("@")
    if not at or not local:
        return []
    ours = {d.lower() for d in domains}
    scored: list[tuple[int, str]] = []
    for mailbox in mailboxes:
        candidate = mailbox.lower()
        if candidate == address.lower():
            continue
        cand_local, _, cand_domain = candidate.rpartition("@")
        if cand_domain not in ours:
            continue
        domain_errors = 0 if cand_domain == domain else _close(domain, cand_domain)
        local_errors = 0 if cand_local == local else _close(local, cand_local)
        if domain_errors is None or local_errors is None:
            continue
        total = domain_errors + local_errors
        if 0 < total <= 2:
            scored.append((total, candidate))
    scored.sort()
    return [candidate for _, candidate in scored[:MAX_SUGGESTIONS]]


def suggest_domain(domain: str, domains: Iterable[str]) -> list[str]:
    """Our domains that `domain` is probably a typo of."""
    wanted = domain.lower().lstrip("@")
    scored = sorted(
        (errors, d.lower())
        for d in domains
        if d.lower() != wanted and (errors := _close(wanted, d.lower())) is not None
    )
    return [d for _, d in scored[:MAX_SUGGESTIONS]]
