"""A private PostgreSQL 15 on a free loopback port: initdb and pg_ctl, started by the tests themselves.

PostgreSQL refuses to run as root, so when the tests run as root the cluster belongs to the
`postgres` user (runuser); its directory lives under the system temp dir, which that user can
traverse (pytest's 0700 base directory it cannot). fsync stays on, as in production. Local
connections are trusted (loopback only). A test that needs a database of its own (migrations,
several databases) makes one (`new_database`); the tests that run on both stores share one
migrated database that is emptied before each of them (`empty_store`): a new database costs
about 0.6 s and its migration another 0.8 s, emptying one about 0.1 s. One server serves a whole
test run.
"""

from __future__ import annotations

import itertools
import os
import pwd
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import psycopg

from tests.support.net import free_port

BIN = Path(os.environ.get("MAILWARDEN_PG_BIN", "/usr/lib/postgresql/15/bin"))
OWNER = "postgres"


def available() -> bool:
    return (BIN / "initdb").exists() and (os.geteuid() != 0 or _owner_exists())


def _owner_exists() -> bool:
    try:
        pwd.getpwnam(OWNER)
    except KeyError:
        return False
    return True


@dataclass
class Postgres:
    root: Path
    port: int
    host: str = "127.0.0.1"
    _numbers: Iterator[int] = field(default_factory=lambda: itertools.count(1))
    _store_url: str | None = None

    def url(self, database: str = "postgres") -> str:
        return f"postgresql://{OWNER}@{self.host}:{self.port}/{database}"

    def new_database(self) -> str:
        """Create an empty database and return its URL."""
        name = f"test_{os.getpid()}_{next(self._numbers)}"
        self.psql(f"CREATE DATABASE {name}")
        return self.url(name)

    def empty_store(self) -> str:
        """The URL of the shared store database, migrated the first time and emptied every time:
        no event, mailbox, account or counter, every sequence restarted, no day partition."""
        from mailwarden.store.postgres import MIGRATIONS, PostgresStore

        if self._store_url is None:
            self._store_url = self.new_database()
            PostgresStore(self._store_url).close()  # migrated once: the schema is what tests share
        with psycopg.connect(self._store_url, autocommit=True) as conn:
            conn.execute("SET synchronous_commit = off")  # an emptied table needs no wait for the disk
            conn.execute("SET lock_timeout = '20s'")  # a store a test left open: an error, not a hang
            conn.execute(_EMPTY_STORE)
            known = [name for name, _ in MIGRATIONS]  # a newer version's, made up by a test, goes too
            conn.execute("DELETE FROM migrations WHERE NOT (name = ANY(%s))", (known,))
        return self._store_url

    def psql(self, sql: str, database: str = "postgres") -> str:
        result = subprocess.run(
            [BIN / "psql", "-X", "-q", "-At", "-h", self.host, "-p", str(self.port), "-U", OWNER, "-d", database],
            input=sql,
            capture_output=True,
            text=True,
            check=True,
            timeout=60,
        )
        return result.stdout

    def stop(self, mode: str = "fast") -> None:
        """Stop the server (fast: open transactions are rolled back); `start` brings it back with its data.
        `immediate` skips the shutdown checkpoint (some 20 s under load) for a cluster thrown away."""
        _as_owner([BIN / "pg_ctl", "-D", self.root / "data", "-m", mode, "-w", "stop"])

    def start(self) -> None:
        _as_owner([BIN / "pg_ctl", "-D", self.root / "data", "-l", self.root / "log", "-w", "-t", "60", "start"])


# DELETE, not TRUNCATE: on tables of a few rows it is several times faster (TRUNCATE makes new files).
_EMPTY_STORE = """
DO $$
DECLARE item record;
BEGIN
    FOR item IN SELECT child.relname FROM pg_inherits JOIN pg_class AS child ON child.oid = inhrelid
                JOIN pg_class AS parent ON parent.oid = inhparent WHERE parent.relname = 'events' LOOP
        EXECUTE format('DROP TABLE %I', item.relname);
    END LOOP;
    FOR item IN SELECT tablename FROM pg_tables WHERE schemaname = 'public' AND tablename <> 'migrations' LOOP
        EXECUTE format('DELETE FROM %I', item.tablename);
    END LOOP;
    FOR item IN SELECT sequencename FROM pg_sequences WHERE schemaname = 'public' LOOP
        EXECUTE format('ALTER SEQUENCE %I RESTART', item.sequencename);
    END LOOP;
END $$
"""


def _as_owner(argv: list[str | Path]) -> None:
    command = [str(arg) for arg in argv]
    if os.geteuid() == 0:
        command = ["runuser", "-u", OWNER, "--", *command]
    subprocess.run(command, check=True, capture_output=True, timeout=120)


def _initdb(server: Postgres, settings: str) -> None:
    _as_owner([BIN / "initdb", "-D", server.root / "data", "-U", OWNER, "--auth=trust", "-E", "UTF8", "--no-locale"])
    with (server.root / "data" / "postgresql.conf").open("a") as conf:
        conf.write(f"unix_socket_directories = '{server.root}'\n{settings}")


@contextmanager
def running_postgres(keep_log_in: Path | None = None) -> Iterator[Postgres]:
    root = Path(tempfile.mkdtemp(prefix="mailwarden-pg-"))
    if os.geteuid() == 0:
        shutil.chown(root, OWNER, OWNER)
    server = Postgres(root, free_port())
    _initdb(
        server,
        f"listen_addresses = '{server.host}'\nport = {server.port}\nmax_connections = 200\nshared_buffers = 128MB\n",
    )
    server.start()
    try:
        yield server
    finally:
        try:
            server.stop("immediate")  # the cluster is removed below: nothing to write back
        except subprocess.CalledProcessError:
            pass  # already stopped by the test
        if keep_log_in is not None and (root / "log").exists():
            shutil.copy(root / "log", keep_log_in / "postgres.log")
        shutil.rmtree(root, ignore_errors=True)


@contextmanager
def kept_postgres(root: Path, settings: str = "") -> Iterator[Postgres]:
    """A cluster in `root` that outlives the run (a benchmark's data, generated once): made there the
    first time, started on a free loopback port each time (`port.conf`), stopped at the end."""
    root.mkdir(parents=True, exist_ok=True)
    if os.geteuid() == 0:
        shutil.chown(root, OWNER, OWNER)
    server = Postgres(root, free_port())
    if not (root / "data" / "PG_VERSION").exists():
        shutil.rmtree(root / "data", ignore_errors=True)
        _initdb(server, f"listen_addresses = '{server.host}'\ninclude_if_exists = 'port.conf'\n{settings}")
    (root / "data" / "port.conf").write_text(f"port = {server.port}\n")
    server.start()
    try:
        yield server
    finally:
        server.stop()
