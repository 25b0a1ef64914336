"""Run `mailwarden serve` as a real subprocess with a private config, store and Maildir root."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from tests.support.net import free_port

PYTHON = sys.executable


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

    def __init__(self, root: Path, overrides: Mapping[str, Mapping[str, Any]] | None = None) -> None:
        self.root = root
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
            "web": {"listen": ""},  # the tracking center only where a test asks for it (a free port then)
        }
        for name, values in (overrides or {}).items():
            sections.setdefault(name, {}).update(values)
        self.sections = sections
        root.mkdir(parents=True, exist_ok=True)
        self.config = write_config(root / "config.toml", sections)
        self.process: subprocess.Popen[bytes] | None = None
        self.log = root / "serve.log"

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

    def events(self, *args: str) -> list[dict[str, Any]]:
        import json

        out = self.cli("events", "--format", "json", *args).stdout
        result: list[dict[str, Any]] = json.loads(out)
        return result

    def start(self, timeout: float = 30.0) -> None:
        env = dict(os.environ, PYTHONUNBUFFERED="1")
        started_at = self.log.stat().st_size if self.log.exists() else 0  # a restart appends to the log
        with open(self.log, "ab") as log:
            self.process = subprocess.Popen(
                [PYTHON, "-m", "mailwarden", "-c", str(self.config), "serve"],
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

    def stop(self) -> None:
        if self.process is None or self.process.poll() is not None:
            return
        self.process.send_signal(signal.SIGTERM)
        try:
            self.process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()

    def kill(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
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
