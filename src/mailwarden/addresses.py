"""Envelope address handling shared by the gateway, the checks and the mailbox commands.

`parse_path` reads the argument of MAIL FROM and RCPT TO strictly after RFC 5321 4.1.2 (with
the two leniencies every MX needs: a blank after the colon and a missing pair of angle
brackets), so that whatever reaches the checks is a well-formed mailbox; `split` then gives
its unquoted local part and normalized domain.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Final

_DOT_ATOM: Final = re.compile(
    r"^[A-Za-z0-9!#$%&'*+/=?^_`{|}~\-\u0080-\U0010ffff]+(\.[A-Za-z0-9!#$%&'*+/=?^_`{|}~\-\u0080-\U0010ffff]+)*$"
)
_DOMAIN: Final = re.compile(
    r"^(?=.{1,253}$)([A-Za-z0-9\u0080-\U0010ffff]([A-Za-z0-9\-\u0080-\U0010ffff]{0,61}[A-Za-z0-9\u0080-\U0010ffff])?)(\.[A-Za-z0-9\u0080-\U0010ffff]([A-Za-z0-9\-\u0080-\U0010ffff]{0,61}[A-Za-z0-9\u0080-\U0010ffff])?)*$"
)
ROUTING_CHARS: Final = "@%!"

_U8: Final = "\u0080-\U0010ffff"  # UTF-8 text (allowed by the grammar; SMTPUTF8 is checked by the caller)
_ATOM: Final = rf"[A-Za-z0-9!#$%&'*+/=?^_`{{|}}~\-{_U8}]+"
_QUOTED: Final = rf'"(?:[\x20\x21\x23-\x5b\x5d-\x7e{_U8}]|\\[\x20-\x7e])*"'
_LABEL: Final = rf"[A-Za-z0-9{_U8}](?:[A-Za-z0-9\-{_U8}]*[A-Za-z0-9{_U8}])?"
_DOMAIN_RE: Final = rf"{_LABEL}(?:\.{_LABEL})*"
_LITERAL: Final = r"\[[\x21-\x5a\x5e-\x7e]+\]"  # [192.0.2.1], [IPv6:...]: refused later, but well-formed
_MAILBOX: Final = rf"(?:{_ATOM}(?:\.{_ATOM})*|{_QUOTED})@(?:{_DOMAIN_RE}\.?|{_LITERAL})"
_ROUTE: Final = rf"@{_DOMAIN_RE}(?:,@{_DOMAIN_RE})*:"
_PATH: Final = re.compile(rf"<(?P<route>{_ROUTE})?(?P<mailbox>{_MAILBOX})>")
_BARE_MAILBOX: Final = re.compile(_MAILBOX)
_PARAM: Final = re.compile(r"(?P<key>[A-Za-z0-9][A-Za-z0-9\-]*)(?:=(?P<value>[\x21-\x3c\x3e-\x7e\u0080-\U0010ffff]+))?")


@dataclass(frozen=True)
class EnvelopePath:
    """The argument of MAIL FROM or RCPT TO: the mailbox (source route dropped) and the ESMTP parameters."""

    mailbox: str  # as written, quotes kept; "" for the null sender <>; "postmaster" for RCPT TO:<Postmaster>
    params: dict[str, str | None] = field(default_factory=dict)  # keywords upper-cased

    @property
    def options(self) -> list[str]:
        """The parameters as "KEY" or "KEY=value" strings, as they were given."""
        return [key if value is None else f"{key}={value}" for key, value in self.params.items()]


class PathSyntaxError(ValueError):
    """The argument of MAIL FROM or RCPT TO is not well-formed; the message says what is wrong."""


def parse_path(
    argument: str, keyword: str, *, null_allowed: bool = False, postmaster_allowed: bool = False
) -> EnvelopePath:
    """Parse `FROM:<path> params` (keyword "FROM") or `TO:<path> params` (keyword "TO")."""
    head = argument[: len(keyword) + 1]
    if head.upper() != keyword + ":":
        raise PathSyntaxError(f"expected {keyword}:<address>")
    rest = argument[len(keyword) + 1 :].lstrip(" ")
    if rest.startswith("<"):
        end = rest.find(">")
        if end < 0:
            raise PathSyntaxError("the address has no closing '>'")
        path, tail = rest[: end + 1], rest[end + 1 :]
        if path == "<>":
            if not null_allowed:
                raise PathSyntaxError("the null address <> is only allowed as sender")
            mailbox = ""
        elif postmaster_allowed and path[1:-1].lower() == "postmaster":
            mailbox = "postmaster"
        else:
            match = _PATH.fullmatch(path)
            if match is None:
                raise PathSyntaxError(f"{path} is not a valid address")
            mailbox = match.group("mailbox")
    else:  # MAIL FROM:user@example.org, as old software sends it
        path, _, tail = rest.partition(" ")
        tail = " " + tail if tail else ""
        if _BARE_MAILBOX.fullmatch(path) is None:
            raise PathSyntaxError(f"{path or 'an empty address'} is not a valid address")
        mailbox = path
    if tail and not tail.startswith(" "):
        raise PathSyntaxError("expected a blank between the address and its parameters")
    params: dict[str, str | None] = {}
    for word in tail.split(" "):
        if not word:
            continue
        param = _PARAM.fullmatch(word)
        if param is None:
            raise PathSyntaxError(f"malformed parameter {word}")
        params[param.group("key").upper()] = param.group("value")
    return EnvelopePath(mailbox, params)


@dataclass(frozen=True)
class Address:
    local: str  # unquoted
    domain: str  # lower case, without a trailing dot; "" when the address had none
    quoted: bool  # the local part was a quoted string

    @property
    def mailbox(self) -> str:
        return f"{self.local.lower()}@{self.domain}" if self.domain else self.local.lower()


class AddressError(ValueError):
    pass


def split(address: str) -> Address:
    """Split an envelope address into an unquoted local part and a normalized domain."""
    text = address.strip()
    if text.startswith("<") and text.endswith(">"):
        text = text[1:-1]
    if text.startswith("@"):  # a source route "@a,@b:user@dom" (RFC 5321 4.1.2, to be ignored)
        _, colon, rest = text.partition(":")
        if not colon:
            raise AddressError("source route without ':'")
        text = rest
    local, at, domain = text.rpartition("@")
    if not at:
        return Address(local=text, domain="", quoted=False)
    quoted = local.startswith('"') and local.endswith('"') and len(local) >= 2
    if quoted:
        local = re.sub(r"\\(.)", r"\1", local[1:-1])
    return Address(local=local, domain=domain.lower().removesuffix("."), quoted=quoted)


def is_valid_mailbox(address: str) -> bool:
    """A plain address we can create a mailbox for: dot-atom local part, a real domain name."""
    local, at, domain = address.rpartition("@")
    return bool(at and _DOT_ATOM.match(local) and _DOMAIN.match(domain)) and not any(c in local for c in ROUTING_CHARS)


def normalize_mailbox(address: str) -> str:
    """The canonical (lower-case) form of a mailbox address; raise AddressError if it is not one."""
    candidate = address.strip().lower().rstrip(".")
    if not is_valid_mailbox(candidate):
        raise AddressError(
            f"{address!r} is not a plain mailbox address (local@domain, no quotes, no routing characters %, !, @)"
        )
    return candidate


@dataclass(frozen=True)
class LoginName:
    """A mailbox login name, read once: everything keyed by the name uses `mailbox`."""

    mailbox: str | None  # the canonical mailbox it names (normalize_mailbox); None: not an address at all
    problem: str | None  # why this spelling is refused; None: it is the address, up to case and blanks


def login_name(name: str) -> LoginName:
    """Read a login name (POP3 USER, SASL PLAIN) by one rule, so no spelling gets past a lock.

    The canonical form is the mailbox's (`normalize_mailbox`: lower case, as mailboxes are
    created), and it keys the failure delay, the lock and the lookup alike. A name is accepted if
    it is that form up to letter case and spaces or tabs around it; any other spelling that
    `normalize_mailbox` would repair - a trailing dot, other blank characters around it - names
    the same mailbox for counting failures and locks, but is refused, as is a name that is no
    mailbox address at all or not UTF-8 (the session decodes bytes with surrogateescape).
    """
    if any("\ud800" <= c <= "\udfff" for c in name):
        return LoginName(None, "it is not valid UTF-8")  # bytes a client sent that decode to nothing
    try:
        mailbox = normalize_mailbox(name)
    except AddressError:
        return LoginName(None, "it is not of the form local@domain")
    if name.strip(" \t").lower() == mailbox:
        return LoginName(mailbox, None)
    if name.strip().endswith("."):
        return LoginName(mailbox, "it ends with a dot")
    return LoginName(mailbox, "blank characters other than spaces surround it")
