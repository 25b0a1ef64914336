"""250 means on disk, and no crash hides a delivered message: SIGKILLs while clients send, then restarts.

Every message whose client saw 250 is in the Maildir, byte for byte, with its events (accept and
deliver, with the ref of the reply), and after the restart's recovery no file is left in tmp/.
With SMTP workers, SIGKILLs hit single workers (the supervisor restarts them while the others go on)
and the supervisor itself (its workers die with it); none of it may deliver or record a message twice.
Messages that did not get 250 may or may not be there (the sender retries) - but every one that
is there has its deliver event after the restart: one killed between the Maildir link and the
commit of its events is recorded as `delivered.unconfirmed` (delivered, the sender got no
reply, it may arrive twice), so `trace` and `explain` never deny what a mailbox holds.
"""

from __future__ import annotations

import json
import os
import random
import signal
import smtplib
import threading
import time
from pathlib import Path

import pytest

from tests.support.crash import BOB, Senders, figures, hold_links, ref_of, wait_for_unacknowledged
from tests.support.mailwarden import Mailwarden

pytestmark = pytest.mark.integration

CLIENTS = 20
KILLS = 4
ACKNOWLEDGED_BETWEEN_KILLS = 20


def test_sigkill_while_20_clients_send_loses_no_message_that_got_250(tmp_path: Path) -> None:
    seed = int(time.time())
    rng = random.Random(seed)
    server = Mailwarden(tmp_path / "mw", {"smtp": {"max_connections_per_ip": 100}})
    server.add_user(BOB)
    senders = Senders(server.smtp_port, CLIENTS, seed)
    server.start()
    try:
        senders.start()
        for _ in range(KILLS):
            time.sleep(rng.uniform(0.5, 2.5))
            server.kill()
            server.start()  # recovery runs before the first connection is accepted
        time.sleep(rng.uniform(0.5, 2.5))
        server.kill()  # the last one while clients are still sending
        senders.stop()
        server.start()
        assert list((server.maildir(BOB) / "tmp").iterdir()) == [], f"seed {seed}: recovery left files in tmp/"
    finally:
        senders.stop()
        server.stop()

    assert len(senders.acknowledged) > CLIENTS, f"seed {seed}: too few messages got through to show anything"
    found = figures(server, senders.acknowledged)
    assert found.acknowledged_missing == [], f"seed {seed}: got 250 but not intact on disk with accept/deliver events"
    assert found.without_events == [], f"seed {seed}: files in the Maildir without their deliver event"


def test_sigkills_to_workers_and_to_the_supervisor_under_load_lose_nothing_and_deliver_nothing_twice(
    tmp_path: Path,
) -> None:
    seed = int(time.time())
    rng = random.Random(seed)
    server = Mailwarden(tmp_path / "mw", {"smtp": {"max_connections_per_ip": 100, "workers": 2}})
    server.add_user(BOB)
    senders = Senders(server.smtp_port, CLIENTS, seed)
    killed = []
    server.start()
    try:
        senders.start()
        for _ in range(KILLS * 2):
            senders.wait_for_acknowledged(rng.randint(1, ACKNOWLEDGED_BETWEEN_KILLS))
            workers = server.worker_pids()
            if rng.random() < 0.7 and workers:  # a worker: the supervisor restarts it, the other serves on
                os.kill(rng.choice(workers), signal.SIGKILL)
                killed.append("worker")
            else:  # the supervisor: its workers die with it
                server.kill()
                server.start()
                killed.append("supervisor")
        senders.stop()
        server.kill()
        server.start()  # the last recovery: every journal
        assert list((server.maildir(BOB) / "tmp").iterdir()) == [], f"seed {seed}: recovery left files in tmp/"
    finally:
        senders.stop()
        server.stop()

    found = figures(server, senders.acknowledged)
    print(f"\ncrash figures (seed {seed}, kills {', '.join(killed)}): {found.line()}")
    assert len(senders.acknowledged) > CLIENTS, f"seed {seed}: too few messages got through to show anything"
    assert found.acknowledged_missing == [], f"seed {seed}: got 250 but not intact on disk with accept/deliver events"
    assert found.without_events == [], f"seed {seed}: files in the Maildir without their deliver event"
    assert found.twice == [], f"seed {seed}: delivered or recorded twice"


def test_sigkills_inside_the_link_commit_window_under_load_leave_no_file_without_its_events(tmp_path: Path) -> None:
    """Each kill waits for a message that is in new/ but not yet acknowledged: the window is hit every time."""
    seed = int(time.time())
    server = Mailwarden(tmp_path / "mw", {"smtp": {"max_connections_per_ip": 100}})
    server.add_user(BOB)
    senders = Senders(server.smtp_port, CLIENTS, seed)
    seen: set[str] = set()
    server.start(wrapper=hold_links("20ms"))
    try:
        senders.start()
        for kill in range(KILLS + 1):
            senders.wait_for_acknowledged(ACKNOWLEDGED_BETWEEN_KILLS)
            wait_for_unacknowledged(server, senders.acknowledged, seen)
            server.kill()
            if kill < KILLS:
                server.start(wrapper=hold_links("20ms"))  # the restart reconciles before accepting mail
        senders.stop()
        server.start()
    finally:
        senders.stop()
        server.stop()

    found = figures(server, senders.acknowledged)
    print(f"\ncrash figures (seed {seed}, {KILLS + 1} kills inside the window): {found.line()}")
    assert found.acknowledged_missing == [], f"seed {seed}: got 250 but not intact on disk with accept/deliver events"
    assert found.without_events == [], f"seed {seed}: files in the Maildir without their deliver event"
    assert found.twice == [], f"seed {seed}: delivered or recorded twice"
    assert found.unconfirmed >= 1, f"seed {seed}: no kill hit the window between link and commit"


def test_a_message_in_the_mailbox_whose_commit_a_crash_prevented_is_traced_as_delivered_unconfirmed(
    tmp_path: Path,
) -> None:
    server = Mailwarden(tmp_path / "mw")
    server.add_user(BOB)
    outcome: list[object] = []

    def send() -> None:
        try:
            with smtplib.SMTP("127.0.0.1", server.smtp_port, timeout=600) as client:
                client.ehlo("client.sender.test")
                client.mail("alice@sender.test")
                client.rcpt(BOB)
                outcome.append(client.data(b"Subject: held\r\nMessage-ID: <held@sender.test>\r\n\r\nHello.\r\n")[0])
        except (OSError, smtplib.SMTPException) as exc:
            outcome.append(exc)

    server.start(wrapper=hold_links("3600s"))  # the link is made, the call does not return: no commit, no reply
    try:
        sender = threading.Thread(target=send, daemon=True)
        sender.start()
        name = wait_for_unacknowledged(server, (), set())
        server.kill()
        sender.join(timeout=60)
        server.start()
    finally:
        server.stop()
    (reply,) = outcome
    assert not isinstance(reply, int), f"the sender got a reply: {reply}"  # the connection just broke
    ref = ref_of(server.maildir(BOB) / "new" / name)
    assert ref is not None

    (deliver,) = [e for e in server.events("--ref", ref) if e["kind"] == "deliver"]
    assert deliver["reason"] == "delivered.unconfirmed"
    assert (deliver["recipient"], deliver["detail"]["uid"], deliver["detail"]["unconfirmed"]) == (BOB, name, True)
    assert deliver["sender"] == "alice@sender.test" and deliver["message_id"] == "<held@sender.test>"
    assert not [e for e in server.events("--ref", ref) if e["kind"] == "accept"]  # nobody was told 250

    table = server.cli("trace", "--ref", ref).stdout
    assert "delivered.unconfirmed" in table and "no such message" not in table.lower()
    (traced,) = json.loads(server.cli("trace", "--ref", ref, "--format", "json").stdout)
    assert [(r["address"], r["status"], r["reason"]) for r in traced["recipients"]] == [
        (BOB, "delivered", "delivered.unconfirmed")
    ]
    explained = json.loads(server.cli("explain", ref, "--format", "json").stdout)
    assert (explained["status"], explained["reason"], explained["responsibility"]) == (
        "delivered",
        "delivered.unconfirmed",
        "none",
    )
    assert "The sender got no reply" in explained["summary"] and "may arrive twice" in explained["summary"]
    german = json.loads(server.cli("explain", ref, "--format", "json", "--lang", "de").stdout)
    assert "keine Antwort erhalten" in german["summary"] and "doppelt ankommen" in german["summary"]

    server.start()  # a second start records nothing twice
    server.stop()
    assert len([e for e in server.events("--ref", ref) if e["kind"] == "deliver"]) == 1
