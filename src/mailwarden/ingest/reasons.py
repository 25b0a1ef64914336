"""Mapping the reply texts of foreign mail systems to reason codes of our catalog.

Only where the text says clearly what happened (a DNSBL listing, an unknown user, relaying
refused, a virus ...); anything else keeps `reason` empty and the original text in `reply`.

The reason comes from the words the mail system put in its reply, never from a value a stranger
chose: the parsers hand over the reply from where the MTA's own words begin (Postfix's text after
the echoed `<address>: ` or `<HELO>: `, Exim's after `rejected RCPT <address>: `), and before
the patterns are searched every echo still in it is cut out - anything in `<...>` (quoted parts
may hold `>`), `host[address]` names, links, `name=` values, and the text before a delivery
agent's `host X said: `. Our own gateway's replies (`... ref=REF`, relayed by a Postfix in front
of us or a relay's bounce) are recognised by their catalog sentence, anchored at the start of
the reply.
"""

from __future__ import annotations

import functools
import re
import string
from typing import Final

# Tried in this order; the first that matches wins (`JunkMail rejected - ... is in an RBL` is a
# DNSBL listing, `SPF ... temperror` is not an SPF failure). The patterns are lower case and
# searched in the lower-cased text with its digits as 0 (faster than IGNORECASE).
_PATTERNS: Final = tuple(
    (code, re.compile(pattern))
    for code, pattern in (
        (
            "client.dnsbl",
            r"blocked using|listed (?:by|in|on|at) |is in an? (?:rbl|dnsbl|black ?list|block ?list)"
            r"|\brbl\b|\bdnsbl\b|spamhaus|spamcop|barracuda",
        ),
        (
            "sender.mx_ip_literal",
            r"\bmx\b[^;]{0,80}(?:is an ip address|ip address written as|numeric|ip literal|address literal)"
            r"|numeric domain name in resource data of mx|ip address (?:as|in) (?:an? )?mx",
        ),
        ("sender.null_mx", r"sender address rejected: [^;]{0,200}null ?mx|sender domain [^;]{0,200}null ?mx"),
        (
            "sender.no_mail_host",
            r"mx records? points? to non-?existent hosts|do not resolve to any address"
            r"|no mx host for [^;]{0,255} has a valid (?:a|address) record",
        ),
        (
            "sender.domain_missing",
            r"sender address rejected: (?:domain not found|[^;]{0,200}(?:unknown|invalid|non-?existent) domain)"
            r"|sender domain (?:must exist|not found|does not exist)|domain of sender address [^;]{0,255} does not exist"
            r"|has no mx, a or aaaa record|sender verify failed",
        ),
        (
            "client.fcrdns_mismatch",
            r"does not resolve back|forward[- ]confirmed|\bfcrdns\b|reverse (?:dns|hostname) (?:does not|doesn't) match",
        ),
        (
            "client.dynamic_rdns",
            r"generic (?:host ?name|reverse|rdns|ptr)|dynamic(?:ally assigned)? (?:ip|address|host|pool|range|client)"
            r"|dial-?up|residential (?:ip|address)|end-user address",
        ),
        (
            "client.no_rdns",
            r"cannot find your (?:reverse )?hostname|reverse (?:hostname|dns)|no ptr|no reverse"
            r"|client host rejected: cannot find",
        ),
        (
            "helo.invalid",
            r"helo command rejected|invalid helo|helo/ehlo|ehlo/helo|bad helo|syntactically invalid argument"
            r"|introduced itself as",
        ),
        ("sender.spf_temperror", r"\bspf\b[^;]{0,60}(?:temperror|temporar)|temperror[^;]{0,40}\bspf\b"),
        ("sender.spf_permerror", r"\bspf\b[^;]{0,60}(?:permerror|invalid (?:spf )?record)|permerror[^;]{0,40}\bspf\b"),
        ("sender.spf_fail", r"\bspf\b|sender policy framework"),
        ("msg.dmarc_reject", r"\bdmarc\b"),
        (
            "rcpt.unknown_user",
            r"user unknown|unknown user|no such (?:user|mailbox|recipient)|user (?:doesn't|does not) exist"
            r"|mailbox unavailable|mailbox not found|user not found|recipient unknown|unknown recipient"
            r"|invalid recipient|address rejected: undeliverable|unknown in (?:local|virtual|relay) (?:recipient|alias|mailbox)"
            r"|unrouteable (?:address|mail domain)|recipient address rejected: domain not found"
            r"|(?:mailbox|account|address) (?:does not|doesn't) exist|tried to reach does not exist|address unknown",
        ),
        (
            "rcpt.relay_denied",
            r"relay(?:ing)? (?:access )?denied|relay not permitted|unable to relay|not permitted to relay"
            r"|relaying (?:not allowed|prohibited)|we do not relay",
        ),
        (
            "rcpt.mailbox_full",
            r"quota exceeded|over ?-?quota|quota verification failure|mailbox (?:is )?full|disk quota"
            r"|mailbox size limit|exceeded storage allocation|error writing message: file too large",
        ),
        ("rcpt.too_many", r"too many recipients(?! from)"),
        ("msg.virus", r"virus|infected|malware|\bclamav\b"),
        (
            "msg.dangerous_attachment",
            r"\bbanned(?::| file| name| attachment| content)|dangerous attachment|executable (?:attachment|content|file)"
            r"|attachment (?:type )?(?:not allowed|is not allowed|blocked|forbidden)",
        ),
        ("msg.macro", r"\bmacros?\b"),
        (
            "msg.spam",
            r"\bspam\b|spamassassin|junk ?mail|\bube\b|content rejected|gtube|hits=\S+ required=",
        ),
        (
            "msg.too_big",
            r"message size exceeds|message file too big|too large|too big|size limit"
            r"|exceeds (?:the )?(?:maximum|max) (?:message )?size",
        ),
        ("client.too_many_connections", r"too many (?:concurrent )?(?:smtp )?connections|connection count limit"),
        (
            "rate_limited",
            r"rate ?limit|too many messages|too many recipients from|too much mail|sending rate|unusual rate",
        ),
        ("protocol.bare_lf", r"bare <?lf>?|bare line ?feed|bare newline"),
        (
            "protocol.violation",
            r"protocol (?:error|violation)|synchronization error|improper (?:use of smtp )?command pipelining"
            r"|non-smtp command",
        ),
        ("infra.storage", r"insufficient (?:system )?storage|no space left|disk full"),
        ("infra.check_failed", r"temporary lookup failure|map lookup problem"),
        ("infra.dns_tempfail", r"temporary dns failure|temporary failure in name resolution"),
        # Last: "try again later" alone is how rspamd's and others' greylisting answers.
        ("greylisted", r"greylist|graylist|try (?:again )?later|come back later"),
    )
)

# Enhanced status codes that name the cause on their own (RFC 3463, RFC 7372, RFC 7505).
_BY_ENHANCED: Final = {
    "5.1.1": "rcpt.unknown_user",
    "5.1.10": "rcpt.unknown_user",
    "5.2.2": "rcpt.mailbox_full",
    "4.2.2": "rcpt.mailbox_full",
    "5.3.4": "msg.too_big",
    "5.2.3": "msg.too_big",
    "4.3.1": "infra.storage",
    "4.5.3": "rcpt.too_many",
    "4.7.25": "client.no_rdns",
    "5.7.25": "client.no_rdns",
    "5.7.23": "sender.spf_fail",
    "4.7.24": "sender.spf_temperror",
    "5.7.24": "sender.spf_permerror",
    "5.7.27": "sender.null_mx",
    "5.7.26": "msg.dmarc_reject",
}

_ZONE: Final = re.compile(
    r"(?:blocked using|listed by domain|listed (?:in|on|at)) ([A-Za-z0-9][A-Za-z0-9.\-]*[A-Za-z0-9])", re.IGNORECASE
)

# Values echoed into a reply: `<...>` (quoted parts may hold `>`), links, `name=`; and words with a
# `[` (`host[address]`), dropped word by word (a pattern for them backtracks on long words).
_ECHO: Final = rb'<(?:[^<>"]|"(?:[^"\\]|\\.)*")*>'
_ECHO_AT: Final = re.compile(_ECHO)
_ECHOES: Final = re.compile(_ECHO.decode() + r"|\b(?:https?|ftp)://\S+|\bname=\S+")
_CODES: Final = re.compile(r" *(?:0{3}[ -](?:0\.0{1,3}\.0{1,3} )?)?")  # digits are 0 in a shape
_OWN_REPLY_LIMIT: Final = 2000  # our replies are shorter; longer text is not matched against them
_DIGITS: Final = bytes.maketrans(b"123456789", b"000000000")
_OUR_REF: Final = re.compile(rb" ref=[0A-HJKMNP-TV-Z]{12}(?: |$)")  # refs.py's alphabet, digits as 0
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
    """`_classify` remembered by the text's shape: digits, the first `<...>` (the echoed address or
    HELO) and what follows our own `ref=` do not change the meaning, and the same few texts come
    again and again. The shape is made of bytes: their `translate` is a tenth of the cost of
    `str.translate`, and a refusal line pays only a few `find`s more than the dictionary look-up."""
    key = text.encode("utf-8", "surrogatepass").translate(_DIGITS)
    start = key.find(b"<")
    if start >= 0:
        end = key.find(b">", start)
        if end > 0:
            if key.find(b'"', start, end) < 0:
                key = key[:start] + key[end + 1 :]
            elif (quoted := _ECHO_AT.match(key, start)) is not None:  # `<"a>b"@c>`: to its real end
                key = key[:start] + key[quoted.end() :]
    ref = key.rfind(b" ref=")  # ours ends the reply: a stranger's value before it may imitate one
    if ref >= 0 and _OUR_REF.match(key, ref) is not None:
        key = key[: ref + 5]  # the ref, and the link to it, differ in every reply
    try:
        return _cache[key]
    except KeyError:
        pass
    if len(_cache) >= _CACHE_LIMIT:
        _cache.clear()
    code = _cache[key] = _classify(key.decode("utf-8", "surrogatepass").lower())
    return code


def _classify(shape: str) -> str | None:
    """The code for a text's shape (lower case, digits 0, the first echo and our ref cut)."""
    said = shape.find(" said: ")
    if said >= 0:  # `host mx.example[192.0.2.1] said: 550 ...`: the host name is not the reply
        shape = shape[said + 7 :]
    text = _ECHOES.sub(" ", shape)
    if "[" in text:
        text = " ".join(word for word in text.split(" ") if "[" not in word)
    if text.endswith(" ref=") and len(text) < _OWN_REPLY_LIMIT:
        start = _CODES.match(text).end()  # type: ignore[union-attr]  # all its parts are optional
        for code, pattern in _own_replies():
            if pattern.fullmatch(text, start) is not None:
                return code
    for code, pattern in _PATTERNS:
        if pattern.search(text) is not None:
            if code.startswith("rcpt.") and "sender address rejected" in text:
                return None  # `Sender address rejected: undeliverable address: unknown user`: the sender's
            return code
    return None


# Placeholders of the catalog's replies that are one word (an address, a zone, a number).
_ONE_WORD: Final = frozenset({"client_ip", "zone", "domain", "record", "limit", "size", "count", "seconds", "delay"})
_DIGIT_TEXT: Final = str.maketrans("123456789", "000000000")


@functools.cache
def _own_replies() -> tuple[tuple[str, re.Pattern[str]], ...]:
    """Our gateway's refusal sentences (catalog.py) as patterns over a shape, built on first use."""
    from mailwarden.catalog import CATALOG  # here: an import of ingest alone need not build the catalog

    own = []
    for reason in CATALOG.values():
        if reason.smtp_code < 400:
            continue
        parts: list[str] = []
        for literal, name, _, _ in string.Formatter().parse(reason.reply):
            parts.append(re.escape(literal.lower().translate(_DIGIT_TEXT)))
            if name is not None and not (parts[-1] == "" and parts[-2:-1] == [".*?"]):  # `{advice}{txt}`
                parts.append(r"\S+" if name in _ONE_WORD else ".*?")
        own.append((reason.code, re.compile("".join(parts) + r" +ref=")))
    return tuple(own)


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
