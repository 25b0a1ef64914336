"""The tracking center's part of the store: web accounts, their login sessions and the audit log.

A narrow interface of its own, so that a backend implements it next to the events and the web
code depends on nothing else for who may see what. Session tokens are stored only as their
SHA-256: a copy of the store does not let anyone take over a session.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Final, Literal

Role = Literal["admin", "support", "customer"]
ROLES: Final[tuple[Role, ...]] = ("admin", "support", "customer")


@dataclass(frozen=True)
class WebAccount:
    """Who may log in to the tracking center: admins and support see every message, a customer
    only messages with a recipient in its `domains`."""

    name: str
    role: Role
    password_hash: str
    created_us: int
    domains: tuple[str, ...] = ()


@dataclass(frozen=True)
class WebSession:
    token_hash: str  # SHA-256 (hex) of the cookie's token
    account: str
    csrf: str  # the token every form and state-changing API call of this session must carry
    created_us: int
    seen_us: int


@dataclass(frozen=True)
class AuditEntry:
    """Who did what in the tracking center (opened a message, downloaded a report, logged in, ...)."""

    ts: int
    account: str
    action: str
    target: str | None = None
    client_ip: str | None = None
    detail: dict[str, Any] = field(default_factory=dict)
    id: int | None = None


class AccountStore(ABC):
    # -- accounts
    @abstractmethod
    def add_account(self, account: WebAccount) -> None:
        """Create the account; StoreError when the name is taken."""

    @abstractmethod
    def get_account(self, name: str) -> WebAccount | None: ...

    @abstractmethod
    def list_accounts(self) -> list[WebAccount]: ...

    @abstractmethod
    def remove_account(self, name: str) -> bool:
        """Remove the account and end its sessions; False when there is none."""

    @abstractmethod
    def set_account_password(self, name: str, password_hash: str) -> bool:
        """Change the password and end every session of the account; False when there is none."""

    # -- sessions
    @abstractmethod
    def add_web_session(self, session: WebSession) -> None: ...

    @abstractmethod
    def get_web_session(self, token_hash: str) -> WebSession | None: ...

    @abstractmethod
    def touch_web_session(self, token_hash: str, seen_us: int) -> None: ...

    @abstractmethod
    def remove_web_session(self, token_hash: str) -> None: ...

    @abstractmethod
    def purge_web_sessions(self, seen_before_us: int, created_before_us: int) -> int:
        """Forget sessions idle since, or started before, these times; returns how many."""

    # -- audit log
    @abstractmethod
    def add_audit(self, entry: AuditEntry) -> None: ...

    @abstractmethod
    def list_audit(self, *, limit: int, before_id: int | None = None, account: str | None = None) -> list[AuditEntry]:
        """The newest entries first; `before_id` pages back (keyset)."""


def normalize_domains(domains: Sequence[str]) -> tuple[str, ...]:
    return tuple(sorted({d.strip().lower().rstrip(".").lstrip("@") for d in domains if d.strip()}))
