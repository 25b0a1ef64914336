"""What the two SQL backends share: their SQL written once, in SQLite's dialect with `?` placeholders.

The statements both stores run as they are (`Statements`: reading positions, node ids, greylisting,
pregreet passes, mailboxes, the tracking center's accounts; run by `sql_parts.SqlParts`) are
`SQLITE`, and `POSTGRES` is the same list translated once, when this module is imported. The
reads built per query (a search, a page of the message index, a message's links) go through
`QmarkConnection`; the PostgreSQL store defines what they use that PostgreSQL lacks (`instr`,
`mw_ip_in` and the case-insensitive collation `nocase`, store/postgres.py). Upserts are written as
`INSERT ... ON CONFLICT`, which both speak.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from typing import Any, Final, NamedTuple, Protocol

ACCOUNT_COLUMNS: Final = "name, role, password_hash, created_us, domains"
SESSION_COLUMNS: Final = "token_hash, account, csrf, created_us, seen_us"


class Statements(NamedTuple):
    """Every statement both stores run unchanged, in one dialect (`SQLITE` or `POSTGRES`)."""

    create_migrations: str  # the names of the schema migrations applied
    applied_migrations: str
    migration_applied: str
    record_migration: str
    load_position: str
    save_positions: str  # executemany
    count_events: str
    count_events_after: str
    oldest_event: str
    purge_index: str  # after the events: what they were the only evidence of
    purge_links: str
    purge_roots: str
    node_of_id: str
    forget_node: str
    register_node: str
    greylist_get: str
    greylist_put: str
    greylist_sender_passed: str
    greylist_purge: str
    pregreet_passed: str
    pregreet_forget: str
    pregreet_pass: str
    add_mailbox: str  # changes no row when the address exists
    remove_mailbox: str
    set_password: str
    set_mailbox_settings: str
    get_mailbox: str
    list_mailboxes: str
    add_account: str  # changes no row when the name exists
    get_account: str
    list_accounts: str
    remove_account: str
    set_account_password: str
    end_account_sessions: str
    add_web_session: str
    get_web_session: str
    touch_web_session: str
    remove_web_session: str
    purge_web_sessions: str
    add_audit: str


SQLITE: Final = Statements(
    create_migrations="CREATE TABLE IF NOT EXISTS migrations (name text PRIMARY KEY, applied_us bigint NOT NULL)",
    applied_migrations="SELECT name FROM migrations",
    migration_applied="SELECT 1 FROM migrations WHERE name = ?",
    record_migration="INSERT INTO migrations (name, applied_us) VALUES (?, ?)",
    load_position="SELECT value FROM positions WHERE name = ?",
    save_positions="INSERT INTO positions (name, value, updated_us) VALUES (?, ?, ?)"
    " ON CONFLICT (name) DO UPDATE SET value = excluded.value, updated_us = excluded.updated_us",
    count_events="SELECT count(*) FROM events WHERE message_key IS NOT NULL",
    count_events_after="SELECT count(*) FROM events WHERE id > ?",
    oldest_event="SELECT min(ts) FROM events",
    purge_index="DELETE FROM message_index WHERE last_seen < ?",
    purge_links="DELETE FROM message_links WHERE ts < ?",
    purge_roots="DELETE FROM message_roots"
    " WHERE NOT EXISTS (SELECT 1 FROM message_links WHERE message_links.message_key = message_roots.key)",
    node_of_id="SELECT name FROM nodes WHERE node_id = ?",
    forget_node="DELETE FROM nodes WHERE name = ?",
    register_node="INSERT INTO nodes (node_id, name, registered_us) VALUES (?, ?, ?)",
    greylist_get="SELECT first_seen_us, last_seen_us, passed_us, attempts FROM greylist"
    " WHERE network = ? AND sender = ? AND recipient = ?",
    greylist_put="INSERT INTO greylist (network, sender, recipient, first_seen_us, last_seen_us, passed_us, attempts)"
    " VALUES (?, ?, ?, ?, ?, ?, ?) ON CONFLICT (network, sender, recipient) DO UPDATE SET"
    " first_seen_us = excluded.first_seen_us, last_seen_us = excluded.last_seen_us,"
    " passed_us = excluded.passed_us, attempts = excluded.attempts",
    greylist_sender_passed="SELECT 1 FROM greylist WHERE network = ? AND sender = ? AND passed_us IS NOT NULL"
    " AND last_seen_us >= ? LIMIT 1",
    greylist_purge="DELETE FROM greylist WHERE last_seen_us < ?",
    pregreet_passed="SELECT passed_us FROM pregreet_passes WHERE client_ip = ?",
    pregreet_forget="DELETE FROM pregreet_passes WHERE passed_us < ?",
    pregreet_pass="INSERT INTO pregreet_passes (client_ip, passed_us) VALUES (?, ?)"
    " ON CONFLICT (client_ip) DO UPDATE SET passed_us = excluded.passed_us",
    add_mailbox="INSERT INTO mailboxes (address, password_hash, created_us) VALUES (?, ?, ?)"
    " ON CONFLICT (address) DO NOTHING",
    remove_mailbox="DELETE FROM mailboxes WHERE address = ?",
    set_password="UPDATE mailboxes SET password_hash = ? WHERE address = ?",
    set_mailbox_settings="UPDATE mailboxes SET settings = ? WHERE address = ?",
    get_mailbox="SELECT address, password_hash, created_us, settings FROM mailboxes WHERE address = ?",
    list_mailboxes="SELECT address, password_hash, created_us, settings FROM mailboxes ORDER BY address",
    add_account=f"INSERT INTO web_accounts ({ACCOUNT_COLUMNS}) VALUES (?, ?, ?, ?, ?) ON CONFLICT (name) DO NOTHING",
    get_account=f"SELECT {ACCOUNT_COLUMNS} FROM web_accounts WHERE name = ?",
    list_accounts=f"SELECT {ACCOUNT_COLUMNS} FROM web_accounts ORDER BY name",
    remove_account="DELETE FROM web_accounts WHERE name = ?",
    set_account_password="UPDATE web_accounts SET password_hash = ? WHERE name = ?",
    end_account_sessions="DELETE FROM web_sessions WHERE account = ?",
    add_web_session=f"INSERT INTO web_sessions ({SESSION_COLUMNS}) VALUES (?, ?, ?, ?, ?)",
    get_web_session=f"SELECT {SESSION_COLUMNS} FROM web_sessions WHERE token_hash = ?",
    touch_web_session="UPDATE web_sessions SET seen_us = ? WHERE token_hash = ?",
    remove_web_session="DELETE FROM web_sessions WHERE token_hash = ?",
    purge_web_sessions="DELETE FROM web_sessions WHERE seen_us < ? OR created_us < ?",
    add_audit="INSERT INTO audit_log (ts, account, action, target, client_ip, detail) VALUES (?, ?, ?, ?, ?, ?)",
)


def postgres_dialect(sql: str) -> str:
    """SQLite's `?` placeholders as psycopg's `%s` (the shared SQL has no literal `%` or `?`)."""
    return sql.replace("?", "%s")


POSTGRES: Final = Statements._make(postgres_dialect(statement) for statement in SQLITE)


class Results(Protocol):
    """A statement's results (sqlite3's, APSW's and psycopg's cursors all give them)."""

    def fetchone(self) -> Any: ...

    def fetchall(self) -> list[Any]: ...

    def __iter__(self) -> Iterator[Any]: ...


class Rows(Results, Protocol):
    """A cursor's results and how many rows it changed (sqlite3's and psycopg's cursors)."""

    @property
    def rowcount(self) -> int: ...


class Queries(Protocol):
    """Runs `?`-placeholder SQL and gives its results: all the message writer's reads ask for."""

    def execute(self, sql: str, parameters: Sequence[Any], /) -> Results: ...


class SqlConnection(Protocol):
    """Runs `?`-placeholder SQL (sqlite3.Connection is one; `QmarkConnection` makes a psycopg one)."""

    def execute(self, sql: str, parameters: Sequence[Any], /) -> Rows: ...


class WriterConnection(Protocol):
    """What the SQLite message writer asks of its connection: sqlite3's (the store's writer thread)
    and APSW's (a bulk import's writer process, store/sqlite.py `BulkWrites`) both give it."""

    def execute(self, sql: str, parameters: Any = ..., /) -> Results: ...

    def executemany(self, sql: str, parameters: Iterable[Any], /) -> Results: ...


class QmarkConnection:
    """A psycopg connection that takes `?` placeholders."""

    def __init__(self, conn: Any) -> None:
        self._conn = conn  # a psycopg.Connection

    def execute(self, sql: str, parameters: Sequence[Any] = (), /) -> Rows:
        cursor: Rows = self._conn.execute(postgres_dialect(sql).encode(), parameters)
        return cursor
