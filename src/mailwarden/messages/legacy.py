"""Keys for events written without one, by the correlation rules mailwarden used before keys existed.

The store applies them once: to the events of a store made before message keys (its migration)
and to an event a writer hands over without a key. A ref is the key; a mailbox server's event is
keyed as its parser would key it (`keys.mailbox_server_key`); a queue id's events are split into
lives where a second acceptance, another SMTP session or ten idle days show that Postfix reused
the id; an SMTP session without a queue id is one transaction; connection events get none.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Final

from mailwarden.events import Event
from mailwarden.messages.keys import (
    CONNECTION_KINDS,
    MAILBOX_SERVERS,
    MESSAGE_KINDS,
    line_key,
    mailbox_server_key,
    queue_life_key,
    session_transaction_key,
)

QUEUE_IDLE_US: Final = 10 * 86_400_000_000  # a queue file silent this long is gone (as the parsers forget it)


@dataclass
class Life:
    """What is known of a queue id's current life: its key, last event, SMTP session and acceptance."""

    key: str
    last_us: int
    session: str | None
    accepted: bool


Recall = Callable[[str, str], "Life | None"]  # (node, queue id) -> its latest life in the store


def stays_keyless(event: Event) -> bool:
    """An event without a key that no rule gives one (a connection's own, an unknown line): a writer
    only stores it - no key, queue file, link or index row comes of it."""
    return event.message_key is None and (event.kind in CONNECTION_KINDS or event.kind == "unknown")


class LegacyKeys:
    """Stamps events in the order they happened; `recall` finds a queue id's life written earlier."""

    def __init__(self, recall: Recall | None = None) -> None:
        self._recall = recall
        self._lives: dict[tuple[str, str], Life] = {}

    def key(self, event: Event) -> str | None:
        if stays_keyless(event):
            return None
        kind = event.kind
        if event.ref:
            return event.ref
        if event.source in MAILBOX_SERVERS:
            return mailbox_server_key(event)
        if event.queue_id:
            return self._life(event, event.queue_id)
        if event.session:
            return session_transaction_key(event.node, event.session, 0)
        if kind in MESSAGE_KINDS:
            return line_key(event.node, event.evidence or f"{event.ts} {kind} {event.id}")
        return None

    def _life(self, event: Event, queue_id: str) -> str:
        slot = (event.node, queue_id)
        life = self._lives.get(slot)
        if life is None and self._recall is not None:
            life = self._recall(*slot)
        if (
            life is None
            or (event.kind == "accept" and life.accepted)
            or (event.session is not None and life.session is not None and event.session != life.session)
            or event.ts - life.last_us > QUEUE_IDLE_US
        ):
            life = Life(queue_life_key(event.node, queue_id, event.ts), event.ts, event.session, False)
            if len(self._lives) >= 1_000_000:
                self._lives.clear()
            self._lives[slot] = life
        life.last_us = max(life.last_us, event.ts)
        life.session = life.session or event.session
        life.accepted = life.accepted or event.kind == "accept"
        return life.key
