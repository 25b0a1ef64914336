"""Web accounts: creating and changing them (`mailwarden accounts`, the admins' page) and checking a login.

Roles (design.md): an admin sees everything and manages accounts, support sees every message
(each opened message is in the audit log), a customer sees only messages with a recipient in
its own domains. Passwords are argon2id hashes, as for mailboxes.
"""

from __future__ import annotations

import re
import secrets
from collections.abc import Sequence
from typing import Final

from mailwarden.config import Config
from mailwarden.events import now_us
from mailwarden.mailboxes import hash_password, verify_password
from mailwarden.store import Store, StoreError
from mailwarden.store.accounts import ROLES, Role, WebAccount, normalize_domains

NAME: Final = re.compile(r"[A-Za-z0-9][A-Za-z0-9._@+-]{0,63}")
MIN_PASSWORD: Final = 8
# Checked against when an account does not exist, so a wrong name takes as long as a wrong password.
_DECOY: Final = hash_password(secrets.token_urlsafe(16))


def check_name(name: str) -> str:
    if not NAME.fullmatch(name):
        raise StoreError(
            f"{name!r} is not a usable account name: 1 to 64 letters, digits and . _ @ + -, starting with a letter or digit"
        )
    return name


def check_password(password: str) -> str:
    if len(password) < MIN_PASSWORD:
        raise StoreError(f"the password is too short: use at least {MIN_PASSWORD} characters")
    return password


def role_of(text: str) -> Role:
    for role in ROLES:
        if text == role:
            return role
    raise StoreError(f"unknown role {text!r}; use one of {', '.join(ROLES)}")


def add(store: Store, name: str, role: str, domains: Sequence[str], password: str) -> WebAccount:
    """Create an account; a customer needs its domains, the other roles have none."""
    chosen = role_of(role)
    wanted = normalize_domains(domains)
    if chosen == "customer" and not wanted:
        raise StoreError("a customer account needs its domains: add --domain example.org (repeatable)")
    if chosen != "customer" and wanted:
        raise StoreError(f"only customer accounts have domains; a {chosen} sees every message")
    account = WebAccount(check_name(name), chosen, hash_password(check_password(password)), now_us(), wanted)
    store.add_account(account)
    return account


def set_password(store: Store, name: str, password: str) -> None:
    if not store.set_account_password(name, hash_password(check_password(password))):
        raise StoreError(f"no account {name}; `mailwarden accounts list` shows the existing ones")


def remove(store: Store, name: str) -> None:
    if not store.remove_account(name):
        raise StoreError(f"no account {name}; `mailwarden accounts list` shows the existing ones")


def authenticate(store: Store, name: str, password: str) -> WebAccount | None:
    """The account if the password is right; an unknown name costs the same argon2 check."""
    account = store.get_account(name) if NAME.fullmatch(name) else None
    if account is None:
        verify_password(_DECOY, password)
        return None
    return account if verify_password(account.password_hash, password) else None


def ensure_first_admin(config: Config, store: Store) -> tuple[str, str] | None:
    """On the web server's first start (no accounts at all): the configured admin, with a random password."""
    if not config.web.first_admin or store.list_accounts():
        return None
    password = secrets.token_urlsafe(12)
    add(store, config.web.first_admin, "admin", (), password)
    return config.web.first_admin, password
