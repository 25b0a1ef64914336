"""Mapping the reply texts of foreign mail systems to reason codes of our catalog.

Only where the text says clearly what happened (a DNSBL listing, an unknown user, relaying
refused, a virus ...); anything else keeps `reason` empty and the original text in `reply`.
"""

from __future__ import annotations

import re
from typing import Final

# Tried in this order (the first that matches wins: "JunkMail rejected - ... is in an RBL" is a
# DNSBL listing); the group name is the catalog code with '.' as '__'.
# The patterns are lower case and searched in the lower-cased text (faster than IGNORECASE).
_PATTERNS: Final = tuple(
    re.compile(pattern)
    for pattern in (
        r"(?P<client__dnsbl>blocked using|listed (?:by|in|on|at) |is in an? (?:rbl|dnsbl|blacklist|blocklist)"
        r"|\brbl\b|\bdnsbl\b|spamhaus|spamcop|barracuda)",
        r"(?P<rcpt__unknown_user>user unknown|unknown user|no such user|user doesn't exist|mailbox unavailable"
        r"|user not found|recipient unknown|invalid recipient|address rejected: undeliverable"
        r"|unknown in (?:local|virtual|relay) (?:recipient|alias|mailbox))",
        r"(?P<rcpt__relay_denied>relay access denied|relay not permitted|relaying denied|unable to relay"
        r"|not permitted to relay)",
        r"(?P<rcpt__mailbox_full>quota exceeded|mailbox (?:is )?full|over quota|disk quota|insufficient storage)",
        r"(?P<msg__virus>virus|infected|malware|\bclamav\b)",
        r"(?P<msg__spam>\bspam\b|spamassassin|junkmail|\bube\b|content rejected|gtube)",
        r"(?P<greylisted>greylist|graylist|try (?:again )?later|come back later)",
        r"(?P<helo__invalid>helo command rejected|invalid helo|helo/ehlo)",
        r"(?P<client__no_rdns>cannot find your (?:reverse )?hostname|reverse (?:hostname|dns)|no ptr"
        r"|client host rejected: cannot find)",
        r"(?P<sender__domain_missing>sender address rejected: domain not found|unrouteable address"
        r"|sender domain (?:must exist|not found))",
        r"(?P<sender__spf_fail>\bspf\b)",
        r"(?P<msg__dmarc_reject>\bdmarc\b)",
        r"(?P<msg__too_big>message size exceeds|message file too big|too large|size limit)",
        r"(?P<client__too_many_connections>too many connections)",
        r"(?P<rate_limited>rate ?limit|too many messages|too many recipients from)",
    )
)

# Enhanced status codes that name the cause on their own (RFC 3463).
_BY_ENHANCED: Final = {
    "5.1.1": "rcpt.unknown_user",
    "5.1.10": "rcpt.unknown_user",
    "5.2.2": "rcpt.mailbox_full",
    "4.2.2": "rcpt.mailbox_full",
    "5.3.4": "msg.too_big",
    "5.2.3": "msg.too_big",
    "4.7.25": "client.no_rdns",
    "5.7.25": "client.no_rdns",
    "5.7.23": "sender.spf_fail",
    "5.7.27": "sender.null_mx",
    "5.7.26": "msg.dmarc_reject",
}

_ZONE: Final = re.compile(
    r"(?:blocked using|listed by domain|listed (?:in|on|at)) ([A-Za-z0-9][A-Za-z0-9.\-]*[A-Za-z0-9])", re.IGNORECASE
)


_DIGITS: Final = bytes.maketrans(b"123456789", b"000000000")
_CACHE_LIMIT: Final = 50_000
_cache: dict[bytes, str | None] = {}


def classify(text: str | None, enhanced: str | None = None) -> str | None:
    """The catalog code a refusal or failure text stands for, or None when it is not clear."""
    if text:
        code = _cached(text)
        if code is not None:
            return code
    if enhanced:
        return _BY_ENHANCED.get(enhanced)
    return None


def _cached(text: str) -> str | None:
    """`_classify` remembered by the text's shape: digits and the first `<...>` (the echoed
    address or HELO) do not change the meaning, and the same few texts come again and again.
    The shape is made of bytes: their `translate` is a tenth of the cost of `str.translate`."""
    key = text.encode("utf-8", "surrogatepass").translate(_DIGITS)
    start = key.find(b"<")
    if start >= 0:
        end = key.find(b">", start)
        if end > 0:
            key = key[:start] + key[end + 1 :]
    try:
        return _cache[key]
    except KeyError:
        pass
    if len(_cache) >= _CACHE_LIMIT:
        _cache.clear()
    code = _cache[key] = _classify(key.decode("utf-8", "surrogatepass").lower())
    return code


def _classify(lowered: str) -> str | None:
    for pattern in _PATTERNS:
        found = pattern.search(lowered)
        if found is not None and found.lastgroup is not None:
            return found.lastgroup.replace("__", ".")
    return None


def dnsbl_zone(text: str) -> str | None:
    """The DNSBL zone a refusal text names (`... blocked using zen.spamhaus.org`), if any."""
    lowered = text.lower()
    if "blocked using" not in lowered and "listed by domain" not in lowered and "listed " not in lowered:
        return None  # the usual case, found cheaply (`Greylisted` must not count)
    start = 0
    if text.isascii():  # then no match starts before the first keyword: the search that ignores
        # case would try every position before it (0.9 % of the parsing instructions, measured)
        start = min(at for at in (lowered.find("blocked using"), lowered.find("listed ")) if at >= 0)
    found = _ZONE.search(text, start)
    return found[1].lower() if found else None
