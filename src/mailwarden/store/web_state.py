"""What the tracking center's processes share through the store: secrets, login failures and locks, counters.

`mailwarden web` may run several worker processes on one socket (`web.workers`), and several web
nodes may serve one PostgreSQL store. A brute-force lock counted in one of them must hold in the
others, the public /why/REF page's per-client limit must count every process's answers, and the
login form's CSRF token made by one must be accepted by the next. So none of that lives in a
process: it is here, in SQL written once in SQLite's dialect and run on both backends
(store/sql.py). The sessions themselves were in the store already (store/accounts.py).

The key of the login form's token is made once and kept in the store: a copy of the store lets
its holder make login-form tokens, which only lets them post a login they know the password of.
"""

from __future__ import annotations

import secrets
from abc import ABC, abstractmethod
from contextlib import AbstractContextManager
from typing import Final

from mailwarden.store.rates import estimate, minute_of
from mailwarden.store.sql import SqlConnection

# A migration of both stores ("web_shared_state"); types both SQLite and PostgreSQL take.
SCHEMA: Final = """
    CREATE TABLE web_secrets (name text PRIMARY KEY, value text NOT NULL);
    CREATE TABLE login_failures (scope text NOT NULL, key text NOT NULL, ts_us bigint NOT NULL);
    CREATE INDEX login_failures_key ON login_failures (scope, key);
    CREATE INDEX login_failures_ts ON login_failures (ts_us);
    CREATE TABLE login_locks (
        scope text NOT NULL, key text NOT NULL, until_us bigint NOT NULL, PRIMARY KEY (scope, key)
    )
"""
# SQLite only: PostgreSQL has had this table since its "rate_counts" migration (the gateway's rate
# limits across nodes); in SQLite only the web counts here (the gateway counts in memory).
SQLITE_RATE_COUNTS: Final = """
    CREATE TABLE rate_counts (
        counter text NOT NULL, key text NOT NULL, minute bigint NOT NULL, hits integer NOT NULL,
        PRIMARY KEY (counter, key, minute)
    );
    CREATE INDEX rate_counts_minute ON rate_counts (minute)
"""

_HIT: Final = (
    "INSERT INTO rate_counts (counter, key, minute, hits) VALUES (?, ?, ?, 1)"
    " ON CONFLICT (counter, key, minute) DO UPDATE SET hits = rate_counts.hits + 1 RETURNING hits"
)


class WebState(ABC):
    """Mixed into both stores; `_web_state_sql` gives a `?`-placeholder connection in autocommit mode."""

    @abstractmethod
    def _web_state_sql(self) -> AbstractContextManager[SqlConnection]: ...

    def web_secret(self, name: str) -> bytes:
        """A random 256-bit key made by whichever process asks first, the same for all later."""
        with self._web_state_sql() as conn:
            conn.execute(
                "INSERT INTO web_secrets (name, value) VALUES (?, ?) ON CONFLICT (name) DO NOTHING",
                (name, secrets.token_hex(32)),
            )
            row = conn.execute("SELECT value FROM web_secrets WHERE name = ?", (name,)).fetchone()
        return bytes.fromhex(row[0])

    def count_hit(self, counter: str, key: str, now: float) -> int:
        """Count one event for `key` and return the events of the last minute (store/rates.py's window)."""
        minute = minute_of(now)
        with self._web_state_sql() as conn:
            hits = int(conn.execute(_HIT, (counter, key, minute)).fetchone()[0])
            if hits == 1:  # the first hit of a minute for this key: sweep the old minutes
                conn.execute("DELETE FROM rate_counts WHERE minute < ?", (minute - 1,))
            row = conn.execute(
                "SELECT hits FROM rate_counts WHERE counter = ? AND key = ? AND minute = ?", (counter, key, minute - 1)
            ).fetchone()
        return estimate(hits, 0 if row is None else int(row[0]), now)

    def login_locked_until(self, scope: str, key: str) -> int | None:
        """Until when (µs) logins for this address or user are locked, if a lock was set."""
        with self._web_state_sql() as conn:
            row = conn.execute("SELECT until_us FROM login_locks WHERE scope = ? AND key = ?", (scope, key)).fetchone()
        return None if row is None else int(row[0])

    def login_failed(self, scope: str, key: str, now_us: int, since_us: int) -> int:
        """Record a failed login; returns the failures of this key after `since_us`, this one included."""
        with self._web_state_sql() as conn:
            conn.execute("DELETE FROM login_failures WHERE ts_us <= ?", (since_us,))
            conn.execute("INSERT INTO login_failures (scope, key, ts_us) VALUES (?, ?, ?)", (scope, key, now_us))
            row = conn.execute(
                "SELECT count(*) FROM login_failures WHERE scope = ? AND key = ?", (scope, key)
            ).fetchone()
        return int(row[0])

    def login_lock(self, scope: str, key: str, now_us: int, until_us: int) -> None:
        """Lock the key until `until_us` and forget its failures (and the locks that ended)."""
        with self._web_state_sql() as conn:
            conn.execute("DELETE FROM login_locks WHERE until_us <= ?", (now_us,))
            conn.execute(
                "INSERT INTO login_locks (scope, key, until_us) VALUES (?, ?, ?)"
                " ON CONFLICT (scope, key) DO UPDATE SET until_us = excluded.until_us",
                (scope, key, until_us),
            )
            conn.execute("DELETE FROM login_failures WHERE scope = ? AND key = ?", (scope, key))

    def login_forget(self, scope: str, key: str) -> None:
        """Forget the key's failures (a correct login)."""
        with self._web_state_sql() as conn:
            conn.execute("DELETE FROM login_failures WHERE scope = ? AND key = ?", (scope, key))


class StoredGuardState:
    """loginguard.py's `GuardState` in the store (seconds there, microseconds here)."""

    def __init__(self, store: WebState) -> None:
        self.store = store

    def locked_until(self, key: tuple[str, str]) -> float | None:
        until = self.store.login_locked_until(*key)
        return None if until is None else until / 1_000_000

    def add_failure(self, key: tuple[str, str], now: float, since: float) -> int:
        return self.store.login_failed(*key, _us(now), _us(since))

    def lock(self, key: tuple[str, str], now: float, until: float) -> None:
        self.store.login_lock(*key, _us(now), _us(until))

    def forget_failures(self, key: tuple[str, str]) -> None:
        self.store.login_forget(*key)


def _us(seconds: float) -> int:
    return int(seconds * 1_000_000)
