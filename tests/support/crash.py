"""Crashing a real gateway under load and counting what survived (tests/integration/test_crash_safety.py, bench/).

`Senders` keeps many clients sending one message per connection and remembers every 250 with
its ref; `hold_links` runs the server under strace so each Maildir link returns late - a crash
then finds messages in new/ whose events are not committed yet; `figures` compares what the
clients were told with the Maildir and the events.
"""

from __future__ import annotations

import random
import re
import smtplib
import threading
import time
from collections import Counter
from collections.abc import Container
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tests.support.mailwarden import Mailwarden

BOB = "bob@example.test"
REF_FIELD = re.compile(rb"^X-Mailwarden-Ref: ([0-9A-Z]{12})\r$", re.M)
MESSAGE_ID = re.compile(rb"^Message-ID: (<[0-9]+\.[0-9]+@sender\.test>)\r$", re.M)
HEAD = 4096  # our trace fields are at the top of a delivered file


def hold_links(delay: str) -> list[str]:
    """strace options that let every linkat() (the Maildir link) return only after `delay` ("50ms", "3600s").

    Between the link and the commit of the message's events is the window a crash must not hide.
    """
    return [
        "strace",
        "-f",
        "--seccomp-bpf",
        "-o",
        "/dev/null",
        "-e",
        "trace=linkat",
        "-e",
        f"inject=linkat:delay_exit={delay}",
    ]


def message(client: int, number: int, rng: random.Random) -> bytes:
    size = rng.choice((200, 5_000, 60_000, 1_200_000 if rng.random() < 0.02 else 20_000))
    line = f"client {client} message {number} ".encode().ljust(76, b"=") + b"\r\n"
    return (
        f"From: client{client}@sender.test\r\nSubject: crash test {client}/{number}\r\n"
        f"Message-ID: <{client}.{number}@sender.test>\r\n\r\n".encode()
        + line * (size // len(line) + 1)
    )


@dataclass
class Senders:
    """`clients` threads, each sending one message per connection to BOB until stopped; every 250 is kept."""

    port: int
    clients: int
    seed: int
    acknowledged: dict[str, bytes] = field(default_factory=dict)  # ref of the 250 -> the content sent
    _stop: threading.Event = field(default_factory=threading.Event)
    _threads: list[threading.Thread] = field(default_factory=list)

    def start(self) -> None:
        self._threads = [threading.Thread(target=self._send, args=(n,), daemon=True) for n in range(self.clients)]
        for thread in self._threads:
            thread.start()

    def wait_for_acknowledged(self, more: int, timeout: float = 120.0) -> None:
        """Wait until `more` further messages got their 250."""
        wanted = len(self.acknowledged) + more
        deadline = time.monotonic() + timeout
        while len(self.acknowledged) < wanted:
            if time.monotonic() > deadline:
                raise TimeoutError(f"only {len(self.acknowledged)} of {wanted} messages got 250 within {timeout}s")
            time.sleep(0.01)

    def stop(self) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(timeout=60)

    def _send(self, client: int) -> None:
        rng = random.Random(self.seed * 100 + client)
        number = 0
        while not self._stop.is_set():
            number += 1
            content = message(client, number, rng)
            try:
                with smtplib.SMTP("127.0.0.1", self.port, timeout=30) as smtp:
                    smtp.ehlo("client.sender.test")
                    smtp.mail(f"client{client}@sender.test")
                    smtp.rcpt(BOB)
                    code, text = smtp.data(content)
            except (OSError, smtplib.SMTPException):
                time.sleep(0.05)  # the server is down or went down mid-way: nothing was promised
                continue
            if code == 250:
                # An assert here would only end this client's thread, unseen by the test: a 250 whose ref
                # cannot be read is kept under its text, which `figures` can never find in the Maildir.
                found = re.search(rb"ref=([0-9A-Z]{12})", text)
                ref = found.group(1).decode() if found else f"250 without a ref: {text.decode(errors='replace')}"
                self.acknowledged[ref] = content


def ref_of(path: Path) -> str | None:
    """The ref in a delivered file's X-Mailwarden-Ref field (None when it is gone meanwhile)."""
    try:
        with path.open("rb") as handle:
            found = REF_FIELD.search(handle.read(HEAD))
    except FileNotFoundError:
        return None
    return found.group(1).decode() if found else None


def wait_for_unacknowledged(
    server: Mailwarden, acknowledged: Container[str], seen: set[str], timeout: float = 120.0
) -> str:
    """Wait until new/ holds a file whose ref is not `acknowledged` (its events are not committed); its name.

    `seen` keeps the names already looked at, across calls.
    """
    new = server.maildir(BOB) / "new"
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for path in new.iterdir() if new.is_dir() else []:
            if path.name in seen:
                continue
            ref = ref_of(path)
            seen.add(path.name)
            if ref is not None and ref not in acknowledged:
                return path.name
        time.sleep(0.01)
    raise TimeoutError(f"no message in {new} waited for its commit within {timeout}s")


@dataclass
class Figures:
    """What survived: the clients' 250s against the Maildir and the events, after the restart's reconciliation."""

    acknowledged: int  # 250s the clients received
    files: int  # messages in the mailbox
    with_events: int  # of them, with a deliver event for their copy
    unconfirmed: int  # of them, recorded at start as delivered.unconfirmed (their sender got no 250)
    without_events: list[str]  # files without a deliver event: must be none
    acknowledged_missing: list[str]  # refs that got 250 but whose file, content or accept/deliver events are missing
    twice: list[str]  # messages in the mailbox more than once, copies recorded twice: must be none

    def line(self) -> str:
        return (
            f"250s received {self.acknowledged}, files found {self.files}, files with events {self.with_events} "
            f"(recorded at restart as delivered.unconfirmed {self.unconfirmed}), files without events "
            f"{len(self.without_events)}, acknowledged but missing {len(self.acknowledged_missing)}, "
            f"delivered or recorded twice {len(self.twice)}"
        )


def figures(server: Mailwarden, acknowledged: dict[str, bytes]) -> Figures:
    directory = server.maildir(BOB)
    paths = sorted((directory / "new").glob("*")) + sorted((directory / "cur").glob("*"))
    events = server.events()
    recorded = [e for e in events if e["kind"] == "deliver" and e["recipient"] == BOB]
    deliveries: dict[str, dict[str, Any]] = {e["detail"]["uid"]: e for e in recorded}
    twice = [uid for uid, n in Counter(e["detail"]["uid"] for e in recorded).items() if n > 1]
    accepted = {e["ref"] for e in events if e["kind"] == "accept" and e["smtp_code"] == 250}
    stored: dict[str, bytes] = {}
    without: list[str] = []
    message_ids: Counter[str] = Counter()
    for path in paths:
        content = path.read_bytes()
        found = REF_FIELD.search(content[:HEAD])
        assert found is not None, content[:300]
        sent_as = MESSAGE_ID.search(content[:HEAD])  # each message is sent once, never again
        if sent_as is not None:
            message_ids[sent_as.group(1).decode()] += 1
        stored[found.group(1).decode()] = content
        uid = path.name.partition(":")[0]
        if uid not in deliveries or deliveries[uid]["ref"] != found.group(1).decode():
            without.append(path.name)
    missing = [
        ref
        for ref, content in acknowledged.items()
        if ref not in stored
        or not stored[ref].endswith(content)
        or not stored[ref].startswith(b"Received: ")
        or ref not in accepted
    ]
    unconfirmed = sum(1 for e in deliveries.values() if e["reason"] == "delivered.unconfirmed")
    twice += [message_id for message_id, n in message_ids.items() if n > 1]
    return Figures(len(acknowledged), len(paths), len(paths) - len(without), unconfirmed, without, missing, twice)
