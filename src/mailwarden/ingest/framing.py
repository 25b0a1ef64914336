"""Splitting a log line into its frame: time, host, program, pid and the message.

Shapes understood (mixed freely within one input):

* classic syslog: `Dec 18 15:46:00 host postfix/smtpd[24784]: message` (day space-padded or not)
* RFC 3339 syslog: `2024-08-26T01:33:38.572449+00:00 host postfix/smtpd[60203]: message`
* Exim's and Dovecot's own files: `2026-11-28 04:40:54 [+0100] ...` (local time, no host, no tag)
* Dovecot's file with its default stamp: `Jan 29 09:33:58 pop3-login: Info: ...` (no host)
* daemontools' TAI64N: `@400000004c91b044077a9e94 imap-login: Info: ...`
* no stamp at all: `mail.example.com exim[3751842]: 2021-07-17 23:20:49 ...`

A line with a host field but no tag, or without any recognisable shape, still gets a frame with
`program` None; the dispatcher decides what it is (an Exim mainlog line, a Dovecot file line, or
unknown).
"""

from __future__ import annotations

import re
from typing import Final

from mailwarden.ingest.timestamps import MONTHS, Clock, fraction_us, tai64n_us

_CLASSIC: Final = re.compile(r"([A-Z][a-z]{2}) {1,2}(\d{1,2}) (\d\d):(\d\d):(\d\d)(?:\.(\d{1,9}))? +")
_ISO: Final = re.compile(
    r"(\d{4})-(\d\d)-(\d\d)([T ])(\d\d):(\d\d):(\d\d)(?:[.,](\d{1,9}))?(?:(Z|[+-]\d\d:?\d\d)| ([+-]\d{4}))? +"
)
_TAI64N: Final = re.compile(r"@[0-9a-f]{24} +")
# An optional host, then a syslog tag `program[pid]: `. The host excludes characters of tags
# and of Dovecot prefixes (`lmtp(6903):`), so `pop3-login: Info: ...` is a tag without a host.
_TAGGED: Final = re.compile(r"(?:([^\s:\[\]()<>=]+) +)?([A-Za-z][\w.\-/]*)(?:\[(\d+)\])?: ?")
_HOST_ONLY: Final = re.compile(r"([A-Za-z0-9][\w.\-]*) +(?=\S)")


class Frame:
    """One line's frame. `message` follows the tag; `body` is everything after the stamp and host."""

    __slots__ = ("_body_start", "_line", "iso_stamp", "message", "node", "pid", "program", "ts")

    def __init__(
        self,
        ts: int,
        node: str,
        program: str | None,
        pid: str | None,
        message: str,
        line: str,
        body_start: int,
        iso_stamp: bool,
    ) -> None:
        self.ts = ts
        self.node = node
        self.program = program
        self.pid = pid
        self.message = message
        self._line = line
        self._body_start = body_start
        self.iso_stamp = iso_stamp  # a `YYYY-MM-DD HH:MM:SS` file stamp (Exim/Dovecot/rspamd own files)

    @property
    def body(self) -> str:
        return self._line[self._body_start :]


# (host, program, pid, where the tag starts within the key) by the text between stamp and `: `.
_Tag = tuple[str | None, str, str | None, int]
_TAG_CACHE_LIMIT: Final = 20_000


class Framer:
    """Frames the lines of one input stream; `default_node` names lines that carry no host."""

    __slots__ = ("_stamp", "_stamp_us", "_tags", "clock", "default_node")

    def __init__(self, clock: Clock, default_node: str) -> None:
        self.clock = clock
        self.default_node = default_node
        self._tags: dict[str, _Tag | None] = {}
        # The classic stamp the fast path placed last and its time. Only this framer moves its
        # clock, and every other path forgets it, so the clock's latest time is still that stamp's.
        self._stamp = ""
        self._stamp_us = 0

    def frame(self, line: str) -> Frame | None:
        """The frame of `line`, or None when its time stamp is impossible (like `Feb 30`)."""
        # The fast path: a classic stamp seen before (`Dec 18 15:46:00 `), found by its text; most
        # often the previous line's (a busy log writes a hundred lines a second): then not even the
        # clock is asked (asking it was 2.7 % of the parsing instructions, measured).
        ts = None
        if line[15:16] == " " and line[16:17] != " ":
            stamp = line[:15]
            if stamp == self._stamp:
                ts = self._stamp_us
            elif "A" <= stamp[:1] <= "Z" and (ts := self.clock.recall(stamp)) is not None:
                self._stamp, self._stamp_us = stamp, ts
        if ts is not None:
            colon = line.find(": ", 16)
            tag = self._tags.get(line[16:colon]) if colon > 16 else None
            if tag is not None:  # and a tag seen before: no regular expression at all
                host, program, pid, tag_at = tag
                # Set field by field on a blank frame: calling `Frame.__init__` for every line cost
                # 1.2 % of the parsing instructions (measured).
                frame = object.__new__(Frame)
                frame.ts = ts
                frame.node = host or self.default_node
                frame.program = program
                frame.pid = pid
                frame.message = line[colon + 2 :]
                frame._line = line
                frame._body_start = 16 + tag_at if host else 16
                frame.iso_stamp = False
                return frame
            return self._tagged(line, ts, 16, False)
        self._stamp = ""  # the clock moves below
        clock = self.clock
        first = line[:1]
        iso_stamp = False
        match_ = _CLASSIC.match(line) if "A" <= first <= "Z" else None
        if match_ is not None:
            month = MONTHS.get(match_[1])
            if month is None:
                return None
            stamp_end = match_.end()
            ts = clock.classic(
                line[: match_.end(5)], month, int(match_[2]), int(match_[3]), int(match_[4]), int(match_[5])
            )
            if ts is None:
                return None
            ts += fraction_us(match_[6])
        elif "0" <= first <= "9" and (match_ := _ISO.match(line)) is not None:
            stamp_end = match_.end()
            fields = (int(match_[1]), int(match_[2]), int(match_[3]), int(match_[5]), int(match_[6]), int(match_[7]))
            offset = match_[9] or match_[10]
            if offset:
                ts = clock.absolute(line[: match_.end(7)] + offset, *fields, offset)
            else:
                ts = clock.local(line[: match_.end(7)], *fields)
                iso_stamp = match_[4] == " "
            if ts is None:
                return None
            ts += fraction_us(match_[8])
        elif first == "@" and (match_ := _TAI64N.match(line)) is not None:
            stamp_end = match_.end()
            ts = tai64n_us(line[:stamp_end].rstrip())
            clock.seen(ts)
        else:
            stamp_end = 0
            ts = clock.last_us
        return self._tagged(line, ts, stamp_end, iso_stamp)

    def _tag(self, line: str, start: int) -> tuple[_Tag | None, int]:
        """The host and tag at `start` and where the message begins; remembered by their text."""
        colon = line.find(": ", start)
        key = line[start:colon] if colon > start else None
        if key is not None:
            cached = self._tags.get(key, False)
            if cached is not False:
                return cached, colon + 2  # type: ignore[return-value]
        tagged = _TAGGED.match(line, start)
        tag: _Tag | None = None
        if tagged is not None:
            tag = (tagged[1], tagged[2], tagged[3], tagged.start(2) - start)
        if key is not None and (tagged is None or tagged.end() == colon + 2):
            if len(self._tags) >= _TAG_CACHE_LIMIT:
                self._tags.clear()
            self._tags[key] = tag
        return tag, tagged.end() if tagged is not None else start

    def _tagged(self, line: str, ts: int, stamp_end: int, iso_stamp: bool) -> Frame:
        tag, message_start = self._tag(line, stamp_end)
        if tag is not None and not (iso_stamp and tag[2] is None):  # own files: only `host prog[pid]:`
            host, program, pid, tag_at = tag
            message = line[message_start:]
            if stamp_end == 0 and (inner := _ISO.match(message)) is not None and not inner[9]:
                # `host exim[1]: 2021-07-17 23:20:49 ...`: the program's own stamp is the only one
                placed = self.clock.local(message[: inner.end(7)], *(int(inner[i]) for i in (1, 2, 3, 5, 6, 7)))
                if placed is not None:
                    ts = placed + fraction_us(inner[8])
                    message = message[inner.end() :]
            body_start = stamp_end + tag_at if host else stamp_end
            return Frame(ts, host or self.default_node, program, pid, message, line, body_start, iso_stamp)
        node = self.default_node
        if not iso_stamp and stamp_end:
            hosted = _HOST_ONLY.match(line, stamp_end)
            if hosted is not None:
                node, stamp_end = hosted[1], hosted.end()
        # Exim/Dovecot/rspamd own files have no host; unstamped lines have nothing to go on.
        return Frame(ts, node, None, None, line[stamp_end:], line, stamp_end, iso_stamp)
