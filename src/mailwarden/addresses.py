"""Envelope address handling shared by the gateway, the checks and the mailbox commands."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Final

_DOT_ATOM: Final = re.compile(
    r"^[A-Za-z0-9!#$%&'*+/=?^_`{|}~\-\u0080-\U0010ffff]+(\.[A-Za-z0-9!#$%&'*+/=?^_`{|}~\-\u0080-\U0010ffff]+)*$"
)
_DOMAIN: Final = re.compile(
    r"^(?=.{1,253}$)([A-Za-z0-9\u0080-\U0010ffff]([A-Za-z0-9\-\u0080-\U0010ffff]{0,61}[A-Za-z0-9\u0080-\U0010ffff])?)(\.[A-Za-z0-9\u0080-\U0010ffff]([A-Za-z0-9\-\u0080-\U0010ffff]{0,61}[A-Za-z0-9\u0080-\U0010ffff])?)*$"
)
ROUTING_CHARS: Final = "@%!"


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
    return Address(local=local, domain=domain.lower().rstrip("."), quoted=quoted)


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
