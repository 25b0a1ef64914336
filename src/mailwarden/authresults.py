"""The Authentication-Results header (RFC 8601) of accepted mail: one header, every method's result.

A check that authenticates something stores its result in `Transaction.results[METHOD]` as a
dict and registers a renderer in `RENDERERS` (method name -> function returning the header's
`method=result ...` parts). SPF stores `{"result", "domain", "scope", "identity", ...}`
(`mailwarden.spf.SpfResult.to_dict`); DKIM and DMARC add theirs the same way.

Incoming fields that carry our own authserv-id are forgeries (RFC 8601 section 5): readers
behind us trust that id. `forged_fields` finds them in a message's header block, so that
delivery leaves them out.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator, Mapping
from typing import Any, BinaryIO, Final

from mailwarden.text import ascii_printable

Renderer = Callable[[Any], list[str]]

_TOKEN: Final = re.compile(r"[A-Za-z0-9!#$%&'*+\-./=?^_`{|}~@:]+")


def value(text: str) -> str:
    """A property value: as it is when it is a token (addresses are), else a quoted string."""
    safe = ascii_printable(text, 300)
    if _TOKEN.fullmatch(safe):
        return safe
    return '"' + safe.replace("\\", "\\\\").replace('"', '\\"') + '"'


def comment(text: str) -> str:
    safe = ascii_printable(text, 200).replace("\\", "\\\\").replace("(", "\\(").replace(")", "\\)")
    return f"({safe})"


def render_spf(result: Mapping[str, Any]) -> list[str]:
    verdict = str(result.get("result", "none"))
    parts = [f"spf={verdict}"]
    reason = result.get("decided_by") or result.get("problem")
    if reason:
        parts.append(comment(f"{result.get('domain', '')}: {reason}"))
    if result.get("scope") == "helo":
        parts.append(f"smtp.helo={value(str(result.get('identity', '')).rpartition('@')[2])}")
    else:
        parts.append(f"smtp.mailfrom={value(str(result.get('identity', '')))}")
    return [" ".join(parts)]


def render_dkim(results: list[Mapping[str, Any]]) -> list[str]:
    """One `dkim=` entry per signature (RFC 8601 2.7.1), `dkim=none` for an unsigned message."""
    if not results:
        return ["dkim=none"]
    entries = []
    for result in results:
        parts = [f"dkim={result.get('result', 'neutral')}"]
        if result.get("reason"):
            parts.append(comment(str(result["reason"])))
        if result.get("domain"):
            parts.append(f"header.d={value(str(result['domain']))}")
        if result.get("selector"):
            parts.append(f"header.s={value(str(result['selector']))}")
        entries.append(" ".join(parts))
    return entries


def render_dmarc(result: Mapping[str, Any]) -> list[str]:
    """`dmarc=` with the policy that applied (RFC 7489 11.2) and the From domain."""
    parts = [f"dmarc={result.get('result', 'none')}"]
    if result.get("domain"):
        parts.append(comment(f"p={result.get('policy', 'none')}; {result.get('reason', '')}".rstrip("; ")))
        parts.append(f"header.from={value(str(result['domain']))}")
    return [" ".join(parts)]


RENDERERS: Final[dict[str, Renderer]] = {"spf": render_spf, "dkim": render_dkim, "dmarc": render_dmarc}


def header(authserv_id: str, results: Mapping[str, Any]) -> str | None:
    """`Authentication-Results: ...` with a CRLF, or None when no method has a result."""
    entries: list[str] = []
    for method, render in RENDERERS.items():
        if method in results:
            entries.extend(render(results[method]))
    if not entries:
        return None
    return f"Authentication-Results: {ascii_printable(authserv_id, 200)};\r\n\t" + ";\r\n\t".join(entries) + "\r\n"


_AUTH_RESULTS: Final = re.compile(rb"^authentication-results[ \t]*:", re.I | re.M)
_HEADER_FIELD: Final = re.compile(rb"^[!-9;-~]+[ \t]*:")
_AUTHSERV_ID: Final = re.compile(r'"((?:[^"\\]|\\.)*)"|([^\s()<>@,;:\\"/\[\]?=]+)')
ID_SCAN_LIMIT: Final = 4096  # bytes of a field in which its authserv-id must appear (comments may precede it)
_CHUNK: Final = 65536


def forged_fields(message: BinaryIO, authserv_id: str) -> list[tuple[int, int]]:
    """Byte ranges (start, end) of the Authentication-Results fields in the header block that claim `authserv-id`.

    Reads the header block only (up to its empty line), in chunks, holding one line at a time.
    A field whose authserv-id cannot be read within its first `ID_SCAN_LIMIT` bytes (a wall of
    comments) counts as a claim too: it could be hiding ours from this scan.
    """
    first = message.read(_CHUNK)
    end = _header_end(first)
    if end is not None and _AUTH_RESULTS.search(first, 0, end) is None:
        return []  # nearly every message: no such field at all
    ours = authserv_id.lower().rstrip(".")
    spans: list[tuple[int, int]] = []
    start: int | None = None  # of the Authentication-Results field being read
    value = b""
    for offset, line in _header_lines(first, message):
        if line[:1] in (b" ", b"\t") and start is not None:  # its continuation
            value += line[: max(ID_SCAN_LIMIT - len(value), 0)]
            continue
        if start is not None and _claims(value, ours):
            spans.append((start, offset))
        start = None
        if line in (b"\r\n", b"\n", b""):  # b"": the end of the message
            break
        if _AUTH_RESULTS.match(line):
            start, value = offset, line.partition(b":")[2][:ID_SCAN_LIMIT]
    return spans


def _header_end(head: bytes) -> int | None:
    """Where the empty line that ends the header block of `head` is, if it is in `head`."""
    if head.startswith((b"\r\n", b"\n")):
        return 0
    found = [i for i in (head.find(b"\r\n\r\n"), head.find(b"\n\n")) if i >= 0]
    return min(found) + 1 if found else None


def _header_lines(first: bytes, rest: BinaryIO) -> Iterator[tuple[int, bytes]]:
    """(offset, line with its end) of each line, read on from `rest` after the chunk `first`; last (end, b"")."""
    buffer, position, base = first, 0, 0  # base: the offset of buffer[0] in the message
    while True:
        cut = buffer.find(b"\n", position) + 1
        if cut == 0:
            more = rest.read(_CHUNK)
            if not more:
                if position < len(buffer):
                    yield base + position, buffer[position:]
                yield base + len(buffer), b""
                return
            buffer, base, position = buffer[position:] + more, base + position, 0
            continue
        yield base + position, buffer[position:cut]
        position = cut


def _claims(value: bytes, ours: str) -> bool:
    """Whether a field value's authserv-id (after any comments) is `ours`, or cannot be read at all."""
    text = value.decode("utf-8", "replace")
    position, depth = 0, 0
    while position < len(text):  # skip CFWS: blanks, line ends and (nested (comments))
        char = text[position]
        if char == "\\" and depth:
            position += 2
            continue
        if char == "(":
            depth += 1
        elif char == ")" and depth:
            depth -= 1
        elif not depth and not char.isspace():
            break
        position += 1
    found = _AUTHSERV_ID.match(text, position)
    if found is None:
        return len(value) >= ID_SCAN_LIMIT  # cut off inside comments: it may be hiding a claim
    claimed = found.group(1) if found.group(1) is not None else found.group(2)
    return claimed.replace("\\", "").lower().rstrip(".") == ours
