"""Evidence lines: each event as one language-independent, printable line, and their SHA-256.

A report shows these lines and carries the digest over them, so `verify-report` can rebuild
them from the store and prove the report unchanged. Foreign log events show their raw line
with file and offset; our own events show their recorded fields.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Callable, Iterable
from typing import Final

from mailwarden.events import Event, us_to_iso
from mailwarden.text import printable

_FIELDS: Final = ("client_ip", "client_name", "helo", "sender", "recipient", "message_id", "queue_id", "reason")
_ADDRESS: Final = re.compile(r"[A-Za-z0-9.!#$%&'*+/=?^_`{|}~\-]+@[A-Za-z0-9](?:[A-Za-z0-9\-.]*[A-Za-z0-9])?")


def line(event: Event) -> str:
    """One event as an evidence line: time, node, source, kind, ref and what was recorded."""
    head = f"{us_to_iso(event.ts)} {event.node} {event.source} {event.kind}"
    if event.evidence:
        return printable(f"{head} {event.evidence}", 2000)
    parts = [head]
    if event.ref:
        parts.append(f"ref={event.ref}")
    for name in _FIELDS:
        value = getattr(event, name)
        if value is not None and not (name == "helo" and event.kind != "helo"):
            parts.append(f"{name}=<{value}>" if name in ("sender", "recipient") else f"{name}={value}")
    for name in ("folder", "uid", "stage"):
        if event.detail.get(name) is not None:
            parts.append(f"{name}={event.detail[name]}")
    if event.reply:
        parts.append(f'reply="{event.reply}"')
    return printable(" ".join(parts), 2000)


def digest(lines: Iterable[str]) -> str:
    """SHA-256 (hex) over the evidence lines, each terminated by a newline."""
    sha = hashlib.sha256()
    for text in lines:
        sha.update(text.encode("utf-8") + b"\n")
    return sha.hexdigest()


def mask(address: str) -> str:
    """A third party's address, recognisable in shape but not readable: j***@e***.test."""
    local, _, domain = address.rpartition("@")
    name, dot, tld = domain.rpartition(".")
    masked_domain = f"{name[:1]}***{dot}{tld}" if dot else f"{domain[:1]}***"
    return f"{local[:1]}***@{masked_domain}"


def redactor(allowed: Iterable[str]) -> Callable[[str], str]:
    """A function that masks every address in a text except the `allowed` ones (case-insensitive)."""
    keep = {a.lower() for a in allowed if a}

    def redact(text: str) -> str:
        return _ADDRESS.sub(lambda m: m.group() if m.group().lower() in keep else mask(m.group()), text)

    return redact
