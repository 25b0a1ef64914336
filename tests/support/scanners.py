"""Real content scanners on free loopback ports under a private directory (shared/recipes §3-§5).

- `Clamd`: clamd with its own signature database - EICAR as an .ndb body signature and the MD5
  (.hdb) of clamav-testfiles' clam.exe, which also catches the packed and archived variants.
- `Spamd`: SpamAssassin's spamd with the shipped rules, no network tests, no Bayes.
- `Rspamd`: rspamd with a five-line TLD list (a fresh start takes under a second instead of nine)
  and every module that fetches maps or asks public DNS or fuzzy servers switched off.

Each runs in the foreground as our child, is stopped (and waited for) by `stop()`, and can be
`kill()`ed (SIGKILL) or `pause()`d (SIGSTOP, an unresponsive scanner) for fault tests.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from pathlib import Path

from tests.support.net import free_port, wait_port

EICAR = rb"X5O!P%@AP[4\PZX54(P^)7CC)7}$EICAR-STANDARD-ANTIVIRUS-TEST-FILE!$H+H*"
GTUBE = "XJS*C4JDBQADN1.NSBN3*2IDNEN*GTUBE-STANDARD-ANTI-UBE-TEST-EMAIL*C.34X"
CLAM_TESTFILES = Path("/usr/share/clamav-testfiles")


class _Daemon:
    name = "daemon"

    def __init__(self, root: Path) -> None:
        self.root = root
        self.root.mkdir(parents=True, exist_ok=True)
        self.port = free_port()
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def _spawn(self, argv: list[str]) -> None:
        with open(self.root / "stdout.log", "ab") as log:
            self.process = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)

    def _wait_ready(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            assert self.process is not None
            if self.process.poll() is not None:
                raise RuntimeError(f"{self.name} exited with {self.process.returncode}: {self.logs()}")
            if self.ready():
                return
            time.sleep(0.1)
        raise TimeoutError(f"{self.name} not ready after {timeout}s: {self.logs()}")

    def ready(self) -> bool:
        raise NotImplementedError

    def logs(self) -> str:
        texts = [p.read_text(errors="replace")[-3000:] for p in sorted(self.root.rglob("*.log")) if p.is_file()]
        return "\n".join(texts)

    def signal_group(self, sig: int) -> None:
        if self.process is not None and self.process.poll() is None:
            os.killpg(self.process.pid, sig)

    def pause(self) -> None:
        self.signal_group(signal.SIGSTOP)

    def resume(self) -> None:
        self.signal_group(signal.SIGCONT)

    def kill(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.signal_group(signal.SIGCONT)
            self.signal_group(signal.SIGKILL)
            self.process.wait(timeout=30)

    def stop(self) -> None:
        if self.process is None or self.process.poll() is not None:
            return
        self.signal_group(signal.SIGCONT)
        self.signal_group(signal.SIGTERM)
        try:
            self.process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            self.kill()


class Clamd(_Daemon):
    name = "clamd"

    def __init__(self, root: Path, *, stream_max: str = "30M") -> None:
        super().__init__(root)
        db = root / "db"
        db.mkdir(exist_ok=True)
        (db / "test.ndb").write_text(f"Eicar-Test-Signature:0:*:{EICAR.hex()}\n")
        clam = (CLAM_TESTFILES / "clam.exe").read_bytes()
        import hashlib

        (db / "test.hdb").write_text(f"{hashlib.md5(clam).hexdigest()}:{len(clam)}:ClamAV-Test-File\n")
        self.socket = root / "clamd.sock"
        self.conf = root / "clamd.conf"
        self.conf.write_text(
            f"DatabaseDirectory {db}\nTCPSocket {self.port}\nTCPAddr 127.0.0.1\nLocalSocket {self.socket}\n"
            f"LocalSocketMode 666\nForeground yes\nLogFile {root / 'clamd.log'}\nLogTime yes\n"
            f"PidFile {root / 'clamd.pid'}\nConcurrentDatabaseReload no\nSelfCheck 0\n"
            f"StreamMaxLength {stream_max}\nMaxThreads 4\n"
        )

    def start(self) -> Clamd:
        self._spawn(["clamd", "-c", str(self.conf)])
        self._wait_ready(60)
        return self

    def ready(self) -> bool:
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=1) as sock:
                sock.sendall(b"zPING\0")
                return sock.recv(16).startswith(b"PONG")
        except OSError:
            return False


class Spamd(_Daemon):
    name = "spamd"

    def __init__(self, root: Path) -> None:
        super().__init__(root)
        # spamd's children run as nobody and must read the rules: pytest's tmp dirs are private (0700)
        self.shared = Path(tempfile.mkdtemp(prefix="mailwarden-spamd-"))
        self.shared.chmod(0o755)
        etc, home = self.shared / "etc", self.shared / "home"
        etc.mkdir()
        home.mkdir()
        shutil.chown(home, "nobody", "nogroup")
        for pre in Path("/etc/spamassassin").glob("*.pre"):  # the plugin loaders; without them: "cannot scan!"
            shutil.copy(pre, etc)
        (etc / "local.cf").write_text(
            "required_score 5.0\nuse_bayes 0\nbayes_auto_learn 0\nskip_rbl_checks 1\ndns_available no\n"
        )

    def start(self) -> Spamd:
        self._spawn(
            [
                "spamd",
                f"--listen=127.0.0.1:{self.port}",
                "--allowed-ips=127.0.0.1",
                "--local",
                "--nouser-config",
                "--username=nobody",
                "--groupname=nogroup",
                f"--helper-home-dir={self.shared / 'home'}",
                f"--siteconfigpath={self.shared / 'etc'}",
                "--max-children=2",
                "--min-children=1",
                f"--syslog={self.root / 'spamd.log'}",
                f"--pidfile={self.root / 'spamd.pid'}",
            ]
        )
        self._wait_ready(120)
        return self

    def ready(self) -> bool:
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=5) as sock:
                sock.settimeout(30)
                sock.sendall(b"PING SPAMC/1.5\r\n\r\n")
                return sock.recv(64).startswith(b"SPAMD/")
        except OSError:
            return False

    def stop(self) -> None:
        super().stop()
        shutil.rmtree(self.shared, ignore_errors=True)


class Rspamd(_Daemon):
    name = "rspamd"
    DISABLED = ("fuzzy_check", "rbl", "phishing", "multimap", "whitelist", "asn", "url_redirector", "emails")

    def __init__(self, root: Path) -> None:
        super().__init__(root)
        self.controller_port = free_port()
        self.proxy_port = free_port()
        etc = root / "etc"
        for sub in ("etc/local.d", "etc/override.d", "db", "run", "log"):
            (root / sub).mkdir(parents=True, exist_ok=True)
        for sub in ("db", "run", "log"):
            shutil.chown(root / sub, "_rspamd", "_rspamd")
        override = etc / "override.d"
        (override / "worker-normal.inc").write_text(f'bind_socket = "127.0.0.1:{self.port}";\ncount = 1;\n')
        (override / "worker-controller.inc").write_text(
            f'bind_socket = "127.0.0.1:{self.controller_port}";\ncount = 1;\npassword = "q1";\nsecure_ip = "127.0.0.1";\n'
        )
        (override / "worker-proxy.inc").write_text(f'bind_socket = "127.0.0.1:{self.proxy_port}";\ncount = 1;\n')
        (etc / "tld.dat").write_text("com\nnet\norg\ntest\nexample\n")
        (etc / "local.d" / "options.inc").write_text(
            'dns {\n  nameserver = ["127.0.0.1:9"];\n  timeout = 0.2s;\n  retransmits = 1;\n}\n'
            f'local_addrs = [127.0.0.0/8];\nurl_tld = "{etc / "tld.dat"}";\n'
        )
        (etc / "local.d" / "logging.inc").write_text(
            f'type = "file";\nfilename = "{root}/log/rspamd.log";\nlevel = "info";\n'
        )
        for module in self.DISABLED:
            (etc / "local.d" / f"{module}.conf").write_text("enabled = false;\n")

    def start(self) -> Rspamd:
        root = self.root
        self._spawn(
            [
                "rspamd",
                "-f",
                "-u",
                "_rspamd",
                "-g",
                "_rspamd",
                "-c",
                "/etc/rspamd/rspamd.conf",
                f"--var=LOCAL_CONFDIR={root / 'etc'}",
                f"--var=DBDIR={root / 'db'}",
                f"--var=RUNDIR={root / 'run'}",
                f"--var=LOGDIR={root / 'log'}",
            ]
        )
        wait_port(self.port, timeout=90)
        self._wait_ready(90)
        return self

    def ready(self) -> bool:
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=2) as sock:
                sock.settimeout(10)
                sock.sendall(b"GET /ping HTTP/1.0\r\n\r\n")
                return b"pong" in sock.recv(4096)
        except OSError:
            return False
