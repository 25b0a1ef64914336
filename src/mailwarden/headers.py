"""Reading a message's header block cheaply, without parsing the whole MIME structure.

The gateway only needs a few fields (Message-ID, From, Subject) for its events; this reads them
from the first bytes of the message and tolerates anything a stranger may send.
"""

from __future__ import annotations

import re
from email.header import decode_header, make_header
from typing import Final

_FIELD: Final = re.compile(rb"^([!-9;-~]+)[ \t]*:(.*)$")
_BLANK_LINE: Final = re.compile(rb"\n\r?\n")


def header_fields(head: bytes, limit: int = 1000) -> list[tuple[str, str]]:
    """(name, unfolded raw value) pairs of the header block at the start of `head`."""
    fields: list[tuple[str, str]] = []
    name: bytes | None = None
    value: list[bytes] = []
    end = _BLANK_LINE.search(head)  # only the header block is split into lines, not the body
    for line in re.split(rb"\r?\n", head[: end.end()] if end else head):
        if line[:1] in (b" ", b"\t") and name is not None:
            value.append(line)
            continue
        if name is not None:
            fields.append(
                (name.decode("ascii", "replace"), b" ".join(v.strip() for v in value).decode("utf-8", "replace"))
            )
            name = None
            if len(fields) >= limit:
                break
        if not line:
            break
        match = _FIELD.match(line)
        if match is None:
            break  # not a header line: the body starts (or the header is broken)
        name, value = match.group(1), [match.group(2)]
    return fields


def first(fields: list[tuple[str, str]], name: str) -> str | None:
    wanted = name.lower()
    return next((value for key, value in fields if key.lower() == wanted), None)


def message_id(fields: list[tuple[str, str]]) -> str | None:
    """The Message-ID as `<...>`, or None when absent or malformed."""
    raw = first(fields, "Message-ID")
    if raw is None:
        return None
    match = re.search(r"<[^<>\s]{1,950}>", raw)
    return match.group(0) if match else None


def decoded(value: str | None, limit: int = 200) -> str | None:
    """An RFC 2047 encoded-word value as text (Subject, From), cut to `limit` characters."""
    if value is None:
        return None
    try:
        text = str(make_header(decode_header(value)))
    except (ValueError, LookupError, UnicodeDecodeError):
        text = value
    return text[:limit]
