"""A realistic mixed Postfix + Dovecot mail log, built from real line shapes, for the ingest benchmark.

    .venv/bin/python -m bench.ingest_log OUTPUT [--size-mb 1024] [--seed 1]

Two MX hosts run Postfix with postscreen in front and deliver by LMTP to Dovecot on the same host;
mail users fetch by POP3 (RETR, DELE) and IMAP. The mix per 100 connections is roughly what an
inbound MX sees: about 40 refused before the queue (DNSBL at postscreen, unknown users, relay
attempts, greylisting), 55 accepted and delivered (a few to two recipients), a few deferred or
bounced, plus the Dovecot lines for every delivery and the mailbox accesses, failed logins and
noise (TLS set-up, anvil statistics). Time runs forward one classic syslog stamp at a time.
Every shape is one that shared/recipes or shared/corpora shows from a real Postfix 3.7 or Dovecot 2.3.
"""

from __future__ import annotations

import argparse
import random
import string
import time
from collections.abc import Callable
from pathlib import Path

_B64 = string.ascii_letters + string.digits + "+/"
# Processes per Postfix daemon (smtpd up to default_process_limit; one postscreen and qmgr).
_POOLS = {"smtpd": 40, "postscreen": 1, "dnsblog": 4, "cleanup": 8, "lmtp": 8, "smtp": 8, "pickup": 1, "bounce": 2}
_MONTHS = ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")


class Generator:
    def __init__(self, seed: int) -> None:
        self.rng = random.Random(seed)
        self.now = time.mktime((2026, 3, 1, 0, 0, 0, 0, 0, -1))
        self.pid = 1000
        self.pools: dict[str, list[int]] = {}
        self.lines: list[str] = []

    # ------------------------------------------------------------------ helpers
    def stamp(self) -> str:
        moment = time.localtime(self.now)
        return f"{_MONTHS[moment.tm_mon - 1]} {moment.tm_mday:2d} {time.strftime('%H:%M:%S', moment)}"

    def tick(self) -> None:
        self.now += self.rng.random() * 0.02

    def emit(self, host: str, program: str, pid: int, text: str) -> None:
        tag = f"{program}[{pid}]" if pid else program  # Dovecot logs to syslog as `dovecot:`, without pid
        self.lines.append(f"{self.stamp()} {host} {tag}: {text}\n")
        self.tick()

    def qid(self) -> str:
        return "".join(self.rng.choices("0123456789ABCDEF", k=11))

    def session(self) -> str:
        return "".join(self.rng.choices(_B64, k=16))

    def client(self) -> tuple[str, str]:
        ip = f"{self.rng.randint(2, 223)}.{self.rng.randint(0, 255)}.{self.rng.randint(0, 255)}.{self.rng.randint(1, 254)}"
        name = self.rng.choice(("unknown", f"mail{self.rng.randint(1, 99)}.example{self.rng.randint(1, 999)}.com"))
        return name, ip

    def user(self) -> str:
        return f"user{self.rng.randint(1, 5000)}@example.test"

    def sender(self) -> str:
        return f"news{self.rng.randint(1, 9999)}@sender{self.rng.randint(1, 999)}.example"

    def next_pid(self) -> int:
        self.pid = self.pid % 4_000_000 + self.rng.randint(1, 7)
        return self.pid

    def pid_of(self, daemon: str) -> int:
        """A process of Postfix's pool for `daemon`; master.cf's max_use retires one after ~100 uses."""
        pool = self.pools.setdefault(daemon, [self.next_pid() for _ in range(_POOLS.get(daemon, 4))])
        slot = self.rng.randrange(len(pool))
        if self.rng.random() < 0.01:
            pool[slot] = self.next_pid()
        return pool[slot]

    # ------------------------------------------------------------------ scenes
    def postscreen_reject(self, host: str) -> None:
        ps, dnsblog = self.pid_of("postscreen"), self.pid_of("dnsblog")
        _, ip = self.client()
        port = self.rng.randint(1024, 65000)
        self.emit(host, "postfix/postscreen", ps, f"CONNECT from [{ip}]:{port} to [192.0.2.25]:25")
        self.emit(host, "postfix/dnsblog", dnsblog, f"addr {ip} listed by domain zen.spamhaus.org as 127.0.0.4")
        self.emit(host, "postfix/postscreen", ps, f"DNSBL rank 3 for [{ip}]:{port}")
        self.emit(
            host,
            "postfix/postscreen",
            ps,
            f"NOQUEUE: reject: RCPT from [{ip}]:{port}: 550 5.7.1 Service unavailable; client [{ip}] blocked using "
            f"zen.spamhaus.org; from=<{self.sender()}>, to=<{self.user()}>, proto=ESMTP, helo=<{self.client()[0]}>",
        )
        self.emit(host, "postfix/postscreen", ps, f"DISCONNECT [{ip}]:{port}")

    def smtpd_reject(self, host: str) -> None:
        pid = self.pid_of("smtpd")
        name, ip = self.client()
        self.emit(host, "postfix/smtpd", pid, f"connect from {name}[{ip}]")
        reply = self.rng.choice(
            (
                "550 5.1.1 <{rcpt}>: Recipient address rejected: User unknown in virtual mailbox table",
                "454 4.7.1 <{rcpt}>: Relay access denied",
                "450 4.7.1 <{rcpt}>: Recipient address rejected: Greylisted, see http://postgrey.schweikert.ch/",
                "504 5.5.2 <{helo}>: Helo command rejected: need fully-qualified hostname",
            )
        )
        rcpt, helo = self.user(), f"WIN-{self.rng.randint(1000, 9999)}"
        self.emit(
            host,
            "postfix/smtpd",
            pid,
            f"NOQUEUE: reject: RCPT from {name}[{ip}]: {reply.format(rcpt=rcpt, helo=helo)}; from=<{self.sender()}> "
            f"to=<{rcpt}> proto=ESMTP helo=<{helo}>",
        )
        self.emit(
            host, "postfix/smtpd", pid, f"disconnect from {name}[{ip}] ehlo=1 mail=1 rcpt=0/1 quit=1 commands=3/4"
        )

    def delivery(self, host: str) -> None:
        pid, cleanup, qmgr, lmtp = self.pid_of("smtpd"), self.pid_of("cleanup"), 900, self.pid_of("lmtp")
        name, ip = self.client()
        queue_id = self.qid()
        msgid = (
            f"<{self.rng.getrandbits(64):x}.{self.rng.randint(1, 99999)}@{name if name != 'unknown' else 'mx.example'}>"
        )
        sender = self.sender()
        recipients = [self.user() for _ in range(self.rng.choice((1, 1, 1, 2)))]
        self.emit(
            host, "postfix/postscreen", self.pid_of("postscreen"), f"PASS OLD [{ip}]:{self.rng.randint(1024, 65000)}"
        )
        self.emit(host, "postfix/smtpd", pid, f"connect from {name}[{ip}]")
        self.emit(
            host,
            "postfix/smtpd",
            pid,
            f"Anonymous TLS connection established from {name}[{ip}]: TLSv1.3 with cipher TLS_AES_256_GCM_SHA384 (256/256 bits)",
        )
        self.emit(host, "postfix/smtpd", pid, f"{queue_id}: client={name}[{ip}]")
        self.emit(host, "postfix/cleanup", cleanup, f"{queue_id}: message-id={msgid}")
        size = self.rng.randint(2_000, 300_000)
        self.emit(
            host,
            "postfix/qmgr",
            qmgr,
            f"{queue_id}: from=<{sender}>, size={size}, nrcpt={len(recipients)} (queue active)",
        )
        self.emit(
            host,
            "postfix/smtpd",
            pid,
            f"disconnect from {name}[{ip}] ehlo=2 starttls=1 mail=1 rcpt={len(recipients)} data=1 quit=1 commands={6 + len(recipients)}",
        )
        fate = self.rng.random()
        for rcpt in recipients:
            dovecot_session = self.session() + "AAAg+zDdQ"[: self.rng.randint(6, 6)]
            if fate < 0.03:
                self.emit(
                    host,
                    "postfix/lmtp",
                    lmtp,
                    f"{queue_id}: to=<{rcpt}>, relay={host}.example.test[private/dovecot-lmtp], delay=0.3, "
                    f"delays=0.1/0/0.1/0.1, dsn=4.2.2, status=deferred (host {host}.example.test[private/dovecot-lmtp] "
                    f"said: 452 4.2.2 <{rcpt}> Quota exceeded (mailbox for user is full) (in reply to end of DATA command))",
                )
                continue
            self.emit(
                host,
                "dovecot",
                0,
                f"lmtp({rcpt})<{lmtp}><{dovecot_session}>: msgid={msgid}: saved mail to INBOX",
            )
            self.emit(
                host,
                "postfix/lmtp",
                lmtp,
                f"{queue_id}: to=<{rcpt}>, relay={host}.example.test[private/dovecot-lmtp], delay=0.{self.rng.randint(10, 99)}, "
                f"delays=0.05/0.01/0.02/0.1, dsn=2.0.0, status=sent (250 2.0.0 <{rcpt}> {dovecot_session} Saved)",
            )
        self.emit(host, "postfix/qmgr", qmgr, f"{queue_id}: removed")

    def bounce(self, host: str) -> None:
        queue_id, child = self.qid(), self.qid()
        rcpt = f"gone{self.rng.randint(1, 999)}@remote{self.rng.randint(1, 99)}.example"
        self.emit(host, "postfix/pickup", self.pid_of("pickup"), f"{queue_id}: uid=33 from=<www-data>")
        self.emit(
            host, "postfix/cleanup", self.pid_of("cleanup"), f"{queue_id}: message-id=<{queue_id}@{host}.example.test>"
        )
        self.emit(
            host,
            "postfix/qmgr",
            900,
            f"{queue_id}: from=<www-data@{host}.example.test>, size=1200, nrcpt=1 (queue active)",
        )
        self.emit(
            host,
            "postfix/smtp",
            self.pid_of("smtp"),
            f"{queue_id}: to=<{rcpt}>, relay=mx.remote.example[198.51.100.7]:25, delay=1.2, delays=0.01/0/0.9/0.3, "
            f"dsn=5.1.1, status=bounced (host mx.remote.example[198.51.100.7] said: 550 5.1.1 <{rcpt}>: Recipient "
            f"address rejected: User unknown in local recipient table (in reply to RCPT TO command))",
        )
        self.emit(
            host,
            "postfix/cleanup",
            self.pid_of("cleanup"),
            f"{child}: message-id=<20260301.{child}@{host}.example.test>",
        )
        self.emit(
            host, "postfix/bounce", self.pid_of("bounce"), f"{queue_id}: sender non-delivery notification: {child}"
        )
        self.emit(host, "postfix/qmgr", 900, f"{queue_id}: removed")

    def pop3(self, host: str) -> None:
        user, session, mpid = self.user(), self.session(), self.next_pid()
        _, ip = self.client()
        self.emit(
            host,
            "dovecot",
            0,
            f"pop3-login: Login: user=<{user}>, method=PLAIN, rip={ip}, lip=192.0.2.25, mpid={mpid}, TLS, session=<{session}>",
        )
        count = self.rng.randint(0, 3)
        for uid in range(1, count + 1):
            self.emit(
                host,
                "dovecot",
                0,
                f"pop3({user})<{mpid}><{session}>: expunge: box=INBOX, uid={uid}, msgid=<{self.rng.getrandbits(48):x}@example>, size={self.rng.randint(2000, 90000)}",
            )
        self.emit(
            host,
            "dovecot",
            0,
            f"pop3({user})<{mpid}><{session}>: Disconnected: Logged out top=0/0, retr={count}/{count * 30000}, del={count}/{count + 2}, size={count * 30000}",
        )

    def imap_and_noise(self, host: str) -> None:
        user, session, mpid = self.user(), self.session(), self.next_pid()
        _, ip = self.client()
        self.emit(
            host,
            "dovecot",
            0,
            f"imap-login: Disconnected (auth failed, 1 attempts in 2 secs): user=<{user}>, method=PLAIN, rip={ip}, "
            f"lip=192.0.2.25, TLS, session=<{self.session()}>",
        )
        self.emit(
            host,
            "dovecot",
            0,
            f"imap-login: Login: user=<{user}>, method=PLAIN, rip={ip}, lip=192.0.2.25, mpid={mpid}, TLS, session=<{session}>",
        )
        self.emit(
            host,
            "dovecot",
            0,
            f"imap({user})<{mpid}><{session}>: Logged out in=412 out=9911 deleted=0 expunged=0 trashed=0 hdr_count=3 "
            f"hdr_bytes=2301 body_count=1 body_bytes=4011",
        )
        self.emit(
            host,
            "postfix/anvil",
            901,
            "statistics: max connection rate 3/60s for (smtp:203.0.113.9) at Mar  1 00:00:00",
        )

    def run(self, size: int, out: Path) -> int:
        scenes: list[tuple[float, Callable[[str], None]]] = [
            (0.25, self.postscreen_reject),
            (0.15, self.smtpd_reject),
            (0.35, self.delivery),
            (0.02, self.bounce),
            (0.15, self.pop3),
            (0.08, self.imap_and_noise),
        ]
        weights = [weight for weight, _ in scenes]
        actions = [action for _, action in scenes]
        written = lines = 0
        with out.open("w") as handle:
            while written < size:
                for action in self.rng.choices(actions, weights, k=500):
                    action(self.rng.choice(("mx1", "mx2")))
                chunk = "".join(self.lines)
                handle.write(chunk)
                written += len(chunk.encode())
                lines += len(self.lines)
                self.lines.clear()
        return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("output", type=Path)
    parser.add_argument("--size-mb", type=int, default=1024)
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args()
    lines = Generator(args.seed).run(args.size_mb * 1_000_000, args.output)
    print(f"wrote {lines:,} lines ({args.output.stat().st_size / 1e6:,.0f} MB) to {args.output}")


if __name__ == "__main__":
    main()
