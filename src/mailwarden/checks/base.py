"""The check interface: one small class per check, one method per SMTP stage it acts on.

A check returns `None` (no opinion) or a `Verdict` naming a catalog reason. The chain
(`checks/chain.py`) runs the configured checks in order, times them, and turns an exception or
a timeout into a temporary failure (451 4.3.0) - never into an accept, never into a 5xx.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from functools import cached_property
from typing import TYPE_CHECKING, Any, ClassVar, Protocol

from mailwarden import catalog
from mailwarden.dns import Resolver
from mailwarden.text import decimal

if TYPE_CHECKING:
    from mailwarden.config import Config, FindingPolicy
    from mailwarden.spool import Spool
    from mailwarden.store import Store


Clock = Callable[[], float]
"""Seconds since the epoch, like `time.time`: checks that remember time take theirs from `Services.clock`,
so tests drive it instead of waiting for it."""

InputWatch = Callable[[float], Awaitable[bytes | None]]
"""The protocol's offer before the greeting: wait up to N seconds for the client to send something,
return what it sent (left unread for the command loop), b"" if it stayed silent, None if it left."""


class Stage(StrEnum):
    CONNECT = "connect"
    HELO = "helo"
    MAIL = "mail"
    RCPT = "rcpt"
    DATA = "data"


class Action(StrEnum):
    REJECT = "reject"  # permanent refusal (5xx): only on proof
    TEMPFAIL = "tempfail"  # temporary refusal (4xx): the sender retries
    TAG = "tag"  # accept, but mark (headers, folder)
    SCORE = "score"  # a finding worth `score` points; refused once the points reach `[checks] reject_score`


@dataclass(frozen=True)
class Verdict:
    action: Action
    reason: str
    values: Mapping[str, object] = field(default_factory=dict)  # fill the catalog templates
    detail: Mapping[str, Any] = field(default_factory=dict)  # recorded in the event
    smtp_code: int | None = None  # overrides the catalog's code (e.g. 450 4.1.8 while DNS fails)
    enhanced: str | None = None
    headers: tuple[tuple[str, str], ...] = ()  # TAG: header fields to add to the accepted mail
    folder: str | None = None  # TAG: deliver into this folder instead of INBOX
    score: float = 0.0  # SCORE: the points this finding adds

    def __post_init__(self) -> None:
        reason = catalog.get(self.reason)  # fails early on a code that is not in the catalog
        code = self.smtp_code or reason.smtp_code
        if self.action in (Action.REJECT, Action.SCORE) and not 500 <= code < 600:
            raise ValueError(f"a {self.action} needs a 5xx code, {self.reason} has {code}")
        if self.action is Action.TEMPFAIL and not 400 <= code < 500:
            raise ValueError(f"a tempfail needs a 4xx code, {self.reason} has {code}")

    @classmethod
    def reject(cls, reason: str, **values: object) -> Verdict:
        return cls(Action.REJECT, reason, values)

    @classmethod
    def tempfail(cls, reason: str, **values: object) -> Verdict:
        return cls(Action.TEMPFAIL, reason, values)

    @classmethod
    def as_configured(
        cls, policy: FindingPolicy, reason: str, detail: Mapping[str, Any], **values: object
    ) -> Verdict | None:
        """A finding answered as the operator chose: reject with the catalog's code, tempfail with its
        4xx twin (550 5.7.25 -> 450 4.7.25), points towards `[checks] reject_score`, or nothing."""
        if policy.action == "off":
            return None
        if policy.action == "score":
            return cls(Action.SCORE, reason, values, detail, score=policy.score)
        if policy.action == "tempfail":
            enhanced = catalog.get(reason).enhanced
            return cls(Action.TEMPFAIL, reason, values, detail, smtp_code=450, enhanced="4" + enhanced[1:])
        return cls(Action.REJECT, reason, values, detail)

    @property
    def code(self) -> int:
        return self.smtp_code or catalog.get(self.reason).smtp_code

    @property
    def enhanced_code(self) -> str:
        return self.enhanced or catalog.get(self.reason).enhanced


@dataclass
class SessionInfo:
    """What we know about the connection; checks may add to `results` for later checks."""

    id: str
    node: str
    client_ip: str
    client_port: int
    client_name: str | None = None  # verified (forward-confirmed) reverse DNS name
    helo: str | None = None
    esmtp: bool = False
    tls: str | None = None  # TLS version once STARTTLS succeeded
    results: dict[str, Any] = field(default_factory=dict)
    scores: dict[str, float] = field(default_factory=dict)  # SCORE findings of connect and HELO, by check
    watch_input: InputWatch | None = None  # before the greeting only (the pregreet check); None elsewhere


@dataclass
class Recipient:
    address: str  # as the client wrote it
    mailbox: str  # the local mailbox it resolves to
    settings: Mapping[str, Any] = field(default_factory=dict)
    folder: str = "INBOX"


@dataclass
class Transaction:
    """One MAIL..DATA transaction."""

    ref: str
    sender: str | None = None  # "" is the null sender <>
    mail_options: list[str] = field(default_factory=list)
    recipients: list[Recipient] = field(default_factory=list)
    spool: Spool | None = None  # the message, from the end of DATA on
    headers: list[tuple[str, str]] = field(default_factory=list)  # added to the accepted mail
    folder: str | None = None  # TAG verdicts may divert delivery (e.g. Junk)
    results: dict[str, Any] = field(default_factory=dict)
    scores: dict[str, float] = field(default_factory=dict)  # SCORE findings of this transaction, by check

    @property
    def declared_size(self) -> int | None:
        for option in self.mail_options:
            name, _, value = option.partition("=")
            if name.upper() == "SIZE":
                return decimal(value)  # a malformed one (a milter's, a policy request's) declares nothing
        return None


class ClientCounts(Protocol):
    """Open connections per client address, counted by the gateway (`smtp/clients.py` `SharedCounts`
    when SMTP workers share them)."""

    def opened(self, client_ip: str) -> tuple[int, int]:
        """Count a new connection; (connections from this client, connections in total), this one included."""

    def closed(self, client_ip: str) -> None:
        """A connection counted by `opened` ended."""


class LocalCounts:
    """One process: the counts in dictionaries."""

    def __init__(self) -> None:
        self.active = 0
        self.per_ip: Counter[str] = Counter()

    def opened(self, client_ip: str) -> tuple[int, int]:
        self.active += 1
        self.per_ip[client_ip] += 1
        return self.per_ip[client_ip], self.active

    def closed(self, client_ip: str) -> None:
        self.active -= 1
        self.per_ip[client_ip] -= 1
        if self.per_ip[client_ip] <= 0:
            del self.per_ip[client_ip]


@dataclass
class Services:
    """Shared things a check may need, built once at start.

    A check's `create` hands its constructor only the part of `store` it uses (store/parts.py).
    """

    config: Config
    store: Store
    local_domains: frozenset[str]
    clock: Clock = field(default=time.time)
    counts: ClientCounts = field(default_factory=LocalCounts)  # per client address, shared by SMTP workers

    @cached_property
    def resolver(self) -> Resolver:
        """The DNS resolver of the session path (`[dns]`); tests may assign their own."""
        return Resolver.from_config(self.config.dns)

    def close(self) -> None:
        """Release what was started (pending DNS queries are cancelled)."""
        resolver = self.__dict__.get("resolver")
        if isinstance(resolver, Resolver):
            resolver.close()


@dataclass
class CheckContext:
    services: Services
    session: SessionInfo
    txn: Transaction | None = None
    resolved: Recipient | None = None  # RCPT: the mailbox an earlier check resolved the address to

    @property
    def config(self) -> Config:
        return self.services.config


class Check:
    """Base class: override the stage methods the check acts on; the others are skipped."""

    name: ClassVar[str]
    timeout: float | None = None  # seconds; None: `checks.timeout`. Longer for checks with their own budget.

    @classmethod
    def create(cls, services: Services) -> Check:
        """Build the check from the configuration; override when it needs settings."""
        return cls()

    async def connect(self, ctx: CheckContext) -> Verdict | None:
        return None

    async def helo(self, ctx: CheckContext) -> Verdict | None:
        return None

    async def mail(self, ctx: CheckContext) -> Verdict | None:
        return None

    async def rcpt(self, ctx: CheckContext, recipient: str) -> Verdict | Recipient | None:
        """RCPT is special: a check may resolve the address to a local mailbox (`Recipient`)."""
        return None

    async def data(self, ctx: CheckContext) -> Verdict | None:
        return None

    def acts_on(self, stage: Stage) -> bool:
        return getattr(type(self), stage.value) is not getattr(Check, stage.value)
