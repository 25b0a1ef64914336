"""The Authentication-Results header (RFC 8601) of accepted mail: one header, every method's result.

A check that authenticates something stores its result in `Transaction.results[METHOD]` as a
dict and registers a renderer in `RENDERERS` (method name -> function returning the header's
`method=result ...` parts). SPF stores `{"result", "domain", "scope", "identity", ...}`
(`mailwarden.spf.SpfResult.to_dict`); DKIM and DMARC add theirs the same way.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from typing import Any, Final

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
