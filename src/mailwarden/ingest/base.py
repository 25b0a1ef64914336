"""What every log parser shares: the correlation contexts, the emitter and value helpers.

A parser turns one framed line into at most one `Event` (a line can never yield two, so no
stranger-controlled text can make up an extra event). Facts that only later or earlier lines
tell (the Message-ID of a queue file, the client address of a POP3 session) live in a
`Context`; an event is bound to its context when it is emitted and its missing fields are
filled in when it is released, a moment later (see `correlate.py`), so lines logged out of
order by different processes still end up in one message.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any, Final, TypeVar

from mailwarden.events import Event
from mailwarden.ingest.framing import Frame
from mailwarden.text import decimal


class Context(dict[str, Any]):
    """Facts about a session, queue file or mailbox access, gathered from several lines.

    The facts are event fields (session, queue_id, message_id, client_ip, client_name, helo, sender,
    recipient, size) kept as dict items, so that completing an event costs one step per known fact;
    an empty context is falsy, so test contexts with `is None`. `parent` is consulted for fields this context does not know (a
    queue file's client comes from the SMTP session that created it); `detail` items are copied
    into the events' detail.
    """

    __slots__ = ("closed_us", "detail", "parent", "seen_us")

    def __init__(self, seen_us: int, parent: Context | None = None) -> None:  # dict.__new__ made it empty
        self.parent = parent
        self.seen_us = seen_us  # the last time a line touched it, for eviction
        self.closed_us: int | None = None  # when its last line (`removed`, `disconnect`) was seen
        self.detail: dict[str, object] | None = None

    def fill(self, event: Event) -> None:
        context: Context | None = self
        depth = 4  # a chain is short: transaction -> hand-off, queue file -> session -> ...
        while context is not None and depth:
            for name, value in context.items():
                if value is not None and getattr(event, name) is None:
                    setattr(event, name, value)
            if context.detail:
                for key, item in context.detail.items():
                    event.detail.setdefault(key, item)
            context = context.parent
            depth -= 1


Emit = Callable[[Event, "Context | None"], None]
# Parses one framed line; False when it does not understand it.
Parse = Callable[[Frame], bool]
# Finds an MTA queue file's context by (node, queue id), for filters that log the MTA's queue id.
QueueLookup = Callable[[str, str], "Context | None"]
# The key of the life of (node, queue id) an earlier run wrote last before a time (the store's `queue_life`).
LifeLookup = Callable[[str, str, int], "str | None"]
Key = TypeVar("Key")
AnyContext = TypeVar("AnyContext", bound=Context)


class Handoffs:
    """Deliveries handed from an MTA to a mailbox server by LMTP, keyed by the server's session id.

    Postfix logs Dovecot's LMTP reply (`250 2.0.0 <rcpt> SESSION Saved`), Dovecot logs the same
    SESSION with its `saved mail` line: whichever comes first makes the context, and Dovecot's
    delivery event gets Postfix's queue id from it. Keyed by the session alone, so it works for
    two hosts' logs in one run; the messages of both sides are linked by the session in any case
    (`messages.keys.links_of`), also for logs imported apart.
    """

    LIMIT: Final = 100_000

    def __init__(self) -> None:
        self._by_session: dict[str, Context] = {}

    def to(self, session: str, seen_us: int = 0) -> Context:
        context = self._by_session.get(session)
        if context is None:
            bounded_pop(self._by_session, self.LIMIT)
            context = self._by_session[session] = Context(seen_us)
        return context


class Parser:
    """One source's parser. `parse` returns False for a line it does not understand."""

    source: str = ""

    def __init__(self, emit: Emit) -> None:
        self.emit = emit

    def parse(self, frame: Frame) -> bool:
        raise NotImplementedError

    def parser_for(self, program: str) -> Parse:
        """What parses the lines of `program`: `parse`, or for a parser that dispatches by program
        (Postfix's daemons) the handler it would pick: one call less per line, 1.2 % of the
        parsing instructions (measured)."""
        return self.parse

    def event(self, kind: str, frame: Frame, **fields: Any) -> Event:
        """An event of this source for the line framed as `frame`: its node and time."""
        return Event(kind, self.source, frame.node, frame.ts, **fields)

    def evict(self, now_us: int) -> None:
        """Forget state that no line will complete any more (called now and then)."""


class SessionParser(Parser):
    """A parser of an MTA's or mailbox server's log (Postfix, Dovecot): sessions, and LMTP hand-offs
    shared with the other side. Tables are bounded (memory): the oldest entries go first when full."""

    SESSION_LIMIT = 100_000

    def __init__(self, emit: Emit, handoffs: Handoffs) -> None:
        super().__init__(emit)
        self.handoffs = handoffs
        self.sessions: dict[object, Context] = {}


def bounded_pop(table: dict[Key, AnyContext], limit: int) -> None:
    """Keep `table` below `limit` entries by dropping the oldest tenth (insertion order)."""
    if len(table) >= limit:
        for key in list(table)[: max(limit // 10, 1)]:
            del table[key]


def expire(table: dict[Key, AnyContext], now_us: int, open_for_us: int, closed_for_us: int) -> None:
    """Drop contexts closed longer than `closed_for_us` or idle longer than `open_for_us`."""
    stale = [
        key
        for key, context in table.items()
        if (context.closed_us is not None and now_us - context.closed_us > closed_for_us)
        or now_us - context.seen_us > open_for_us
    ]
    for key in stale:
        del table[key]


# An address as mail systems log it inside <...>: anything but angle brackets, or quoted
# strings in which anything goes. A forged `x>, status=sent (` must come quoted, so it stays
# inside the address instead of ending it early.
ADDRESS: Final = r'[^"<>]*(?:"(?:[^"\\]|\\.)*"[^"<>]*)*'  # unrolled: no backtracking per character


def message_id(value: str | None) -> str | None:
    """A Message-ID in the form events keep it: with angle brackets; None when empty."""
    if not value:
        return None
    value = value.strip()
    if not value or value == "<>":
        return None
    if not value.startswith("<"):
        value = "<" + value
    if not value.endswith(">") and not value.endswith("..."):
        value += ">"
    return value


def to_int(value: str | None) -> int | None:
    """A number a line gives (a size, a uid, a count, a port), None if it is none the store can hold.

    The line is anyone's text: `S=²` or 5,000 digits stopped the ingest with a ValueError, and a
    size beyond 64 bits made an event the store could never write, holding back every later one.
    At most 18 digits: below the store's 64-bit integers.
    """
    return None if value is None else decimal(value, max_digits=18)


def to_float(value: str) -> float | None:
    """A delay or a score a line gives, None if it is no finite number (`1.5.02`; 400 digits are infinite)."""
    try:
        number = float(value)
    except ValueError:
        return None
    return number if math.isfinite(number) else None
