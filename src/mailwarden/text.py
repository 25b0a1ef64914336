"""Making stranger-controlled text safe to show, and reading the numbers in it.

HELO names, addresses and subjects come from whoever connects. Before such a value goes into
an SMTP reply, a log line or a report it passes through `printable`, so that CR, LF and other
control characters cannot end a reply early, forge a log line or break a page. A number a
stranger writes (`SIZE=`, a DMARC `pct=`, a policy request's `size=`) is read by `decimal`.
"""

from __future__ import annotations

import re
from typing import Final, TypeVar

_T = TypeVar("_T")

# Control characters, line/paragraph separators, BOM, smuggled raw bytes, and bidirectional
# overrides (which can make a report or log line display something other than what it says).
_UNSAFE: Final = re.compile(
    r"[\x00-\x1f\x7f-\x9f\u200e\u200f\u202a-\u202e\u2028\u2029\u2066-\u2069\ufeff\udc80-\udcff]"
)


def _escape(match: re.Match[str]) -> str:
    char = match.group()
    code = ord(char)
    if 0xDC80 <= code <= 0xDCFF:  # a raw byte smuggled in via surrogateescape
        return f"\\x{code - 0xDC00:02x}"
    return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}"


def printable(value: str, limit: int | None = None) -> str:
    """`value` with control characters escaped as \\xNN; cut to `limit` characters if given."""
    safe = _UNSAFE.sub(_escape, value)
    if limit is not None and len(safe) > limit:
        return safe[: max(limit - 3, 0)] + "..."
    return safe


def ascii_printable(value: str, limit: int | None = None) -> str:
    """Like `printable`, but also escapes non-ASCII, for replies to clients without SMTPUTF8."""
    safe = printable(value).encode("ascii", "backslashreplace").decode("ascii")
    if limit is not None and len(safe) > limit:
        return safe[: max(limit - 3, 0)] + "..."
    return safe


def decimal(value: str, max_digits: int = 20) -> int | None:
    """The number `value` spells in 1 to `max_digits` ASCII digits, else None.

    `str.isdigit` alone admits "²" and other digits that `int` refuses (a ValueError where a
    syntax error belongs), and `int` refuses more than 4,300 digits."""
    if 0 < len(value) <= max_digits and value.isascii() and value.isdigit():
        return int(value)
    return None


_FORMULA_START: Final = ("=", "+", "-", "@", "\t", "\r")


def spreadsheet_safe(value: _T) -> _T | str:
    """A CSV cell that stranger text cannot turn into a spreadsheet formula (CSV injection)."""
    if isinstance(value, str):
        text = printable(value)
        return "'" + text if text.startswith(_FORMULA_START) else text
    return value
