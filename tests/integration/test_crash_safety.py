"""250 means on disk: SIGKILL at random moments while 20 clients send loses no acknowledged message.

Afterwards every message whose client saw 250 is in the Maildir, byte for byte, with its
events (accept and deliver, with the ref of the reply), and after the restart's recovery no
file is left in tmp/. Messages that did not get 250 may or may not be there (the sender retries).
"""

from __future__ import annotations

import random
import re
import smtplib
import threading
import time
from pathlib import Path

import pytest

from tests.support.mailwarden import Mailwarden

pytestmark = pytest.mark.integration

CLIENTS = 20
KILLS = 4
BOB = "bob@example.test"
REF = re.compile(rb"^X-Mailwarden-Ref: ([0-9A-Z]{12})\r$", re.M)


def message(client: int, number: int, rng: random.Random) -> bytes:
    size = rng.choice((200, 5_000, 60_000, 1_200_000 if rng.random() < 0.02 else 20_000))
    line = f"client {client} message {number} ".encode().ljust(76, b"=") + b"\r\n"
    return (
        f"From: client{client}@sender.test\r\nSubject: crash test {client}/{number}\r\n"
        f"Message-ID: <{client}.{number}@sender.test>\r\n\r\n".encode()
        + line * (size // len(line) + 1)
    )


def sender(port: int, client: int, seed: int, stop: threading.Event, acknowledged: list[tuple[str, bytes]]) -> None:
    rng = random.Random(seed * 100 + client)
    number = 0
    while not stop.is_set():
        number += 1
        content = message(client, number, rng)
        try:
            with smtplib.SMTP("127.0.0.1", port, timeout=30) as smtp:
                smtp.ehlo("client.sender.test")
                smtp.mail(f"client{client}@sender.test")
                smtp.rcpt(BOB)
                code, text = smtp.data(content)
        except (OSError, smtplib.SMTPException):
            time.sleep(0.05)  # the server is down or went down mid-way: nothing was promised
            continue
        if code == 250:
            found = re.search(rb"ref=([0-9A-Z]{12})", text)
            assert found is not None, text
            acknowledged.append((found.group(1).decode(), content))


def stored_by_ref(server: Mailwarden) -> dict[str, bytes]:
    out: dict[str, bytes] = {}
    for raw in server.messages(BOB):
        head = raw[:2000]
        found = REF.search(head)
        assert found is not None, head[:300]
        out[found.group(1).decode()] = raw
    return out


def tmp_files(server: Mailwarden) -> list[Path]:
    return list((server.maildir(BOB) / "tmp").iterdir())


def test_sigkill_while_20_clients_send_loses_no_message_that_got_250(tmp_path: Path) -> None:
    seed = int(time.time())
    rng = random.Random(seed)
    server = Mailwarden(tmp_path / "mw", {"smtp": {"max_connections_per_ip": 100}})
    server.add_user(BOB)
    acknowledged: list[tuple[str, bytes]] = []
    stop = threading.Event()
    clients = [
        threading.Thread(target=sender, args=(server.smtp_port, n, seed, stop, acknowledged), daemon=True)
        for n in range(CLIENTS)
    ]
    server.start()
    try:
        for thread in clients:
            thread.start()
        for _ in range(KILLS):
            time.sleep(rng.uniform(0.5, 2.5))
            server.kill()
            server.start()  # recovery runs before the first connection is accepted
        time.sleep(rng.uniform(0.5, 2.5))
        server.kill()  # the last one while clients are still sending
        stop.set()
        for thread in clients:
            thread.join(timeout=60)
        server.start()
        assert tmp_files(server) == [], f"seed {seed}: recovery left files in tmp/"
    finally:
        stop.set()
        server.stop()

    assert len(acknowledged) > CLIENTS, f"seed {seed}: too few messages got through to show anything"
    stored = stored_by_ref(server)
    events = server.events()
    accepted = {e["ref"] for e in events if e["kind"] == "accept" and e["smtp_code"] == 250}
    delivered = {e["ref"] for e in events if e["kind"] == "deliver" and e["recipient"] == BOB}
    for ref, content in acknowledged:
        assert ref in stored, f"seed {seed}: message {ref} got 250 but is not in the Maildir"
        copy = stored[ref]
        assert copy.endswith(content), f"seed {seed}: message {ref} is not intact"
        ours = copy[: len(copy) - len(content)]
        assert ours.startswith(b"Received: ") and ours.count(b"\r\nX-Mailwarden-Ref: ") == 1
        assert ref in accepted, f"seed {seed}: message {ref} got 250 but its accept event is missing"
        assert ref in delivered, f"seed {seed}: message {ref} got 250 but its deliver event is missing"
