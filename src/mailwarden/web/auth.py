"""Login sessions and CSRF tokens.

A session is a random 256-bit token in an HttpOnly, SameSite=Lax cookie (Secure over HTTPS); the
store keeps only its SHA-256 with the account and the session's CSRF token. A login always starts
a new session and ends the one the browser came with, so a session id planted before the login
is worth nothing after it (session fixation). Sessions end after `web.session_idle_minutes`
without a request and `web.session_max_hours` after the login; a password change ends all of an
account's sessions.

Every form carries a CSRF token, every state-changing API call sends it as `X-CSRF-Token`. Before
the login there is no session: the login form's token is an HMAC, under a key this process made,
of a random value in a second cookie (`mw_pre`), so another site cannot post a login either. The
key is made once and kept in the store (store/web_state.py), so every worker process of the
tracking center accepts the token another one put into the form.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from collections.abc import Callable
from dataclasses import dataclass
from typing import Final

from mailwarden.config import WebConfig
from mailwarden.store import Store
from mailwarden.store.accounts import WebAccount, WebSession
from mailwarden.web.scope import Principal

SESSION_COOKIE: Final = "mw_session"
PRE_COOKIE: Final = "mw_pre"
CSRF_HEADER: Final = "x-csrf-token"
PRE_KEY: Final = "web.login_form"  # the store secret of the login form's CSRF tokens
_TOUCH_US: Final = 60 * 1_000_000  # a session's last-seen time is written at most once a minute


def token_hash(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8", "replace")).hexdigest()


@dataclass(frozen=True)
class Session:
    principal: Principal
    csrf: str
    token_hash: str


def same(given: str | None, expected: str) -> bool:
    return given is not None and hmac.compare_digest(given.encode("utf-8", "replace"), expected.encode())


class Sessions:
    def __init__(self, store: Store, config: WebConfig, now_us: Callable[[], int]) -> None:
        self.store = store
        self.idle_us = config.session_idle_minutes * 60 * 1_000_000
        self.max_us = config.session_max_hours * 3600 * 1_000_000
        self.now_us = now_us
        self._pre_key = store.web_secret(PRE_KEY)

    def start(self, account: WebAccount, previous_token: str | None) -> tuple[str, Session]:
        """A new session for `account` (its token goes into the cookie); the browser's old one ends."""
        if previous_token:
            self.store.remove_web_session(token_hash(previous_token))
        token = secrets.token_urlsafe(32)
        now = self.now_us()
        stored = WebSession(token_hash(token), account.name, secrets.token_urlsafe(32), now, now)
        self.store.add_web_session(stored)
        return token, Session(Principal(account.name, account.role, account.domains), stored.csrf, stored.token_hash)

    def resolve(self, token: str | None) -> Session | None:
        """The live session of a cookie's token; None for no, an unknown or an expired session."""
        if not token or len(token) > 100:
            return None
        hashed = token_hash(token)
        stored = self.store.get_web_session(hashed)
        if stored is None:
            return None
        now = self.now_us()
        if now - stored.seen_us > self.idle_us or now - stored.created_us > self.max_us:
            self.store.remove_web_session(hashed)
            return None
        account = self.store.get_account(stored.account)
        if account is None:
            return None
        if now - stored.seen_us > _TOUCH_US:
            self.store.touch_web_session(hashed, now)
        return Session(Principal(account.name, account.role, account.domains), stored.csrf, hashed)

    def end(self, session: Session) -> None:
        self.store.remove_web_session(session.token_hash)

    def purge(self) -> int:
        now = self.now_us()
        return self.store.purge_web_sessions(now - self.idle_us, now - self.max_us)

    # -- the login form's token, before there is a session
    def new_pre_value(self) -> str:
        return secrets.token_urlsafe(24)

    def pre_csrf(self, pre_value: str) -> str:
        return hmac.new(self._pre_key, pre_value.encode("utf-8", "replace"), hashlib.sha256).hexdigest()
