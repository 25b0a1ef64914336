"""POP3 RETR throughput: mailwarden's POP3 server vs Dovecot's, same machine, same run.

    .venv/bin/python bench/pop3_retr.py [--messages 1000] [--size 50000] [--rounds 3]

Both servers get the same messages (text with dot-lines plus a base64 attachment, 76-character
lines) in a Maildir: mailwarden's as the gateway stores them (CRLF, through deliver/maildir.py),
Dovecot's as Dovecot stores them (LF). A warm-up session per server moves new/ to cur/ and lets
Dovecot build its index. Then each round logs in, RETRs every message one after the other (no
pipelining, as a mail program does) and QUITs without deleting; the rounds alternate between
the servers. The client reads raw bytes up to the terminating "." line, so the figures are the
servers' and not poplib's. Prints messages/s and MB/s (10^6 bytes of message) per round, the
best round per server, and the ratio. Needs root (the private Dovecot runs its mail processes
as `nobody`) and Dovecot 2.3 installed (scripts/install-system-packages.sh).
"""

from __future__ import annotations

import argparse
import base64
import os
import shutil
import socket
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT / "src"), str(ROOT)]

from tests.support.dovecot import MAIL_GROUP, MAIL_USER, running_dovecot  # noqa: E402
from tests.support.mailwarden import Mailwarden  # noqa: E402
from tests.support.net import free_port  # noqa: E402

from mailwarden.deliver.maildir import Maildirs, Target  # noqa: E402

USER, PASSWORD = "bench@example.test", "secret"


def make_message(n: int, size: int) -> bytes:
    """A message of about `size` bytes with CRLF line ends."""
    head = (
        f"From: Alice <alice@sender.test>\r\nTo: {USER}\r\nSubject: benchmark {n}\r\n"
        f"Message-ID: <bench{n}@sender.test>\r\nMIME-Version: 1.0\r\n"
        'Content-Type: multipart/mixed; boundary="b"\r\n\r\n--b\r\nContent-Type: text/plain\r\n\r\n'
        "A line.\r\n.a line that starts with a dot\r\n..\r\n--b\r\nContent-Type: application/octet-stream\r\n"
        "Content-Transfer-Encoding: base64\r\n\r\n"
    ).encode()
    tail = b"\r\n--b--\r\n"
    payload = base64.encodebytes(os.urandom(size * 3 // 4)).replace(b"\n", b"\r\n")
    return head + payload[: max(size - len(head) - len(tail), 0)].rstrip(b"\r\n") + tail


class Pop3:
    """A lean POP3 client: raw socket, reads each RETR answer up to its terminating line."""

    def __init__(self, port: int) -> None:
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=60)
        self.buffer = b""
        self.line()

    def _fill(self) -> None:
        data = self.sock.recv(1 << 20)
        if not data:
            raise ConnectionError("the server closed the connection")
        self.buffer += data

    def line(self) -> bytes:
        while b"\r\n" not in self.buffer:
            self._fill()
        line, _, self.buffer = self.buffer.partition(b"\r\n")
        if not line.startswith(b"+OK"):
            raise RuntimeError(f"server said {line!r}")
        return line

    def command(self, text: str) -> bytes:
        self.sock.sendall(text.encode() + b"\r\n")
        return self.line()

    def retr(self, number: int) -> int:
        """RETR a message; returns the bytes of its multi-line answer."""
        self.command(f"RETR {number}")
        while (end := self.buffer.find(b"\r\n.\r\n")) < 0:
            self._fill()
        size = end + 5
        self.buffer = self.buffer[size:]
        return size

    def login(self) -> int:
        self.command(f"USER {USER}")
        self.command(f"PASS {PASSWORD}")
        return int(self.command("STAT").split()[1])

    def quit(self) -> None:
        self.command("QUIT")
        self.sock.close()


def session(port: int, expected: int) -> tuple[float, int]:
    """One round: login, RETR all, QUIT; returns the seconds the RETRs took and the bytes received."""
    client = Pop3(port)
    count = client.login()
    if count != expected:
        raise RuntimeError(f"the server lists {count} messages, expected {expected}")
    received = 0
    started = time.perf_counter()
    for number in range(1, count + 1):
        received += client.retr(number)
    elapsed = time.perf_counter() - started
    client.quit()
    return elapsed, received


def fill_dovecot_maildir(maildir: Path, messages: list[bytes]) -> None:
    """Messages as Dovecot stores them (LF line ends), owned by its mail user."""
    for sub in ("cur", "new", "tmp"):
        (maildir / sub).mkdir(parents=True, exist_ok=True)
    for n, data in enumerate(messages):
        stored = data.replace(b"\r\n", b"\n")
        path = maildir / "new" / f"{1_700_000_000 + n}.M{n}P1.bench,S={len(stored)},W={len(data)}"
        path.write_bytes(stored)
    for directory, _, files in os.walk(maildir.parent):
        shutil.chown(directory, MAIL_USER, MAIL_GROUP)
        for name in files:
            shutil.chown(Path(directory) / name, MAIL_USER, MAIL_GROUP)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--messages", type=int, default=1000)
    parser.add_argument("--size", type=int, default=50_000, help="bytes per message")
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    messages = [make_message(n, args.size) for n in range(args.messages)]
    volume = sum(len(m) for m in messages)
    print(f"{args.messages} messages, {volume / 1e6:.1f} MB in total, {args.rounds} rounds per server")

    work = Path(tempfile.mkdtemp(prefix="mw-bench-pop3-"))
    pop3_port = free_port()
    mailwarden = Mailwarden(
        work / "mailwarden",
        {
            "pop3": {"listen": [f"127.0.0.1:{pop3_port}"], "allow_plaintext_auth": True},
            "log": {"level": "warning"},
        },
    )
    try:
        mailwarden.add_user(USER, PASSWORD)
        maildirs = Maildirs(mailwarden.maildir_root)
        for data in messages:
            maildirs.deliver([Target(USER)], lambda handle, data=data: handle.write(data))
        mailwarden.start()
        with running_dovecot({USER: PASSWORD}, auth_failure_delay=0) as dovecot:
            fill_dovecot_maildir(dovecot.maildir(USER), messages)
            servers: dict[str, Callable[[], tuple[float, int]]] = {
                "mailwarden": lambda: session(pop3_port, args.messages),
                "dovecot": lambda: session(dovecot.pop3_port, args.messages),
            }
            for run in servers.values():  # warm-up: new/ -> cur/, Dovecot's index, page cache
                run()
            best: dict[str, float] = {}
            for round_number in range(1, args.rounds + 1):
                for name, run in servers.items():
                    seconds, received = run()
                    best[name] = min(best.get(name, seconds), seconds)
                    print(
                        f"round {round_number} {name:<10} {args.messages / seconds:8.0f} msg/s "
                        f"{volume / seconds / 1e6:7.1f} MB/s ({seconds:.2f} s, {received / 1e6:.1f} MB on the wire)"
                    )
        print()
        for name, seconds in best.items():
            print(f"best {name:<10} {args.messages / seconds:8.0f} msg/s {volume / seconds / 1e6:7.1f} MB/s")
        print(f"ratio mailwarden/dovecot: {best['dovecot'] / best['mailwarden']:.2f}x (messages/s)")
    finally:
        mailwarden.stop()
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
