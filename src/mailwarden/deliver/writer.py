"""The gateway's delivery threads: Maildir writes off the event loop, in groups, then their evidence.

Sessions hand over a message together with the events that record its delivery, and await
the outcome; each of a few threads takes whatever has queued up while it was busy and delivers
it with `Maildirs.deliver_many`, so concurrent messages share their directory fsyncs, while the
threads keep several fsyncs in flight at once. Before a group is linked into the Maildirs, its
`deliver` events go into the thread's delivery journal (deliver/journal.py), so a crash before
their commit cannot hide a delivered message. A group that is on disk hands its evidence
straight to the event store's writer (`Store.commit_soon`), whose thread wakes the sessions once
it is committed: the event loop is woken once per group, not once for the files and again for
the events.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Final

from mailwarden.deliver.journal import Journal
from mailwarden.deliver.maildir import Delivered, MaildirError, Maildirs, Message, Sink, Target
from mailwarden.events import Event
from mailwarden.groupcommit import Inbox, settle_soon
from mailwarden.store import StoreError

log = logging.getLogger(__name__)

MAX_GROUP: Final = 64  # messages per group: bounds the open files and the wait of the first one
# Two keep two fsyncs in flight. Four (measured earlier: +10 % msg/s over one when an fsync took
# 2.5 ms) now cost 10-20 % more CPU per message in GIL hand-offs for no more msg/s; two, four and
# one under smtp-source, medians of 3 alternating rounds: 512 / 398 / 490 msg/s (another run: 494 / 500 / 497).
THREADS: Final = 2

# The store's `commit_soon`: commit these events with everything queued before, then report (None or the error).
Commit = Callable[[Sequence[Event], Callable[[Exception | None], None]], None]


@dataclass
class _Request:
    message: Message
    evidence: Sequence[Event]
    loop: asyncio.AbstractEventLoop
    future: asyncio.Future[None]
    journal: Journal | None = None  # the journal that named it, once it is about to be linked


class DeliveryThreads:
    def __init__(
        self, maildirs: Maildirs, commit: Commit, journal: Path, owner: str = "", threads: int = THREADS
    ) -> None:
        """`journal` is the directory of the delivery journal (`journal.JOURNAL_DIR` in the Maildir root);
        `owner` starts the names of these threads' journal files (an SMTP worker's)."""
        self.maildirs = maildirs
        self._commit = commit
        self._inbox: Inbox[_Request] = Inbox(MAX_GROUP)
        self._threads = [
            threading.Thread(
                target=self._run,
                args=(Journal(journal, f"{owner}delivery-{n}"),),
                name=f"maildir-delivery-{n}",
                daemon=True,
            )
            for n in range(threads)
        ]
        for thread in self._threads:
            thread.start()

    async def deliver(
        self, copies: Sequence[Delivered], write: Callable[[Sink], None], evidence: Sequence[Event]
    ) -> None:
        """Deliver one message durably as planned (`Maildirs.plan`), then commit `evidence`.

        Raises MaildirError when the message could not be written (nothing is delivered, the
        evidence is not committed), or the store's error when the evidence could not be
        committed: the copies are then taken back (`Maildirs.remove`) before it is raised.
        """
        loop = asyncio.get_running_loop()
        future: asyncio.Future[None] = loop.create_future()
        targets = [Target(copy.mailbox, copy.folder) for copy in copies]
        request = _Request(Message(targets, write, copies[0].uid), evidence, loop, future)
        self._inbox.put(request, urgent=True)
        try:
            await future
        except StoreError:
            self.maildirs.remove(copies)
            raise
        finally:
            # committed, taken back or never linked: nothing left to reconcile (a cancelled wait
            # proves none of that: the entry stays, and a restart finds its events committed)
            if request.journal is not None and not future.cancelled():
                request.journal.settle(copies[0].uid)

    def close(self) -> None:
        """Finish what is queued, then stop the threads."""
        self._inbox.close()
        for thread in self._threads:
            thread.join()

    def _run(self, journal: Journal) -> None:
        try:
            while group := self._inbox.take():
                self._deliver(group, journal)
        finally:
            journal.close()

    def _deliver(self, group: list[_Request], journal: Journal) -> None:
        by_name = {request.message.name: request for request in group}

        def journal_intents(messages: Sequence[Message]) -> None:
            linking = [by_name[message.name] for message in messages]
            for request in linking:
                request.journal = journal
            journal.intend(event for request in linking for event in request.evidence)

        try:
            outcomes = self.maildirs.deliver_many([request.message for request in group], journal_intents)
        except Exception as exc:  # a bug, not a disk problem: still every waiter gets an answer
            log.exception("delivery of %d messages failed", len(group))
            outcomes = [MaildirError(f"delivery failed: {type(exc).__name__}: {exc}") for _ in group]
        written: list[_Request] = []
        for request, outcome in zip(group, outcomes, strict=True):
            if isinstance(outcome, MaildirError):
                settle_soon(request.loop, [(request.future, outcome, None)])
            else:
                written.append(request)
        if not written:
            return
        evidence = [event for request in written for event in request.evidence]

        def committed(error: Exception | None) -> None:
            for loop in {request.loop for request in written}:
                settle_soon(loop, [(r.future, error, None) for r in written if r.loop is loop])

        self._commit(evidence, committed)
