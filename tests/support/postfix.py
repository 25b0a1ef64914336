"""A private Postfix instance on loopback: a real sending MTA (and a real peer for benchmarks).

Postfix runs from its own config and queue directories in a short temporary directory (the
queue holds unix sockets, whose paths must stay under 108 bytes), logs to a file instead of
syslog, never touches /etc/postfix and never looks anything up in DNS.

- `relayhost="127.0.0.1:PORT"` sends every non-local mail there (e.g. to mailwarden).
- `local_domains=("sender.test",)` delivers mail for those domains - for instance the bounces
  Postfix writes for its own users - into one Maildir (`inbox`), so a test can read them.
- `settings` overrides or adds main.cf parameters.

Use it through `running_postfix(...)`, which stops the instance and removes its directory:

    with running_postfix(relayhost=f"127.0.0.1:{gateway.smtp_port}", local_domains=["sender.test"]) as postfix:
        postfix.submit("alice@sender.test", ["nobody@example.test"], message)
        (bounce,) = postfix.wait_delivered(1)
"""

from __future__ import annotations

import email
import email.policy
import os
import re
import shutil
import signal
import smtplib
import subprocess
import tempfile
import time
from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager
from email.message import EmailMessage
from pathlib import Path

from tests.support.net import free_port, wait_port

POSTFIX = "/usr/sbin/postfix"
POSTCONF = "/usr/sbin/postconf"
POSTQUEUE = "/usr/sbin/postqueue"
VIRTUAL_UID = 65534  # nobody: virtual(8) refuses uids below virtual_minimum_uid (100)

# Real output of such a private Postfix 3.7 (shared/recipes §1): delivery, a 5xx bounce and its notification.
RELAY_LOG = """\
Nov 28 04:43:17 mta postfix/smtpd[19314]: connect from localhost[127.0.0.1]
Nov 28 04:43:17 mta postfix/smtpd[19314]: A59FE214716: client=localhost[127.0.0.1]
Nov 28 04:43:17 mta postfix/cleanup[19438]: A59FE214716: message-id=<pf1@sender.test>
Nov 28 04:43:17 mta postfix/qmgr[19311]: A59FE214716: from=<alice@sender.test>, size=430, nrcpt=2 (queue active)
Nov 28 04:43:17 mta postfix/smtpd[19314]: disconnect from localhost[127.0.0.1] ehlo=1 mail=1 rcpt=2 data=1 quit=1 commands=6
Nov 28 04:43:17 mta postfix/smtp[19439]: A59FE214716: to=<reject-me@dest.test>, relay=127.0.0.1[127.0.0.1]:2525, delay=0.02, delays=0.01/0.01/0/0.01, dsn=5.7.1, status=bounced (host 127.0.0.1[127.0.0.1] said: 550 5.7.1 <reject-me@dest.test>: Recipient address rejected: test policy says no (in reply to RCPT TO command))
Nov 28 04:43:17 mta postfix/smtp[19439]: A59FE214716: to=<bob@dest.test>, relay=127.0.0.1[127.0.0.1]:2525, delay=0.02, delays=0.01/0.01/0/0.01, dsn=2.0.0, status=sent (250 2.0.0 Ok: queued as TEST1)
Nov 28 04:43:17 mta postfix/cleanup[19438]: A987F214719: message-id=<20261128044317.A987F214719@mta.example.test>
Nov 28 04:43:17 mta postfix/bounce[19440]: A59FE214716: sender non-delivery notification: A987F214719
Nov 28 04:43:17 mta postfix/qmgr[19311]: A987F214719: from=<>, size=2516, nrcpt=1 (queue active)
Nov 28 04:43:17 mta postfix/qmgr[19311]: A59FE214716: removed
Nov 28 04:43:17 mta postfix/smtp[19439]: A987F214719: to=<alice@sender.test>, relay=127.0.0.1[127.0.0.1]:2525, delay=0, delays=0/0/0/0, dsn=2.0.0, status=sent (250 2.0.0 Ok: queued as TEST2)
Nov 28 04:43:17 mta postfix/qmgr[19311]: A987F214719: removed
""".splitlines()


class PostfixError(RuntimeError):
    pass


class Postfix:
    """One private Postfix instance under `root` (config in etc/, queue/, data/, log/maillog)."""

    def __init__(
        self,
        root: Path,
        *,
        relayhost: str | None = None,
        local_domains: Iterable[str] = (),
        hostname: str = "mta.example.test",
        settings: Mapping[str, str] | None = None,
    ) -> None:
        self.root = root
        self.etc = root / "etc"
        self.queue = root / "queue"
        self.maillog = root / "log" / "maillog"
        self.inbox = root / "mail" / "inbox"
        self.smtp_port = free_port()
        self.hostname = hostname
        self.process: subprocess.Popen[bytes] | None = None
        self._write_config(relayhost, list(local_domains), dict(settings or {}))

    # ------------------------------------------------------------------ setup
    def _write_config(self, relayhost: str | None, local_domains: list[str], settings: dict[str, str]) -> None:
        for sub in ("etc", "queue", "data", "log"):
            (self.root / sub).mkdir(parents=True, exist_ok=True)
        shutil.copy("/etc/postfix/master.cf", self.etc / "master.cf")
        main = {
            "compatibility_level": "3.6",
            "queue_directory": str(self.queue),
            "data_directory": str(self.root / "data"),
            "mail_owner": "postfix",
            "setgid_group": "postdrop",
            "myhostname": self.hostname,
            "mydomain": self.hostname.partition(".")[2] or self.hostname,
            "myorigin": "$myhostname",
            "mydestination": "",
            "local_recipient_maps": "",
            "alias_maps": "",
            "alias_database": "",
            "inet_interfaces": "127.0.0.1",
            "inet_protocols": "ipv4",
            "mynetworks": "127.0.0.0/8",
            "smtpd_relay_restrictions": "permit_mynetworks, reject_unauth_destination",
            "smtpd_peername_lookup": "no",  # no DNS, not even for 127.0.0.1
            "smtp_host_lookup": "native",
            "smtp_dns_support_level": "disabled",
            "relayhost": f"[{relayhost.rpartition(':')[0]}]:{relayhost.rpartition(':')[2]}" if relayhost else "",
            "smtp_tls_security_level": "none",
            "smtpd_tls_security_level": "none",
            "maillog_file": str(self.maillog),
            "maillog_file_prefixes": str(self.root),
            "queue_run_delay": "1s",
            "minimal_backoff_time": "1s",
            "maximal_backoff_time": "2s",
            "smtp_connect_timeout": "5s",
            "biff": "no",
            "message_size_limit": "104857600",
            "mailbox_size_limit": "0",
            "virtual_mailbox_limit": "0",
        }
        if local_domains:
            self.inbox.mkdir(parents=True, exist_ok=True)
            os.chown(self.inbox.parent, VIRTUAL_UID, VIRTUAL_UID)
            os.chown(self.inbox, VIRTUAL_UID, VIRTUAL_UID)
            main.update(
                {
                    "virtual_mailbox_domains": ", ".join(local_domains),
                    "virtual_mailbox_base": str(self.inbox.parent),
                    "virtual_mailbox_maps": "static:inbox/",  # a trailing slash means Maildir
                    "virtual_uid_maps": f"static:{VIRTUAL_UID}",
                    "virtual_gid_maps": f"static:{VIRTUAL_UID}",
                }
            )
        main.update(settings)
        (self.etc / "main.cf").write_text("".join(f"{key} = {value}\n" for key, value in main.items()))
        self.postconf("-F", "*/*/chroot = n")  # Debian's master.cf chroots into the queue directory
        self.postconf("-MX", "smtp/inet")  # no port 25 listener
        self.postconf("-M", f"127.0.0.1:{self.smtp_port}/inet = 127.0.0.1:{self.smtp_port} inet n - n - - smtpd")
        subprocess.run([POSTFIX, "-c", str(self.etc), "set-permissions"], capture_output=True, check=False, timeout=60)
        check = subprocess.run([POSTFIX, "-c", str(self.etc), "check"], capture_output=True, text=True, timeout=60)
        if check.returncode != 0:
            raise PostfixError(f"postfix check failed: {check.stderr}")

    def postconf(self, *args: str) -> str:
        done = subprocess.run(
            [POSTCONF, "-c", str(self.etc), *args], capture_output=True, text=True, check=True, timeout=30
        )
        return done.stdout

    # ------------------------------------------------------------------ life cycle
    def start(self, timeout: float = 30.0) -> None:
        with open(self.root / "log" / "master.out", "ab") as out:
            self.process = subprocess.Popen(
                [POSTFIX, "-c", str(self.etc), "start-fg"],
                stdout=out,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,  # its own process group, so teardown can end all of it
            )
        deadline = time.monotonic() + timeout
        while True:
            try:
                wait_port(self.smtp_port, timeout=0.5)
                return
            except TimeoutError:
                if self.process.poll() is not None or time.monotonic() > deadline:
                    self.stop()
                    raise PostfixError(f"postfix did not start:\n{self.log_text()}") from None

    def stop(self) -> None:
        if self.process is None:
            return
        if self.process.poll() is None:
            subprocess.run([POSTFIX, "-c", str(self.etc), "stop"], capture_output=True, timeout=60, check=False)
            try:
                self.process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait()
        self.process = None

    # ------------------------------------------------------------------ mail
    def submit(self, sender: str, recipients: list[str], message: bytes | EmailMessage) -> None:
        """Hand a message to Postfix's smtpd, as a mail client would."""
        data = message.as_bytes() if isinstance(message, EmailMessage) else message
        with smtplib.SMTP("127.0.0.1", self.smtp_port, timeout=30) as client:
            client.sendmail(sender, recipients, data)

    def flush(self) -> None:
        """Retry deferred mail now."""
        subprocess.run([POSTQUEUE, "-c", str(self.etc), "-f"], capture_output=True, timeout=30, check=False)

    def queue_empty(self) -> bool:
        listing = subprocess.run(
            [POSTQUEUE, "-c", str(self.etc), "-p"], capture_output=True, text=True, timeout=30, check=False
        )
        return "Mail queue is empty" in listing.stdout

    def log_text(self) -> str:
        return self.maillog.read_text(errors="replace") if self.maillog.exists() else ""

    def wait_log(self, pattern: str, timeout: float = 60.0) -> re.Match[str]:
        """Wait until a maillog line matches `pattern` (a regular expression); return the match."""
        compiled = re.compile(pattern)
        deadline = time.monotonic() + timeout
        while True:
            match = compiled.search(self.log_text())
            if match is not None:
                return match
            if time.monotonic() > deadline:
                raise TimeoutError(f"no maillog line matches {pattern!r} after {timeout}s:\n{self.log_text()[-4000:]}")
            time.sleep(0.1)

    def delivered(self) -> list[bytes]:
        """The messages Postfix delivered into the local Maildir, oldest first."""
        files = [f for sub in ("new", "cur") for f in (self.inbox / sub).glob("*") if f.is_file()]
        return [f.read_bytes() for f in sorted(files, key=lambda f: (f.stat().st_mtime, f.name))]

    def wait_delivered(self, count: int, timeout: float = 60.0) -> list[EmailMessage]:
        """Wait until at least `count` messages are in the local Maildir; return them parsed."""
        deadline = time.monotonic() + timeout
        while len(found := self.delivered()) < count:
            if time.monotonic() > deadline:
                raise TimeoutError(f"{len(found)} of {count} messages delivered:\n{self.log_text()[-4000:]}")
            self.flush()
            time.sleep(0.2)
        return [email.message_from_bytes(raw, policy=email.policy.default) for raw in found]


@contextmanager
def running_postfix(
    *,
    relayhost: str | None = None,
    local_domains: Iterable[str] = (),
    hostname: str = "mta.example.test",
    settings: Mapping[str, str] | None = None,
) -> Iterator[Postfix]:
    """A started private Postfix; stopped and removed afterwards (its log is printed on failure)."""
    root = Path(tempfile.mkdtemp(prefix="mw-pf-"))
    root.chmod(0o755)  # Postfix's daemons run as the postfix user and must reach their directories
    instance = Postfix(root, relayhost=relayhost, local_domains=local_domains, hostname=hostname, settings=settings)
    try:
        instance.start()
        yield instance
    except BaseException:
        print(f"--- postfix maillog ({root}) ---\n{instance.log_text()[-8000:]}")
        raise
    finally:
        instance.stop()
        shutil.rmtree(root, ignore_errors=True)
