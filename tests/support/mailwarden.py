"""Run `mailwarden serve` as a real subprocess with a private config, store and Maildir root."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

from tests.support.net import free_port

if TYPE_CHECKING:
    from mailwarden.store import Store

PYTHON = sys.executable
BASE_ORDER = ("recipients", "size", "content")


def toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(toml_value(v) for v in value) + "]"
    if isinstance(value, Mapping):
        return "{ " + ", ".join(f"{k} = {toml_value(v)}" for k, v in value.items()) + " }"
    return str(value)


def write_config(path: Path, sections: Mapping[str, Mapping[str, Any]]) -> Path:
    """Write a TOML config; a section value that is a list of dicts becomes an array of tables."""
    lines: list[str] = []
    for name, values in sections.items():
        tables = {k: v for k, v in values.items() if isinstance(v, list) and v and isinstance(v[0], Mapping)}
        plain = {k: v for k, v in values.items() if k not in tables}
        lines.append(f"[{name}]")
        lines.extend(f"{k} = {toml_value(v)}" for k, v in plain.items())
        for key, items in tables.items():
            for item in items:
                lines.append(f"[[{name}.{key}]]")
                lines.extend(f"{k} = {toml_value(v)}" for k, v in item.items())
        lines.append("")
    path.write_text("\n".join(lines))
    return path


class Mailwarden:
    """A mailwarden instance in `root`: config.toml, var/ (store, Maildirs, spool, TLS)."""

    def __init__(
        self,
        root: Path,
        overrides: Mapping[str, Mapping[str, Any]] | None = None,
        *,
        config_file: Path | None = None,
        smtp_port: int | None = None,
    ) -> None:
        """With `config_file` (and its `smtp_port`), run that config as written, without the test base."""
        self.root = root
        root.mkdir(parents=True, exist_ok=True)
        self.process: subprocess.Popen[bytes] | None = None
        self.wrapped = False
        self.log = root / "serve.log"
        if config_file is not None:
            assert smtp_port is not None and overrides is None
            self.smtp_port, self.config, self.sections = smtp_port, config_file, {}
            return
        self.smtp_port = free_port()
        sections: dict[str, dict[str, Any]] = {
            "node": {"name": "test-mx"},
            "smtp": {"listen": [f"127.0.0.1:{self.smtp_port}"], "hostname": "mx.example.test"},
            "mail": {"domains": ["example.test"], "demo_mailbox": ""},
            "store": {"url": "sqlite:///var/mailwarden.db"},
            "tls": {"cert": "var/tls/cert.pem", "key": "var/tls/key.pem"},
            # Never the machine's resolver (DMARC looks up every From domain): nothing listens on the
            # discard port, so lookups fail at once as temporary. Tests with DNS set their own server.
            "dns": {"nameservers": ["127.0.0.1:9"]},
            # Named, not derived: the checks that need DNS (and the pregreet wait) run only in the tests
            # that configure them.
            "checks": {"order": list(BASE_ORDER)},
        }
        for name, values in (overrides or {}).items():
            sections.setdefault(name, {}).update(values)
        self.sections = sections
        self.config = write_config(root / "config.toml", sections)

    @property
    def maildir_root(self) -> Path:
        return self.root / "var" / "mail"

    def maildir(self, mailbox: str, folder: str = "INBOX") -> Path:
        local, _, domain = mailbox.partition("@")
        base = self.maildir_root / domain / local
        return base if folder == "INBOX" else base / f".{folder}"

    def messages(self, mailbox: str, folder: str = "INBOX") -> list[bytes]:
        directory = self.maildir(mailbox, folder)
        files = sorted((directory / "new").glob("*")) + sorted((directory / "cur").glob("*"))
        return [f.read_bytes() for f in files]

    def cli(self, *args: str, input: str | None = None, check: bool = True) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [PYTHON, "-m", "mailwarden", "-c", str(self.config), *args],
            input=input,
            capture_output=True,
            text=True,
            check=check,
            timeout=60,
        )

    def add_user(self, address: str, password: str = "secret") -> None:
        self.cli("users", "add", address, "--password-stdin", input=password + "\n")

    @contextmanager
    def store(self) -> Iterator[Store]:
        """The instance's store, opened as its command line would (SQLite or PostgreSQL, as configured)."""
        from mailwarden.store import open_store_url

        opened = open_store_url(self.sections["store"]["url"], base_dir=self.root, batch_interval=0.001)
        try:
            yield opened
        finally:
            opened.close()

    def events(self, *args: str) -> list[dict[str, Any]]:
        import json

        out = self.cli("events", "--format", "json", *args).stdout
        result: list[dict[str, Any]] = json.loads(out)
        return result

    def start(self, timeout: float = 30.0, wrapper: Sequence[str] = ()) -> None:
        """Start `mailwarden serve`, under `wrapper` (e.g. strace and its options) when given; wait until ready."""
        env = dict(os.environ, PYTHONUNBUFFERED="1")
        started_at = self.log.stat().st_size if self.log.exists() else 0  # a restart appends to the log
        self.wrapped = bool(wrapper)
        with open(self.log, "ab") as log:
            self.process = subprocess.Popen(
                [*wrapper, PYTHON, "-m", "mailwarden", "-c", str(self.config), "serve"],
                stdout=log,
                stderr=subprocess.STDOUT,
                cwd=self.root,
                env=env,
            )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"mailwarden exited with {self.process.returncode}:\n{self.log.read_text()}")
            if b"mailwarden ready" in self.log.read_bytes()[started_at:]:
                return
            time.sleep(0.05)
        raise TimeoutError(f"mailwarden not ready after {timeout}s:\n{self.log.read_text()}")

    @property
    def pid(self) -> int:
        """The server's process id; under a wrapper, the wrapper's child (signals must reach the server itself)."""
        assert self.process is not None
        if not self.wrapped:
            return self.process.pid
        wrapper = self.process.pid
        children = Path(f"/proc/{wrapper}/task/{wrapper}/children").read_text().split()
        return int(children[0])

    def worker_pids(self) -> list[int]:
        """The SMTP worker processes (the supervisor's children); empty while none runs."""
        try:
            return [int(pid) for pid in Path(f"/proc/{self.pid}/task/{self.pid}/children").read_text().split()]
        except FileNotFoundError:
            return []

    def stop(self) -> None:
        if self.process is None or self.process.poll() is not None:
            return
        os.kill(self.pid, signal.SIGTERM)
        try:
            self.process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            self.kill()

    def kill(self) -> None:
        """SIGKILL the server and its SMTP workers at once - the whole node crashes - (not the wrapper,
        which then ends by itself) and wait until it is gone.

        The workers go too: a worker that outlived its supervisor would see its commit fail and take
        its message back, which is another story (test_workers.py kills them one by one).
        """
        if self.process is not None and self.process.poll() is None:
            with contextlib.suppress(ProcessLookupError, FileNotFoundError, IndexError):
                for pid in [*self.worker_pids(), self.pid]:
                    with contextlib.suppress(ProcessLookupError):
                        os.kill(pid, signal.SIGKILL)
            self.process.kill()  # the wrapper too, should it linger
            self.process.wait()


@contextmanager
def running(
    root: Path, overrides: Mapping[str, Mapping[str, Any]] | None = None, users: tuple[str, ...] = ("bob@example.test",)
) -> Iterator[Mailwarden]:
    instance = Mailwarden(root, overrides)
    for user in users:
        instance.add_user(user)
    instance.start()
    try:
        yield instance
    finally:
        instance.stop()
