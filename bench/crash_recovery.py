"""Crash recovery: what survives SIGKILLs inside the link/commit window, and what reconciling costs at start.

    python -m bench.crash_recovery                      # both parts (about 3 minutes)
    python -m bench.crash_recovery --only crash --clients 20 --kills 10
    python -m bench.crash_recovery --only start --mailboxes 10000 --per-mailbox 20

crash: a real `mailwarden serve` under strace, every Maildir link (linkat) held for 20 ms, so
the window between a message's link and the commit of its events is wide open; `--clients`
senders (one message per connection); after every 20 more 250s the next kill waits until a
message is in new/ whose sender has no 250 yet, and SIGKILLs the server; it restarts (and
reconciles). After the last kill a restart without strace; then the figures: 250s received,
files found, files with their deliver event (and of them, recorded at the restart as
delivered.unconfirmed), files without events (must be 0).

start: what reconciling costs on a large mail store, for the delivery journal the gateway uses
and for the alternative of looking at the files themselves: a synthetic store of `--mailboxes`
Maildirs with `--per-mailbox` messages each (empty files with real Maildir names) and an event
store with their deliver events. Measured: `reconcile` with a full journal (2 threads x 2
files x 64 messages, all committed: the usual case), and one pass listing every mailbox's new/
and cur/ - the least that "only files newer than the last committed delivery" needs, before
reading any of them (page cache warm; cold it costs a disk seek per directory).
"""

from __future__ import annotations

import argparse
import random
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.support.crash import BOB, Senders, figures, hold_links, wait_for_unacknowledged  # noqa: E402
from tests.support.mailwarden import Mailwarden  # noqa: E402

from mailwarden.deliver.journal import JOURNAL_DIR, Journal, reconcile  # noqa: E402
from mailwarden.deliver.maildir import Maildirs  # noqa: E402
from mailwarden.events import Event  # noqa: E402
from mailwarden.store.sqlite import SqliteStore  # noqa: E402

ACKNOWLEDGED_BETWEEN_KILLS = 20
JOURNALED = 2 * 2 * 64  # delivery threads x record files x messages per group


def crash(clients: int, kills: int, workdir: Path) -> None:
    seed = random.randrange(1 << 30)
    server = Mailwarden(workdir / "crash", {"smtp": {"max_connections_per_ip": 1000}})
    server.add_user(BOB)
    senders = Senders(server.smtp_port, clients, seed)
    seen: set[str] = set()
    server.start(wrapper=hold_links("20ms"))
    try:
        senders.start()
        for kill in range(kills):
            senders.wait_for_acknowledged(ACKNOWLEDGED_BETWEEN_KILLS)
            wait_for_unacknowledged(server, senders.acknowledged, seen)
            server.kill()
            if kill < kills - 1:
                server.start(wrapper=hold_links("20ms"))
        senders.stop()
        server.start()
    finally:
        senders.stop()
        server.stop()
    found = figures(server, senders.acknowledged)
    print(f"crash: {clients} clients, {kills} SIGKILLs inside the link/commit window (seed {seed})")
    print(f"  {found.line()}")
    if found.without_events or found.acknowledged_missing:
        raise SystemExit(f"FAILED: without events {found.without_events}, missing {found.acknowledged_missing}")


def start_cost(mailboxes: int, per_mailbox: int, workdir: Path) -> None:
    maildirs = Maildirs(workdir / "mail")
    store = SqliteStore(workdir / "events.db")
    started = time.perf_counter()
    journaled: list[Event] = []
    for number in range(mailboxes):
        mailbox = f"user{number}@example.test"
        cur = maildirs.ensure(mailbox) / "cur"
        events = []
        for _ in range(per_mailbox):
            uid = maildirs.unique_name(2000)
            (cur / f"{uid}:2,S").touch()
            detail = {"mailbox": mailbox, "folder": "INBOX", "uid": uid}
            ref = f"R{number:06d}{len(events):05d}"
            events.append(
                Event(kind="deliver", source="gateway", node="mx1", ref=ref, recipient=mailbox, detail=detail)
            )
        store.append_many(events)
        if len(journaled) < JOURNALED:
            journaled.extend(events[: JOURNALED - len(journaled)])
    store.flush()
    print(
        f"start: {mailboxes:,} mailboxes x {per_mailbox} messages = {mailboxes * per_mailbox:,} files "
        f"(made in {time.perf_counter() - started:.0f}s)"
    )
    for thread in range(2):
        journal = Journal(maildirs.root / JOURNAL_DIR, f"delivery-{thread}")
        share = journaled[thread::2]
        journal.intend(share[: len(share) // 2])
        journal.intend(share[len(share) // 2 :])
        journal.close()
    started = time.perf_counter()
    result = reconcile(maildirs, store, maildirs.root / JOURNAL_DIR)
    journal_ms = (time.perf_counter() - started) * 1000
    started = time.perf_counter()
    listed = 0
    for domain in maildirs.root.iterdir():
        if domain.name.startswith("."):
            continue
        for mailbox in domain.iterdir():
            for sub in ("new", "cur"):
                listed += sum(1 for _ in (mailbox / sub).iterdir())
    scan_ms = (time.perf_counter() - started) * 1000
    store.close()
    print(f"  delivery journal: {result.journaled} journaled deliveries reconciled in {journal_ms:8.1f} ms")
    print(f"  listing every new/ and cur/: {listed:,} names in {scan_ms:8.1f} ms (warm page cache)")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--only", choices=["crash", "start"], help="run only this part")
    parser.add_argument("--clients", type=int, default=20)
    parser.add_argument("--kills", type=int, default=10)
    parser.add_argument("--mailboxes", type=int, default=10_000)
    parser.add_argument("--per-mailbox", type=int, default=20)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="mw-bench-crash-") as tmp:
        if args.only in (None, "crash"):
            crash(args.clients, args.kills, Path(tmp))
        if args.only in (None, "start"):
            start_cost(args.mailboxes, args.per_mailbox, Path(tmp))
    return 0


if __name__ == "__main__":
    sys.exit(main())
