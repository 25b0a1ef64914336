"""Time arguments of the command line: "2h", "30m", "7d" (ago) or an ISO 8601 timestamp."""

from __future__ import annotations

import re
from datetime import UTC, datetime
from typing import Final

from mailwarden.events import now_us

_UNITS: Final = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}
_LONGEST_AGO_S: Final = 100 * 366 * 86400
_RELATIVE: Final = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([smhdw])\s*$", re.I)


class TimeSpecError(ValueError):
    pass


def parse_time(text: str, *, now: int | None = None) -> int:
    """Microseconds since the epoch for "2h" (two hours ago) or an ISO timestamp (UTC if no offset)."""
    match = _RELATIVE.match(text)
    if match:
        seconds = float(match.group(1)) * _UNITS[match.group(2).lower()]
        if seconds > _LONGEST_AGO_S:  # also an overflow to infinity: no store holds such a time
            raise TimeSpecError(f"{text!r} lies too far back; a duration may be at most 100 years")
        return (now if now is not None else now_us()) - int(seconds * 1_000_000)
    try:
        moment = datetime.fromisoformat(text.strip().replace("Z", "+00:00"))
    except ValueError:
        raise TimeSpecError(
            f"{text!r} is neither a duration like 30m, 2h, 7d nor an ISO time like 2026-11-28T10:00"
        ) from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return int(moment.timestamp() * 1_000_000)
