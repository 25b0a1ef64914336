"""SMTP reply codes (RFC 5321 4.2) and enhanced status codes (RFC 3463): the one parser for them.

Our replies (smtp/replies.py), the downstream's answers (deliver/downstream.py), foreign logs
(ingest/) and bounces pasted by senders (trace/bounce.py) all carry `550 5.1.1 text`; each reads
it here, so a shape accepted in one place is accepted in all of them. `CODE` and `ENHANCED` are
the shapes as pattern text, for a log line's own pattern that holds a code among other fields
(Postfix's `dsn=5.1.1`).
"""

from __future__ import annotations

import re
from typing import Final, NamedTuple

CODE: Final = r"[245]\d\d"  # a reply code that reports (no 1yz/3yz intermediate replies)
ENHANCED: Final = r"[245]\.\d{1,3}\.\d{1,3}"  # class.subject.detail

# At the start of a reply's text: the code (then a space, or `-` on a continuation line), the
# enhanced code (then a space or the end); either may be missing.
_LEADING: Final = re.compile(rf"(?:({CODE})[ -])?(?:({ENHANCED})(?: |\Z))?")
# Inside any text (a bounce): a code with its enhanced code, as whole words.
_QUOTED: Final = re.compile(rf"\b({CODE})[ -]({ENHANCED})\b")
# Inside any text: an enhanced code alone, not part of a longer number or version string.
_ALONE: Final = re.compile(rf"(?<![\d.])({ENHANCED})(?![\d.])")
_PARTS: Final = re.compile(r"([245])\.(\d{1,3})\.(\d{1,3})")
# A reply line as a client reads it: any code 2yz-5yz (354 too), `-` before a continuation line.
_WIRE_LINE: Final = re.compile(rb"([2-5]\d\d)([ -])(.*?)\r?\n", re.S)


class Codes(NamedTuple):
    """The codes found in a reply's text, and where they stand in it."""

    code: int | None
    enhanced: str | None
    start: int
    end: int  # where the reply's own words begin


def leading(text: str, start: int = 0) -> Codes:
    """The code and enhanced code that `text` begins with (from `start`), each None when missing."""
    found = _LEADING.match(text, start)
    assert found is not None  # every part is optional
    code = found[1]
    return Codes(int(code) if code is not None else None, found[2], start, found.end())


def quoted(text: str) -> Codes | None:
    """The first reply code followed by an enhanced code anywhere in `text` (a reply quoted in a bounce)."""
    found = _QUOTED.search(text)
    if found is None:
        return None
    return Codes(int(found[1]), found[2], found.start(), found.end())


def enhanced_in(text: str) -> str | None:
    """The first enhanced status code standing alone anywhere in `text`."""
    found = _ALONE.search(text)
    return found[1] if found is not None else None


def parts(enhanced: str) -> tuple[str, str, str] | None:
    """An enhanced status code's (class, subject, detail) digits; None when `enhanced` is not one."""
    found = _PARTS.fullmatch(enhanced)
    return None if found is None else (found[1], found[2], found[3])


def wire_line(raw: bytes) -> tuple[int, bool, bytes] | None:
    """A reply line read from a server (ending in CRLF or LF) as (code, whether it is the last
    line, text); None when it is not a reply line."""
    found = _WIRE_LINE.fullmatch(raw)
    return None if found is None else (int(found[1]), found[2] == b" ", found[3])
