"""A private Dovecot 2.3 (POP3, IMAP, LMTP) on free loopback ports, logging to a file.

Configured the way docs/dovecot.md recommends for evidence: the mail_log plugin (events and
fields of the documented snippet plus `save`, which maps Dovecot's uid to the Message-ID) and an
event exporter that writes one JSON line per `mail_opened` event (per-message retrieval
evidence). Users come from a passwd-file; a user may get a storage quota, so that tests can make
LMTP refuse one recipient after DATA.

The instance lives in its own directory under the system temp dir, not under pytest's tmp_path:
Dovecot's login and mail processes run as unprivileged users (dovenull, nobody) and must be able
to traverse the path to their sockets and Maildirs, which pytest's 0700 base directory forbids.
`stop()` copies the log next to the caller's files (`keep_log_in`) and removes the directory.
Dovecot needs root here (it refuses to store mail as uid 0 and switches to `nobody`).
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path

from tests.support.net import free_port

DOVECOT = shutil.which("dovecot") or "/usr/sbin/dovecot"
MAIL_USER = "nobody"
MAIL_GROUP = "nogroup"

# The mail_log events and fields of docs/dovecot.md, plus `save` (uid -> msgid at delivery).
MAIL_LOG_EVENTS = "save delete undelete expunge copy mailbox_delete mailbox_rename"
MAIL_LOG_FIELDS = "uid box msgid size from subject"

_CONFIG = """\
base_dir = {root}/run
state_dir = {root}/state
log_path = {log}
info_log_path = {log}
log_timestamp = "%Y-%m-%d %H:%M:%S "
protocols = imap pop3 lmtp
listen = 127.0.0.1
ssl = no
disable_plaintext_auth = no
auth_mechanisms = plain login
auth_failure_delay = {auth_failure_delay} secs
passdb {{
  driver = passwd-file
  args = scheme=PLAIN username_format=%u {root}/users
}}
userdb {{
  driver = passwd-file
  args = username_format=%u {root}/users
  default_fields = uid={mail_user} gid={mail_group} home={root}/mail/%d/%n
}}
mail_location = maildir:~/Maildir
namespace inbox {{
  inbox = yes
}}
mail_plugins = $mail_plugins notify mail_log quota
plugin {{
  mail_log_events = {mail_log_events}
  mail_log_fields = {mail_log_fields}
  quota = maildir:User quota
}}
event_exporter log {{
  format = json
  format_args = time-rfc3339
  transport = log
}}
metric mail_opened {{
  exporter = log
  filter = event=mail_opened
}}
service imap-login {{
  inet_listener imap {{
    address = 127.0.0.1
    port = {imap_port}
  }}
  inet_listener imaps {{
    port = 0
  }}
}}
service pop3-login {{
  inet_listener pop3 {{
    address = 127.0.0.1
    port = {pop3_port}
  }}
  inet_listener pop3s {{
    port = 0
  }}
}}
service lmtp {{
  inet_listener lmtp {{
    address = 127.0.0.1
    port = {lmtp_port}
  }}
}}
service submission-login {{
  inet_listener submission {{
    port = 0
  }}
}}
protocol lmtp {{
  postmaster_address = postmaster@example.test
}}
"""


class Dovecot:
    """One private Dovecot instance; `start()`, use the ports, `stop()`."""

    def __init__(
        self,
        users: Mapping[str, str],
        *,
        quota_bytes: Mapping[str, int] | None = None,
        auth_failure_delay: int = 2,
        extra_config: str = "",
        keep_log_in: Path | None = None,
    ) -> None:
        if os.geteuid() != 0:
            raise RuntimeError("the Dovecot test fixture needs root (Dovecot switches to the mail user 'nobody')")
        self.root = Path(tempfile.mkdtemp(prefix="mw-dovecot-"))
        self.root.chmod(0o755)
        self.pop3_port, self.imap_port, self.lmtp_port = free_port(), free_port(), free_port()
        self.log_path = self.root / "log" / "dovecot.log"
        self.config_path = self.root / "dovecot.conf"
        self.keep_log_in = keep_log_in
        self.process: subprocess.Popen[bytes] | None = None
        for sub in ("run", "state", "log"):
            (self.root / sub).mkdir()
        mail = self.root / "mail"
        mail.mkdir()
        shutil.chown(mail, MAIL_USER, MAIL_GROUP)
        self.users = dict(users)
        self.quota_bytes = dict(quota_bytes or {})
        self._write_users()
        self.config_path.write_text(
            _CONFIG.format(
                root=self.root,
                log=self.log_path,
                mail_user=MAIL_USER,
                mail_group=MAIL_GROUP,
                mail_log_events=MAIL_LOG_EVENTS,
                mail_log_fields=MAIL_LOG_FIELDS,
                auth_failure_delay=auth_failure_delay,
                pop3_port=self.pop3_port,
                imap_port=self.imap_port,
                lmtp_port=self.lmtp_port,
            )
            + extra_config
        )

    def _write_users(self) -> None:
        lines = []
        for user, password in self.users.items():
            quota = self.quota_bytes.get(user)
            extra = f"userdb_quota_rule=*:storage={quota}B" if quota is not None else ""
            lines.append(f"{user}:{{PLAIN}}{password}::::::{extra}")
        users_file = self.root / "users"
        previous = int(users_file.stat().st_mtime) if users_file.exists() else 0
        users_file.write_text("\n".join(lines) + "\n")
        mtime = max(int(time.time()), previous + 1)  # Dovecot notices a changed mtime (in seconds)
        os.utime(users_file, (mtime, mtime))

    def set_quota(self, user: str, quota_bytes: int, timeout: float = 30.0) -> None:
        """Change a user's storage quota while Dovecot runs; returns once Dovecot uses the new one."""
        self.quota_bytes[user] = quota_bytes
        self._write_users()
        wanted = f"*:storage={quota_bytes}B"
        deadline = time.monotonic() + timeout
        while True:  # Dovecot looks at a changed passwd-file at most about once a second
            lookup = subprocess.run(
                ["doveadm", "-c", str(self.config_path), "user", user], capture_output=True, text=True, timeout=30
            )
            if wanted in lookup.stdout:
                return
            if time.monotonic() > deadline:
                raise TimeoutError(f"Dovecot still has the old quota of {user}:\n{lookup.stdout}{lookup.stderr}")
            time.sleep(0.2)

    @property
    def lmtp_address(self) -> str:
        return f"127.0.0.1:{self.lmtp_port}"

    def maildir(self, user: str) -> Path:
        local, _, domain = user.partition("@")
        return self.root / "mail" / domain / local / "Maildir"

    def start(self, timeout: float = 30.0) -> None:
        check = subprocess.run(["doveconf", "-c", str(self.config_path), "-n"], capture_output=True, timeout=30)
        if check.returncode != 0:
            raise RuntimeError(f"doveconf rejects {self.config_path}: {check.stderr.decode(errors='replace')}")
        with open(self.root / "log" / "stdout.log", "wb") as out:
            self.process = subprocess.Popen(
                [DOVECOT, "-c", str(self.config_path), "-F"], stdout=out, stderr=subprocess.STDOUT
            )
        deadline = time.monotonic() + timeout
        for port, greeting, bye in (
            (self.pop3_port, b"+OK", b"QUIT\r\n"),
            (self.imap_port, b"* OK", b"a LOGOUT\r\n"),
            (self.lmtp_port, b"220", b"QUIT\r\n"),
        ):
            self._await_greeting(port, greeting, bye, deadline)

    def _await_greeting(self, port: int, greeting: bytes, bye: bytes, deadline: float) -> None:
        """Readiness by a real greeting (a bare connect only adds noise to the log)."""
        assert self.process is not None
        while True:
            if self.process.poll() is not None:
                raise RuntimeError(f"dovecot exited with {self.process.returncode}:\n{self.log_text()}")
            try:
                with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
                    if sock.recv(512).startswith(greeting):
                        sock.sendall(bye)
                        return
            except OSError:
                pass
            if time.monotonic() > deadline:
                raise TimeoutError(f"dovecot does not greet on port {port}:\n{self.log_text()}")
            time.sleep(0.05)

    def stop(self) -> None:
        try:
            if self.process is not None and self.process.poll() is None:
                self.process.terminate()
                try:
                    self.process.wait(timeout=20)
                except subprocess.TimeoutExpired:
                    self.process.kill()
                    self.process.wait()
            if self.keep_log_in is not None and self.log_path.exists():
                self.keep_log_in.mkdir(parents=True, exist_ok=True)
                shutil.copy(self.log_path, self.keep_log_in / "dovecot.log")
        finally:
            shutil.rmtree(self.root, ignore_errors=True)

    # ------------------------------------------------------------------ the log
    def log_text(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def log_lines(self) -> list[str]:
        return self.log_text().splitlines()

    def wait_for_log(self, needle: str, count: int = 1, timeout: float = 30.0) -> list[str]:
        """The log lines containing `needle`, once there are at least `count` (Dovecot logs asynchronously)."""
        deadline = time.monotonic() + timeout
        while True:
            found = [line for line in self.log_lines() if needle in line]
            if len(found) >= count:
                return found
            if time.monotonic() > deadline:
                raise TimeoutError(f"{count}x {needle!r} not in the Dovecot log after {timeout}s:\n{self.log_text()}")
            time.sleep(0.05)


@contextmanager
def running_dovecot(
    users: Mapping[str, str],
    *,
    quota_bytes: Mapping[str, int] | None = None,
    auth_failure_delay: int = 2,
    extra_config: str = "",
    keep_log_in: Path | None = None,
) -> Iterator[Dovecot]:
    instance = Dovecot(
        users,
        quota_bytes=quota_bytes,
        auth_failure_delay=auth_failure_delay,
        extra_config=extra_config,
        keep_log_in=keep_log_in,
    )
    try:
        instance.start()
        yield instance
    finally:
        instance.stop()
