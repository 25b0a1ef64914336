"""The ingest pipeline: lines in, events out.

`Ingester.feed` is the hot path: frame the line (time, host, program), pick the parser by
program, let it emit at most one event, and hand the event to the holdback queue that completes
it from its context before releasing it to the sink (usually the store). Lines no parser
understands become `unknown` events, counted by program; lines that are understood but say
nothing worth an event (daemon start-up, TLS statistics) are only counted as `ignored`.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, tzinfo
from typing import Final

from mailwarden.config import INGEST_FORMATS
from mailwarden.events import Event, now_us
from mailwarden.ingest.amavis import AmavisParser
from mailwarden.ingest.base import Context, Handoffs, LifeLookup, Parse, Parser
from mailwarden.ingest.clamav import ClamavMilterParser
from mailwarden.ingest.correlate import Holdback
from mailwarden.ingest.dovecot import SERVICES as DOVECOT_SERVICES
from mailwarden.ingest.dovecot import DovecotParser
from mailwarden.ingest.exim import EximParser
from mailwarden.ingest.framing import Frame, Framer
from mailwarden.ingest.postfix import PostfixParser
from mailwarden.ingest.rspamd import RspamdParser
from mailwarden.ingest.timestamps import Clock
from mailwarden.messages.keys import MAILBOX_SERVERS, MESSAGE_KINDS, line_key, mailbox_server_key

Sink = Callable[[Event], None]

# Formats `--format` accepts; "auto" picks a parser per line by its program name.
FORMATS: Final = INGEST_FORMATS
# Program names (the tag before `[pid]:`, lower-cased, before any `/`) and the format they log in.
_FAMILIES: Final = {
    "exim": "exim",
    "exim4": "exim",
    "rspamd": "rspamd",
    "amavis": "amavis",
    "amavisd": "amavis",
    "amavisd-new": "amavis",
    "clamav-milter": "clamav-milter",
}

_UNTAGGED_DOVECOT: Final = re.compile(
    r"(?:(?:Info|Warning|Error|Fatal|Panic|Debug): )?([a-z][a-z0-9_\-]*)(?:\([^)]*\))?(?:<[^<>]*>)*: "
)
_PROGRAM_SAFE: Final = re.compile(r"[^\w.\-/]")
# Lines between walks over the parsers' tables for expired contexts: a walk visits every open
# session and queue file, and every 50,000 lines these walks were 2-3 % of the parsing time.
_EVICT_EVERY: Final = 200_000


class IngestError(ValueError):
    """Something the user can fix: a missing file, an unknown format; the message says what."""


@dataclass
class Stats:
    """What an ingest run saw, for the summary."""

    lines: int = 0
    events: int = 0  # released to the sink
    emitted: int = 0  # made by the parsers, `unknown` included (some may still be held back)
    unknown: Counter[str] = field(default_factory=Counter)
    kinds: Counter[str] = field(default_factory=Counter)

    @property
    def unknown_total(self) -> int:
        return sum(self.unknown.values())

    @property
    def ignored(self) -> int:
        """Lines understood but not worth an event (start-up messages, statistics, TLS set-up)."""
        return self.lines - self.emitted


class Stream:
    """One input (a file, stdin, a syslog peer): its name for evidence and its own clock."""

    __slots__ = ("framer", "origin")

    def __init__(self, origin: str, framer: Framer) -> None:
        self.origin = origin
        self.framer = framer


class Ingester:
    def __init__(
        self,
        sink: Sink,
        *,
        fmt: str = "auto",
        default_node: str = "localhost",
        zone: tzinfo = UTC,
        holdback_s: float = 2.0,
        lives: LifeLookup | None = None,
    ) -> None:
        """`lives` finds the key of a queue file's life an earlier run began (the store's `queue_life`)."""
        if fmt not in FORMATS:
            raise IngestError(f"unknown log format {fmt!r}; choose one of {', '.join(FORMATS)}")
        self.fmt = fmt
        self.default_node = default_node
        self.zone = zone
        self.stats = Stats()
        self.sink = sink  # where released events go (an import batches them: inputs.Importer)
        self.holdback = Holdback(self._release, int(holdback_s * 1_000_000))
        self._current = ("", 0, "")  # origin, offset and text of the line being parsed
        self._emitted = False
        self._replaying = False
        handoffs = Handoffs()
        self.dovecot = DovecotParser(self._emit, handoffs)
        self.postfix = PostfixParser(self._emit, handoffs, lives)
        self.exim = EximParser(self._emit)
        queue_of = self.postfix.known_queue
        self._parsers: tuple[Parser, ...] = (
            self.postfix,
            self.dovecot,
            self.exim,
            RspamdParser(self._emit, queue_of),
            AmavisParser(self._emit, queue_of, self.postfix.link),
            ClamavMilterParser(self._emit, queue_of),
        )
        self._by_name: dict[str, Parser] = {parser.source: parser for parser in self._parsers}
        self._routes: dict[str, Parse | None] = {}  # by program name
        self._forced = self._by_name.get(fmt)

    def stream(self, origin: str, reference_us: int | None = None, default_node: str | None = None) -> Stream:
        """A new input. `reference_us` (a file's mtime) anchors year-less stamps; default now."""
        clock = Clock(self.zone, now_us() if reference_us is None else reference_us)
        return Stream(origin, Framer(clock, default_node or self.default_node))

    # ------------------------------------------------------------------ the hot path
    def feed(self, stream: Stream, line: str, offset: int) -> None:
        """Parse one line (without its newline) read at byte `offset` of `stream`."""
        stats = self.stats
        stats.lines += 1
        self._current = (stream.origin, offset, line)
        self._emitted = False
        frame = stream.framer.frame(line)
        if frame is None:
            self._unknown(None, "unframed", stream.framer.clock.last_us)
            return
        program = frame.program
        if program is not None and self._forced is None:
            try:
                parse = self._routes[program]
            except KeyError:
                parse = self._route(program)
            if parse is None or not parse(frame):
                self._unknown(frame, program, frame.ts)
        else:
            parser = self._forced or self._route_untagged(frame)
            if parser is None or not parser.parse(frame):
                self._unknown(frame, program or (parser.source if parser else "unknown"), frame.ts)
        if stats.lines % _EVICT_EVERY == 0:
            for each in self._parsers:
                each.evict(frame.ts)

    def replay(self, stream: Stream, line: str, offset: int) -> None:
        """Parse a line already stored by an earlier run: rebuild sessions and queue files, emit nothing."""
        stats = self.stats
        self.stats = Stats()
        self._replaying = True
        try:
            self.feed(stream, line, offset)
        finally:
            self._replaying = False
            self.stats = stats

    def _route(self, program: str) -> Parse | None:
        """What parses `program`'s lines, by its name; remembered."""
        family = program.split("/", 1)[0].lower()
        parser: Parser | None = None
        if family.startswith("postfix"):
            parser = self.postfix
        elif family.startswith("dovecot") or family in DOVECOT_SERVICES:
            parser = self.dovecot
        elif family in _FAMILIES:
            parser = self._by_name[_FAMILIES[family]]
        parse = parser.parser_for(program) if parser is not None else None
        if len(self._routes) < 10_000:
            self._routes[program] = parse
        return parse

    def _route_untagged(self, frame: Frame) -> Parser | None:
        found = _UNTAGGED_DOVECOT.match(frame.body)
        if found is not None and found[1] in DOVECOT_SERVICES:
            return self.dovecot
        if frame.message.startswith("#") and "rspamd_task_write_log" in frame.message:  # rspamd's own file
            return self._by_name["rspamd"]
        if frame.iso_stamp or frame.message.startswith("H="):  # Exim's own mainlog
            return self.exim
        return None

    def _emit(self, event: Event, context: Context | None) -> None:
        if self._emitted or self._replaying:  # one line is one event at most; replayed lines are stored
            return
        self._emitted = True
        self.stats.emitted += 1
        origin, offset, line = self._current
        event.evidence = f"{origin}:{offset}: {line}"
        if context is None and event.message_key is None and event.kind in MESSAGE_KINDS:
            event.message_key = line_key(event.node, line)  # a refusal logged on its own: a message of its own
        self.holdback.add(event, context, origin, offset)

    def _unknown(self, frame: Frame | None, program: str, ts: int) -> None:
        program = _PROGRAM_SAFE.sub("?", program[:64])
        self.stats.unknown[program] += 1
        source = program.split("/", 1)[0].lower() or "unknown"
        event = Event(
            "unknown",
            source,
            frame.node if frame else self.default_node,
            ts,
            detail={"program": program},
        )
        self._emit(event, None)

    def _release(self, event: Event) -> None:
        if event.message_key is None and event.source in MAILBOX_SERVERS:  # complete now (user, folder, uid)
            event.message_key = mailbox_server_key(event)
        stats = self.stats
        stats.events += 1
        stats.kinds[event.kind] += 1
        self.sink(event)

    def finish(self) -> None:
        """End of input: release every held event."""
        self.holdback.drain()


def parse_lines(
    lines: Iterable[str],
    *,
    fmt: str = "auto",
    node: str = "localhost",
    zone: tzinfo = UTC,
    reference_us: int | None = None,
    origin: str = "-",
) -> list[Event]:
    """Every event the lines make, completed and in order: for tests and small imports."""
    events: list[Event] = []
    ingester = Ingester(events.append, fmt=fmt, default_node=node, zone=zone)
    stream = ingester.stream(origin, reference_us)
    offset = 0
    for line in lines:
        text = line.rstrip("\r\n")
        ingester.feed(stream, text, offset)
        offset += len(line.encode("utf-8", "surrogateescape")) + (0 if line.endswith("\n") else 1)
    ingester.finish()
    return events
