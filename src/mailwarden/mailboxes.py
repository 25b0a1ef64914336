"""Mailbox accounts: creation, passwords (argon2id) and the demo mailbox of a first start."""

from __future__ import annotations

import os
import secrets

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError

from mailwarden.addresses import normalize_mailbox
from mailwarden.config import Config, ConfigError
from mailwarden.deliver.maildir import Maildirs
from mailwarden.store import Mailbox, Store, StoreError

_hasher = PasswordHasher()


def hash_password(password: str) -> str:
    return _hasher.hash(password)


def verify_password(password_hash: str, password: str) -> bool:
    try:
        return _hasher.verify(password_hash, password)
    except (VerificationError, InvalidHashError):
        return False


def add(config: Config, store: Store, address: str, password: str) -> Mailbox:
    """Create a mailbox in a local domain, with its Maildir."""
    mailbox = normalize_mailbox(address)
    domain = mailbox.rpartition("@")[2]
    if domain not in config.mail.domains:
        raise ConfigError(
            f"{domain} is not a local domain; add it to `mail.domains` in the config first "
            f"(local domains: {', '.join(config.mail.domains) or 'none'})"
        )
    if not password:
        raise StoreError("the password must not be empty")
    created = store.add_mailbox(mailbox, hash_password(password))
    Maildirs(config.path(config.mail.maildir_root)).ensure(mailbox)
    return created


def create_demo(config: Config, store: Store) -> tuple[str, str] | None:
    """On a first start (no mailboxes at all), create the configured demo mailbox.

    Its password is also kept in `mail.demo_password_file` when set (readable by its owner only),
    so `mailwarden demo` can fetch the demo mail by POP3 as a mail program would.
    """
    if not config.mail.demo_mailbox or store.list_mailboxes():
        return None
    password = secrets.token_urlsafe(12)
    add(config, store, config.mail.demo_mailbox, password)
    if config.mail.demo_password_file:
        path = config.path(config.mail.demo_password_file)
        path.parent.mkdir(parents=True, exist_ok=True)
        descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(descriptor, "w") as file:
            file.write(password + "\n")
    return config.mail.demo_mailbox, password


def demo_password(config: Config) -> str | None:
    """The demo mailbox's password as `create_demo` kept it, or None."""
    if not config.mail.demo_password_file:
        return None
    try:
        return config.path(config.mail.demo_password_file).read_text().strip() or None
    except OSError:
        return None


def postmaster_gaps(config: Config, store: Store) -> list[str]:
    """Local domains whose postmaster@ would be refused (RFC 5321 4.5.1 requires accepting it)."""
    if config.mail.postmaster:
        return []
    return [d for d in config.mail.domains if store.get_mailbox(f"postmaster@{d}") is None]


def postmaster_warning(domains: list[str]) -> str:
    return (
        f"postmaster@ of {', '.join(domains)} would be refused, but RFC 5321 4.5.1 requires accepting it: "
        "set `mail.postmaster` to a mailbox that reads it, or create postmaster@DOMAIN with `mailwarden users add`"
    )
