"""SMTP replies: catalog entries rendered with the transaction's ref, and enhanced status codes.

Every refusal and temporary failure ends with `ref=REF` (and the why-URL when configured), added
by `with_ref` and nowhere else. Replies quote stranger text (addresses, HELO names, parameters,
commands); `with_ref` escapes the `=` of any `ref=` already in the text, so the only ref a
reply carries is ours, in its last position - where `explain-bounce` looks for it.
Long replies are split into continuation lines so that no line exceeds RFC 5321's 512 octets.
"""

from __future__ import annotations

import re
import textwrap
from dataclasses import dataclass
from typing import Final

from mailwarden import catalog, replycodes
from mailwarden.checks.base import Verdict
from mailwarden.text import ascii_printable, printable

MAX_TEXT: Final = 400  # characters of text per reply line, well inside 512 octets
MAX_TEXT_OCTETS: Final = 480  # ... and octets, for UTF-8 text: "550-5.7.1 " + text + CRLF stays under 512

_REF_MARK: Final = re.compile(r"(ref)=", re.IGNORECASE)

# Enhanced codes for replies produced by the protocol layer (RFC 3463, RFC 5321 4.2.2).
_DEFAULT_ENHANCED: Final[dict[str, str]] = {
    "221": "2.0.0",
    "220": "2.0.0",
    "250": "2.0.0",
    "252": "2.5.0",
    "421": "4.3.0",
    "450": "4.2.0",
    "451": "4.3.0",
    "452": "4.3.1",
    "454": "4.7.0",
    "500": "5.5.2",
    "501": "5.5.4",
    "502": "5.5.1",
    "503": "5.5.1",
    "504": "5.5.4",
    "530": "5.7.0",
    "535": "5.7.8",
    "550": "5.0.0",
    "552": "5.3.4",
    "553": "5.1.3",
    "554": "5.0.0",
    "555": "5.5.4",
}


def with_enhanced_code(reply: str) -> str:
    """Insert a fitting enhanced status code into a reply line that lacks one."""
    found = replycodes.leading(reply)
    if found.code is None or found.enhanced is not None:
        return reply
    code = reply[:3]
    enhanced = _DEFAULT_ENHANCED.get(code, f"{code[0]}.0.0")
    return f"{code}{reply[3]}{enhanced} {reply[4:]}"


@dataclass(frozen=True)
class Reply:
    code: int
    enhanced: str
    text: str

    def wire(self) -> str:
        """The reply as sent, continuation lines joined with CRLF (push adds the final CRLF)."""
        if len(self.text) <= MAX_TEXT and (self.text.isascii() or len(self.text.encode()) <= MAX_TEXT_OCTETS):
            return f"{self.code} {self.enhanced} {self.text}"  # the common case: one line, no wrapping needed
        parts = [
            piece
            for part in textwrap.wrap(self.text, MAX_TEXT, break_long_words=True, break_on_hyphens=False) or [""]
            for piece in _split_octets(part, MAX_TEXT_OCTETS)
        ]
        lines = [f"{self.code}-{self.enhanced} {part}" for part in parts[:-1]]
        lines.append(f"{self.code} {self.enhanced} {parts[-1]}")
        return "\r\n".join(lines)

    @property
    def line(self) -> str:
        """The reply on one line, as recorded in events."""
        return f"{self.code} {self.enhanced} {self.text}"


def _split_octets(text: str, limit: int) -> list[str]:
    """`text` in pieces of at most `limit` octets of UTF-8 (a line of multi-byte characters is longer in octets)."""
    pieces: list[str] = []
    while len(text.encode("utf-8")) > limit:
        cut = len(text.encode("utf-8")[:limit].decode("utf-8", "ignore"))
        pieces.append(text[:cut])
        text = text[cut:]
    pieces.append(text)
    return pieces


def with_ref(text: str, ref: str, explain_url: str = "") -> str:
    """`text` ending with our ref (and the why-URL): stranger text quoted in it can never form `ref=`."""
    text = _REF_MARK.sub(r"\1\\x3d", text)  # the escape `printable` uses for control characters
    return f"{text} ref={ref} {explain_url}{ref}" if explain_url else f"{text} ref={ref}"


def parse(reply: str) -> Reply:
    """One of our replies as sent (continuation lines joined), taken apart again."""
    texts: list[str] = []
    first: replycodes.Codes | None = None
    for line in reply.split("\r\n"):
        found = replycodes.leading(line)
        if found.code is None or found.enhanced is None:
            raise ValueError(f"not a reply with an enhanced status code: {line!r}")
        first = first or found
        texts.append(line[found.end :])
    assert first is not None and first.code is not None and first.enhanced is not None  # one line at least
    return Reply(first.code, first.enhanced, " ".join(texts))


def for_verdict(verdict: Verdict, ref: str, explain_url: str, *, utf8: bool) -> Reply:
    """The reply for a refusal or temporary failure: the catalog sentence plus ref and URL."""
    reason = catalog.get(verdict.reason)
    text = with_ref(catalog.render(reason.reply, reason.code, verdict.values), ref, explain_url)
    return Reply(verdict.code, verdict.enhanced_code, printable(text) if utf8 else ascii_printable(text))


def plain(code: int, enhanced: str, text: str, *, utf8: bool = False) -> Reply:
    return Reply(code, enhanced, printable(text) if utf8 else ascii_printable(text))
