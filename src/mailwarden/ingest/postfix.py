"""Postfix: smtpd and postscreen sessions, the queue file's life, every delivery agent, bounces.

Programs are named `postfix/DAEMON`, with multi-instance and master.cf service names in front
(`postfix-in/smtpd`, `postfix/submission/smtpd`): the daemon is the last part of the name, and
delivery lines are recognised by their shape (`QID: to=<...>, relay=...`), whatever the service.

Correlation (docs/ingest.md has the conventions):

* An smtpd session runs from `connect from` to `disconnect from` in one process; its id is
  `PROGRAM[PID]@START` (START = the connect time in epoch seconds). NOQUEUE rejects, SASL failures
  and the queue files it creates carry it.
* A queue file lives from its first line (`client=`, pickup's `uid=`) to qmgr's `removed`; its
  Message-ID (cleanup), sender and size (qmgr) and its session's client fill every event of that
  queue id. Postfix reuses short queue ids later, so a new life starts at the next `client=`.
  Each life is one message: its key (`messages.keys.queue_life_key`) goes on every event of it.
  A life met in its middle (a follower restarted after its start) is looked up in the store.
* Refusals in a session that never got a queue id (NOQUEUE) are keyed per transaction: a new
  one begins with another sender or after the session queued a message.
* `status=sent (250 ... queued as NEWQID)` and smtpd's `orig_queue_id=` link a content filter's
  re-injected copy to the original (`detail.next_key`, `detail.prev_key`: one message, two
  hops); `sender non-delivery notification: CHILD` names a bounce (a message of its own).
* mailwarden as Postfix's milter keys its events by our ref: a `milter-reject` with our reply
  (`... ref=REF`) and the `milter-header-info` line of our `X-Mailwarden-Ref` field (docs/postfix.md)
  link the queue file, or the NOQUEUE transaction, to that ref (`detail.prev_key`: our
  transaction is the message, Postfix's lines continue it), whichever is ingested first.

Values a stranger controls (HELO, addresses, reply texts, headers) are parsed with anchored
patterns: addresses may contain `>` only inside quotes, the key=value tail of a reject is taken
where the echo at the start of the reply agrees with it, and a line yields at most one event.
"""

from __future__ import annotations

import re
from typing import Any, Final, NamedTuple

from mailwarden import replycodes
from mailwarden.events import Event
from mailwarden.handoff import lmtp_session
from mailwarden.ingest.base import (
    ADDRESS,
    Context,
    Emit,
    Handoffs,
    LifeLookup,
    Parse,
    SessionParser,
    bounded_pop,
    expire,
    message_id,
    to_float,
    to_int,
)
from mailwarden.ingest.framing import Frame
from mailwarden.ingest.reasons import classify, dnsbl_zone
from mailwarden.messages.keys import queue_life_key, session_transaction_key
from mailwarden.refs import ALPHABET as REF_ALPHABET
from mailwarden.refs import LENGTH as REF_LENGTH

_SHORT_QID: Final = r"[0-9A-F]{6,21}"
_LONG_QID: Final = r"[0-9B-DF-HJ-NP-TV-Zb-df-hj-np-tv-y]{6,16}z[0-9B-DF-HJ-NP-TV-Zb-df-hj-np-tv-y]{1,12}"
_QID_PREFIX: Final = re.compile(rf"({_SHORT_QID}|{_LONG_QID}): ")
_QID: Final = re.compile(rf"(?:{_SHORT_QID}|{_LONG_QID})")
_CLIENT: Final = r"([^\s\[\]]*)\[([^\]\s]*)\](?::(\d+))?"
_CLIENT_AT: Final = re.compile(_CLIENT)

_REJECT: Final = re.compile(
    r"(reject|reject_warning|milter-reject|milter-discard|milter-hold|discard|hold|filter|redirect|warn): (\S+) from "
    + _CLIENT
    + r": "
)
_TAIL_KEYS: Final = ("from=<", "to=<", "proto=", "helo=")
_TAIL: Final = re.compile(
    rf"; (?:from=<(?P<from>{ADDRESS})>,? ?)?(?:to=<(?P<to>{ADDRESS})>,? ?)?"
    r"(?:proto=(?P<proto>[A-Za-z0-9]+),? ?)?(?:helo=(?:<(?P<helo>.*)>|(?P<bare_helo>[^\s<>]*)))?"
)
_DELIVERY: Final = re.compile(
    rf"to=(?:<(?P<to>{ADDRESS})>|(?P<bare>[^\s<>,]+)), (?:orig_to=(?:<(?P<orig>{ADDRESS})>|(?P<orig_bare>[^\s<>,]+)), )?"
    r"relay=(?P<relay>[^\s,]+), (?:conn_use=\d+, )?delay=(?P<delay>[\d.]+), delays=(?P<delays>[\d./]+), "
    rf"(?:tls=[^\s,]+, )?dsn=(?P<dsn>{replycodes.ENHANCED}), status=(?P<status>[a-z-]+)(?: \((?P<text>.*)\))?"
)
_DELIVERY_KINDS: Final = {"sent": "deliver", "deferred": "defer", "bounced": "bounce", "expired": "bounce"}
_QUEUED_AS: Final = re.compile(r"queued as ([0-9A-Za-z]{5,24})\b")
_SMTPD_CLIENT: Final = re.compile(
    _CLIENT + r"(?:, sasl_method=([^\s,]+))?(?:, sasl_username=(.*?))?(?:, sasl_sender=.*?)?"
    r"(?:, orig_queue_id=([0-9A-Za-z]+))?(?:, orig_client=" + _CLIENT + ")?$"
)
_QMGR_FROM: Final = re.compile(
    rf"from=<(?P<from>{ADDRESS})>, (?:size=(?P<size>\d+), nrcpt=(?P<nrcpt>\d+)|status=(?P<status>\w+))"
)
_PICKUP: Final = re.compile(rf"(?:uid=(?P<uid>\d+) )?from=<(?P<from>{ADDRESS})>")
_NOTIFICATION: Final = re.compile(r"(sender|postmaster) (non-delivery|delivery status|delay) notification: (\S+)")
_HEADER_CHECK: Final = re.compile(
    r"([a-z][a-z_-]*): (header|body|mime-header|nested-header) (?P<what>.*) from (?P<client>\S+?); "
    rf"from=<(?P<from>{ADDRESS})>(?: to=<(?P<to>{ADDRESS})>)?(?: proto=\S+)?(?: helo=<(?P<helo>.*?)>)?(?:: (?P<text>.*))?"
)
# Our ref where a milter reply of ours puts it: last, after the sentence (our replies escape the
# `=` of any `ref=` a stranger's text brings along); and our header field, as milter_header_checks logs it.
_REF: Final = rf"[{REF_ALPHABET}]{{{REF_LENGTH}}}"
_OUR_REPLY_REF: Final = re.compile(rf"(?:^|\s)ref=({_REF})(?:\s+\S*/why/\1)?\s*$")
_OUR_REF_FIELD: Final = re.compile(rf"X-Mailwarden-Ref:[ \t]*({_REF})[ \t]*", re.IGNORECASE)
_PROXY: Final = re.compile(r"(proxy-accept|proxy-reject): (\S+?): ")
_SASL_FAILED: Final = re.compile(_CLIENT + r": SASL (\S+) authentication failed: ?(.*?)(?:, sasl_username=(.*))?")
_SESSION_END: Final = re.compile(
    r"(lost connection|timeout|too many errors|improper command pipelining|bare <LF> received) after (\S+)(?: \((\d+) bytes\))? from "
    + _CLIENT
)
_PS_ADDR: Final = r"\[([^\]]+)\]:(\d+)"
_PS_CONNECT: Final = re.compile(r"CONNECT from " + _PS_ADDR + r" to \[([^\]]+)\]:(\d+)")
_PS_VERDICT: Final = re.compile(
    r"(PASS NEW|PASS OLD|WHITELISTED|ALLOWLISTED|BLACKLISTED|DENYLISTED|WHITELIST VETO|ALLOWLIST VETO|DISCONNECT) "
    + _PS_ADDR
)
_PS_PASSES: Final = frozenset({"PASS NEW", "PASS OLD", "WHITELISTED", "ALLOWLISTED"})
_PS_VERDICT_WORDS: Final = ("PASS", "WHITE", "ALLOW", "BLACK", "DENY", "DISCONNECT")
_PS_TEST: Final = re.compile(
    r"(PREGREET \d+ after [\d.]+|HANGUP after [\d.]+|DNSBL rank \d+|COMMAND (?:TIME|COUNT|LENGTH) LIMIT"
    r"|COMMAND PIPELINING|NON-SMTP COMMAND|BARE NEWLINE) (?:from|for) " + _PS_ADDR + r"(.*)"
)
_PS_AFTER: Final = re.compile(r" after (\S+?)(?:: (.*))?$", re.DOTALL)
_LIMIT: Final = re.compile(
    r"([A-Za-z ]+? rate|Connection count) limit exceeded: (\d+) from " + _CLIENT + r" for service (\S+)"
)
# dns_lookup's warning when an MX record names an IP address; smtpd then refuses the sender with
# `Sender address rejected: Malformed DNS server reply`, which does not say why.
_NUMERIC_MX: Final = re.compile(r"numeric domain name in resource data of MX record for ([^\s:]+): (\S+)$")
_UNVERIFIED: Final = re.compile(r"hostname (\S+) does not resolve to address ([^\s:]+(?::[0-9a-fA-F:]*)?)(?:$|: )")
_PS_REJECT: Final = re.compile(r"(\S+) from " + _PS_ADDR + r": ")
_DNSBLOG: Final = re.compile(r"addr (\S+) listed by domain (\S+) as (\S+)")
_SMTPD_SHAPES: Final = ("connect from ", "disconnect from ", "NOQUEUE: ", "proxy-", "warning: ")
_LEVEL_PREFIXES: Final = ("warning: ", "error: ", "fatal: ", "panic: ")

# Lines that say nothing about a message: start-up, statistics, TLS set-up and the like.
_QUIET: Final = (
    "daemon started",
    "reload ",
    "terminating on signal",
    "starting the Postfix",
    "stopping the Postfix",
    "refreshing the Postfix",
    "statistics:",
    "Anonymous TLS",
    "Trusted TLS",
    "Untrusted TLS",
    "Verified TLS",
    "SSL_accept error",
    "SSL_connect error",
    "discarding EHLO keywords",
    "cache ",
    "connect to ",
    "Deleted: ",
    "Requeued: ",
    "Placed on hold: ",
    "Released from hold: ",
    "setting up TLS",
    "initializing the server-side TLS",
    "skipped, still being delivered",
    "sender non-delivery",
    "dict_",
    "table ",
    "certificate verification failed",
    "Untrusted TLS",
    "Trusted TLS",
    "Verified TLS",
)
_QUEUE_QUIET: Final = (
    "host ",
    "lost connection with",
    "conversation with",
    "enabling PIX",
    "Trusted TLS",
    "Untrusted TLS",
    "Verified TLS",
    "Anonymous TLS",
    "resent-message-id=",
    "released from hold",
    "requeued",
    "skipped, still being delivered",
    "sender=",
    "SASL authentication failed",
    "refused to talk to me",
)

_CLOSED_GRACE_US: Final = 60_000_000  # lines of a removed queue file still arriving (out of order)


def _client_name(name: str) -> str | None:
    return None if name in ("", "unknown") else name


def _kind_for(code: int | None, enhanced: str | None) -> str:
    if code is not None:
        return "tempfail" if 400 <= code < 500 else "reject"
    return "tempfail" if enhanced and enhanced.startswith("4") else "reject"


def _said_code(text: str) -> int | None:
    """The code of the reply a delivery's text quotes: after the first `host ... said: ` that is
    followed by one, else at the text's start."""
    at = text.find(" said: ")
    while at >= 0:
        code = replycodes.leading(text, at + 7).code
        if code is not None:
            return code
        at = text.find(" said: ", at + 7)
    return replycodes.leading(text).code


def _tail(text: str, client: tuple[str, str]) -> tuple[int, re.Match[str]] | None:
    """The key=value tail of a reject (`; from=<> to=<> proto= helo=<>`) and where it starts.

    The reply before it may echo a stranger's value (`<HELO>: Helo command rejected`), which can
    itself look like a tail; the tail is the first candidate whose values agree with that echo.
    """
    starts = []
    position = text.find("; ")
    while position >= 0:
        if text.startswith(_TAIL_KEYS, position + 2):
            starts.append(position)
        position = text.find("; ", position + 2)
    first: tuple[int, re.Match[str]] | None = None
    reply_start = replycodes.leading(text).end
    echoes = len(starts) > 1 and text.startswith("<", reply_start)
    for start in starts:
        found = _TAIL.fullmatch(text, start)
        if found is None:
            continue
        if not echoes:
            return start, found
        if first is None:
            first = (start, found)
        reply = text[reply_start:start]
        values = (found["from"], found["to"], found["helo"], client[0], f"{client[0]}[{client[1]}]")
        if any(value and reply.startswith(f"<{value}>") for value in values):
            return start, found
    return first


def _own_words(text: str, start: int, echoes: tuple[str | None, ...]) -> str:
    """The reply from where Postfix's own words begin: after the value it echoes first
    (`<HELO>: Helo command rejected: ...`), which a stranger chose and which may hold `>: `."""
    end = text.find(">: ", start) if text.startswith("<", start) else -1
    if end < 0:
        return text[start:]
    cut = end + 3 if text[start + 1 : end] in echoes else -1  # the usual echo: no `>: ` inside
    if text.find(">: ", end + 3) >= 0:  # the longest value that fits: a short forged one may start the real one
        for value in echoes:
            if value and ">: " in value and text.startswith(f"{value}>: ", start + 1):
                cut = max(cut, start + len(value) + 4)
    return text[cut:] if cut >= 0 else text[start:]


class _Refusal(NamedTuple):
    """A reply text split into its code, enhanced code, text and the key=value tail after it;
    `own` is the text from where Postfix's own words begin (what the reason is read from)."""

    text: str
    own: str
    code: int | None
    enhanced: str | None
    sender: str | None
    recipient: str | None
    helo: str | None
    proto: str | None
    zone: str | None

    @classmethod
    def parse(cls, text: str, client: tuple[str, str]) -> _Refusal:
        sender = recipient = helo = proto = None
        tail = _tail(text, client)
        if tail is not None:
            cut, values = tail
            text, sender, recipient, proto = text[:cut], values["from"], values["to"], values["proto"]
            helo = values["helo"] if values["helo"] is not None else values["bare_helo"] or None
        code, enhanced, _, start = replycodes.leading(text)
        echoes = (recipient, sender, helo, f"{client[0]}[{client[1]}]", client[1])
        own = _own_words(text, start, echoes)
        return cls(text, own, code, enhanced, sender, recipient, helo, proto, dnsbl_zone(text))

    @property
    def kind(self) -> str:
        return _kind_for(self.code, self.enhanced)

    def event(self, kind: str, frame: Frame, *, reason: str | None = None, **fields: Any) -> Event:
        """An event of this refusal (or acceptance) with its addresses, codes and text."""
        return Event(
            kind,
            "postfix",
            frame.node,
            frame.ts,
            helo=self.helo,
            sender=self.sender,
            recipient=self.recipient,
            smtp_code=self.code,
            enhanced_code=self.enhanced,
            reply=self.text.strip() or None,
            reason=reason,
            **fields,
        )

    @property
    def reason(self) -> str | None:
        return classify(self.own, self.enhanced)


class _Queue(Context):
    """A queue file's life: its key, Message-ID, sender, size, client and links to other queue files."""

    __slots__ = ("accepted", "qid")

    def __init__(self, seen_us: int, qid: str, key: str, parent: Context | None = None) -> None:
        Context.__init__(self, seen_us, parent)  # (super() cost a lookup for every new queue file)
        self.qid = qid
        self.accepted = False
        self["message_key"] = key


class _Session(Context):
    """An smtpd or postscreen session: its client, and the transaction its NOQUEUE refusals belong to."""

    __slots__ = ("open_key", "open_ref", "open_sender", "transactions")

    def __init__(self, seen_us: int) -> None:
        Context.__init__(self, seen_us)
        self.transactions = 0
        self.open_key: str | None = None  # the transaction refusals go to, until the sender changes
        self.open_sender: str | None = None
        self.open_ref: str | None = None  # our milter's ref for it: another ref is another transaction

    def transaction_key(self, node: str, sender: str | None, ref: str | None = None) -> str:
        """The key of the transaction a refusal (from `sender`, with our milter's `ref`, if it names
        them) belongs to. Our milter gives each transaction its own ref, so a new ref starts a new
        one even with the same sender (after RSET): two of our transactions never share a key."""
        if (
            self.open_key is None
            or (sender is not None and sender != self.open_sender)
            or (ref is not None and self.open_ref is not None and ref != self.open_ref)
        ):
            self.transactions += 1
            self.open_key = session_transaction_key(node, str(self.get("session")), self.transactions)
            self.open_sender = sender
            self.open_ref = None
        if ref is not None:
            self.open_ref = ref
        return self.open_key


class PostfixParser(SessionParser):
    """`sessions`: smtpd's by (node, pid), postscreen's by (node, pid, ip, port)."""

    source = "postfix"
    QUEUE_LIMIT = 500_000

    def __init__(self, emit: Emit, handoffs: Handoffs, lives: LifeLookup | None = None) -> None:
        super().__init__(emit, handoffs)
        self.queues: dict[tuple[str, str], _Queue] = {}  # (node, queue id)
        # (node, next queue id) -> what handed it on, its key and when (a re-injection not logged yet)
        self.links: dict[tuple[str, str], tuple[Context, str | None, int]] = {}
        self.lives = lives
        self._daemons = {
            "smtpd": self._smtpd,
            "postscreen": self._postscreen,
            "dnsblog": self._dnsblog,
            "cleanup": self._queue_line,
            "qmgr": self._queue_line,
            "nqmgr": self._queue_line,
            "pickup": self._queue_line,
            "bounce": self._queue_line,
            "postsuper": self._postsuper,
        }
        for daemon in ("tlsproxy", "anvil", "scache", "tlsmgr", "master", "postfix-script", "verify", "postlogd"):
            self._daemons[daemon] = self._quiet
        self._handlers: dict[str, Parse] = {}  # by full program name
        self._numeric_mx: dict[tuple[str, str | None], str] = {}  # (node, smtpd pid) -> domain just warned about

    def parse(self, frame: Frame) -> bool:
        return self.parser_for(frame.program or "postfix")(frame)

    def parser_for(self, program: str) -> Parse:
        """The handler of `program`'s daemon (the last part of its name); each handler reads the
        program (`postfix` when the line named none) and the text from the frame."""
        handler = self._handlers.get(program)
        if handler is None:
            handler = self._daemons.get(program.rsplit("/", 1)[-1], self._by_shape)
            if len(self._handlers) < 1000:
                self._handlers[program] = handler
        return handler

    def _by_shape(self, frame: Frame) -> bool:
        """A delivery agent, or a line whose daemon name got lost (rsyslog's RFC 5424 APP-NAME stops
        at the `/` of `postfix/smtpd` unless parser.PermitSlashInProgramName is on): go by its shape."""
        program, text = frame.program or "postfix", frame.message
        queued = _QID_PREFIX.match(text)
        if queued is not None:
            if text.startswith("client=", queued.end()):
                return self._smtpd(frame)
            return self._queued(frame, program, queued[1], text[queued.end() :])
        if text.startswith(_SMTPD_SHAPES) or _SESSION_END.match(text) is not None:
            return self._smtpd(frame)
        if text[:1].isupper() and self._postscreen(frame):
            return True
        if text.startswith("addr "):
            return self._dnsblog(frame)
        return self._no_queue_line(frame, program, text)

    # ------------------------------------------------------------------ queue files
    def queue(self, node: str, qid: str, ts: int, *, new_life: bool = False) -> _Queue:
        """The record of queue id `qid`; a new one if it is unknown, or removed and `new_life`.

        A new life's key is made from its first line; a queue id met in the middle of its life
        (not at `client=` or pickup) may be a life an earlier run began: the store knows its key.
        """
        slot = (node, qid)
        record = self.queues.get(slot)
        if record is not None and (
            record.closed_us is None or (not new_life and ts - record.closed_us <= _CLOSED_GRACE_US)
        ):
            record.seen_us = ts
            return record
        bounded_pop(self.queues, self.QUEUE_LIMIT)
        key = None if new_life or self.lives is None else self.lives(node, qid, ts)
        record = self.queues[slot] = _Queue(ts, qid, key or queue_life_key(node, qid, ts))
        handed = self.links.pop(slot, None)
        if handed is not None and ts - handed[2] <= _CLOSED_GRACE_US:  # the re-injection its upstream announced
            record.parent = handed[0]
            if handed[1] is not None:
                record.detail = {"prev_key": handed[1]}
        return record

    def known_queue(self, node: str, qid: str) -> _Queue | None:
        """The record of `qid`, for other sources (amavis, rspamd, clamav-milter) naming Postfix's queue id."""
        return self.queues.get((node, qid))

    def _queue_line(self, frame: Frame) -> bool:
        program, text = frame.program or "postfix", frame.message
        found = _QID_PREFIX.match(text)
        if found is None:
            if text.startswith("warning: ") and (found := _QID_PREFIX.match(text, 9)) is not None:
                return self._queue_warning(frame, found[1], text[found.end() :])
            return self._no_queue_line(frame, program, text)
        return self._queued(frame, program, found[1], text[found.end() :])

    def _queued(self, frame: Frame, program: str, qid: str, rest: str) -> bool:
        """A queue file's line, `rest` following its `QID: `."""
        if rest.startswith("to="):
            return self._delivery(frame, qid, rest)
        if rest.startswith("message-id="):
            record = self.queue(frame.node, qid, frame.ts)
            record["message_id"] = message_id(rest[11:]) or record.get("message_id")
            if record.accepted:
                return True
            record.accepted = True
            self.emit(Event("accept", "postfix", frame.node, frame.ts, queue_id=qid), record)
            return True
        if rest.startswith("from=<"):
            return self._qmgr_from(frame, qid, rest)
        if rest == "removed":
            record = self.queue(frame.node, qid, frame.ts)
            record.closed_us = frame.ts
            return True
        if rest.startswith(("uid=", "from=")):
            pickup = _PICKUP.match(rest)
            if pickup is None:
                return False
            record = self.queue(frame.node, qid, frame.ts, new_life=True)
            record["sender"] = pickup["from"]
            record.detail = {"uid": to_int(pickup["uid"])} if pickup["uid"] else None
            return True
        notification = _NOTIFICATION.match(rest)
        if notification is not None:
            return self._notification(frame, qid, notification)
        if rest.startswith(
            (
                "milter-",
                "reject:",
                "discard:",
                "hold:",
                "warning: header",
                "info: header",
                "prepend:",
                "replace:",
                "redirect:",
                "filter:",
                "bcc:",
                "strip:",
            )
        ):
            header = _HEADER_CHECK.match(rest)
            if header is not None:
                return self._header_check(frame, qid, header)
            return self._reject(frame, program, rest, qid)
        if rest.startswith(_QUEUE_QUIET):
            self.queue(frame.node, qid, frame.ts)
            return True
        return False

    def _queue_warning(self, frame: Frame, qid: str, rest: str) -> bool:
        """`warning: QID: ... -- message not accepted, try again later`: cleanup gave a 4xx."""
        if "message not accepted, try again later" not in rest:
            return False
        record = self.queue(frame.node, qid, frame.ts)
        event = self.event(
            "tempfail",
            frame,
            queue_id=qid,
            reply=rest,
            reason="infra.storage" if "space" in rest else classify(rest),
        )
        self.emit(event, record)
        return True

    def _qmgr_from(self, frame: Frame, qid: str, rest: str) -> bool:
        found = _QMGR_FROM.match(rest)
        if found is None:
            return False
        record = self.queue(frame.node, qid, frame.ts)
        record["sender"] = found["from"]
        if found["size"]:
            record["size"] = to_int(found["size"])
            return True
        if found["status"] == "expired":
            event = self.event(
                "bounce",
                frame,
                queue_id=qid,
                reply="returned to sender: message expired in the queue",
                detail={"status": "expired"},
            )
            self.emit(event, record)
        return True

    def _delivery(self, frame: Frame, qid: str, rest: str) -> bool:
        found = _DELIVERY.fullmatch(rest)
        if found is None:
            return False
        status = found["status"]
        if status.startswith(("deliverable", "undeliverable")):
            return True  # an address verification probe, not a message
        record = self.queue(frame.node, qid, frame.ts)
        kind = _DELIVERY_KINDS.get(status, "defer")
        text = found["text"]
        dsn = found["dsn"]
        code: int | None = None
        enhanced = dsn
        if text:
            code = _said_code(text)
        detail: dict[str, object] = {"relay": found["relay"], "delay": to_float(found["delay"]), "status": status}
        orig = found["orig"] if found["orig"] is not None else found["orig_bare"]
        if orig:
            detail["orig_to"] = orig
        if text:
            queued = _QUEUED_AS.findall(text)
            if queued and kind == "deliver":
                detail["next_queue_id"] = queued[-1]
                following = self.link(frame.node, queued[-1], record, frame.ts)
                if following is not None:
                    detail["next_key"] = following
            session = lmtp_session(text)
            if session is not None:
                detail["downstream_session"] = session
                self.handoffs.to(session)["queue_id"] = qid
        event = Event(
            kind,
            "postfix",
            frame.node,
            frame.ts,
            queue_id=qid,
            recipient=found["to"] if found["to"] is not None else found["bare"],
            smtp_code=code,
            enhanced_code=enhanced,
            reply=text,
            reason="delivered" if kind == "deliver" else classify(text, enhanced),
            detail=detail,
        )
        self.emit(event, record)
        return True

    def link(self, node: str, next_qid: str, record: Context, ts: int, key: str | None = None) -> str | None:
        """`next_qid` (a content filter's re-injection) continues `record`'s message (whose key is
        `key`, by default `record`'s own): the key of its life if that began already (it usually
        has: the filter re-injects before it answers), else None, and the life that begins next
        (within a minute) names that key as its upstream."""
        existing = self.queues.get((node, next_qid))
        if existing is not None and (existing.closed_us is None or ts - existing.closed_us <= _CLOSED_GRACE_US):
            if existing.parent is None:
                existing.parent = record
            return str(existing["message_key"])
        if len(self.links) >= self.QUEUE_LIMIT:
            self.links.clear()
        self.links[(node, next_qid)] = (record, key or record.get("message_key"), ts)
        return None

    def _notification(self, frame: Frame, qid: str, found: re.Match[str]) -> bool:
        record = self.queue(frame.node, qid, frame.ts)
        child = self.queue(frame.node, found[3], frame.ts, new_life=True)
        notice = found[2]
        child.detail = {"notification_of": qid}
        # A `check`, not a `bounce`: the recipients' fates are in their own delivery lines; this
        # line only records that a notice went back to the sender (and which queue file carries it).
        event = self.event(
            "check",
            frame,
            queue_id=qid,
            reply=f"{found[1]} {notice} notification",
            detail={"check": "notification", "notification_queue_id": found[3], "notification": notice, "to": found[1]},
        )
        self.emit(event, record)
        return True

    def _header_check(self, frame: Frame, qid: str, found: re.Match[str]) -> bool:
        """header_checks and body_checks actions, and milter_header_checks' (`milter-header-ACTION`)."""
        action = found[1].removeprefix("milter-header-")
        record = self.queue(frame.node, qid, frame.ts)
        if action not in ("reject", "discard", "hold", "warning", "info", "milter-reject", "milter-discard"):
            return True  # a header rewritten, redirected, filtered: the message goes on
        text = found["text"] or ""
        code, enhanced, _, _ = replycodes.leading(text)
        kind = {"warning": "check", "info": "check", "hold": "defer"}.get(action) or _kind_for(code, enhanced)
        detail: dict[str, object] = {"action": found[1], "check": found[2], "match": found["what"]}
        if found[1] == "milter-header-info" and (ours := _OUR_REF_FIELD.fullmatch(found["what"])) is not None:
            detail["prev_key"] = ours[1]
        event = self.event(
            kind,
            frame,
            queue_id=qid,
            sender=found["from"],
            recipient=found["to"],
            helo=found["helo"],
            smtp_code=code,
            enhanced_code=enhanced,
            reply=text or None,
            reason=classify(text, enhanced) if kind in ("reject", "tempfail") else None,
            detail=detail,
        )
        self.emit(event, record)
        return True

    def _postsuper(self, frame: Frame) -> bool:
        program, text = frame.program or "postfix", frame.message
        found = _QID_PREFIX.match(text)
        if found is None:
            return text.startswith(_QUIET) or self._no_queue_line(frame, program, text)
        qid, rest = found[1], text[found.end() :]
        record = self.queue(frame.node, qid, frame.ts)
        if rest == "removed":
            record.closed_us = frame.ts
            event = self.event(
                "delete",
                frame,
                queue_id=qid,
                reply="removed from the queue by the administrator",
                detail={"action": "postsuper"},
            )
        elif rest == "placed on hold":
            event = self.event(
                "defer",
                frame,
                queue_id=qid,
                reply="placed on hold",
                detail={"action": "hold"},
            )
        else:
            return rest.startswith(("released from hold", "requeued"))
        self.emit(event, record)
        return True

    # ------------------------------------------------------------------ smtpd sessions
    def _session(self, frame: Frame, program: str, name: str | None = None, ip: str | None = None) -> _Session:
        key = (frame.node, frame.pid)
        context = self.sessions.get(key)
        if not isinstance(context, _Session) or context.closed_us is not None:
            context = self._new_session(frame, program, key)
            if ip is not None:
                context["client_ip"], context["client_name"] = ip, _client_name(name or "")
        context.seen_us = frame.ts
        return context

    def _new_session(self, frame: Frame, program: str, key: object, name: str | None = None) -> _Session:
        """A session whose id is `name` (default `PROGRAM[PID]@START`), with `-2`, `-3` ... when one
        process starts several sessions within a second (the ids stay the same on every reading)."""
        bounded_pop(self.sessions, self.SESSION_LIMIT)
        previous = self.sessions.get(key)
        context = self.sessions[key] = _Session(frame.ts)
        base = name or f"{program}[{frame.pid}]@{frame.ts // 1_000_000}"
        earlier = previous.get("session") if previous is not None else None
        if earlier is not None and earlier.partition("-")[0] == base:
            suffix = earlier.partition("-")[2]
            base = f"{base}-{int(suffix) + 1 if suffix.isdigit() else 2}"
        context["session"] = base
        return context

    def _smtpd(self, frame: Frame) -> bool:
        program, text = frame.program or "postfix", frame.message
        if text.startswith("connect from "):
            found = _CLIENT_AT.match(text, 13)
            if found is None:
                return False
            context = self._new_session(frame, program, (frame.node, frame.pid))
            context["client_ip"], context["client_name"] = found[2], _client_name(found[1])
            port: dict[str, object] = {"port": to_int(found[3])} if found[3] else {}
            self.emit(Event("connect", "postfix", frame.node, frame.ts, detail=port), context)
            return True
        if text.startswith("disconnect from "):
            found = _CLIENT_AT.match(text, 16)
            if found is None:
                return False
            context = self._session(frame, program, found[1], found[2])
            context.closed_us = frame.ts
            detail: dict[str, object] = {}
            commands = text[found.end() :].strip()
            if commands:
                detail["commands"] = commands
            if context.detail:
                detail.update(context.detail)
            self.emit(Event("disconnect", "postfix", frame.node, frame.ts, detail=detail), context)
            return True
        queued = _QID_PREFIX.match(text)
        if queued is not None and text.startswith("client=", queued.end()):
            return self._smtpd_client(frame, program, queued[1], text[queued.end() + 7 :])
        if text.startswith("NOQUEUE: "):
            return self._reject(frame, program, text[9:], None)
        if queued is not None:
            return self._reject(frame, program, text[queued.end() :], queued[1])
        if text.startswith("proxy-"):
            return self._reject(frame, program, text, None)
        ended = _SESSION_END.match(text)
        if ended is not None:
            return self._session_problem(frame, program, text, ended)
        if text.startswith("warning: "):
            return self._smtpd_warning(frame, program, text[9:])
        return text.startswith(_QUIET)

    def _session_problem(self, frame: Frame, program: str, text: str, found: re.Match[str]) -> bool:
        """`lost connection after DATA (N bytes) from ...`, `timeout after ...`: the client went away
        (a `disconnect`); `improper command pipelining` and bare LF are protocol findings (a `check`)."""
        context = self._session(frame, program, found[4], found[5])
        what = found[1]
        detail: dict[str, object] = {"stage": found[2], "problem": what}
        if found[3]:
            detail["bytes"] = to_int(found[3])
        kind = "disconnect"
        if what in ("improper command pipelining", "bare <LF> received"):
            kind = "check"
            detail.update(check="smtp", result="fail")
        event = self.event(
            kind,
            frame,
            client_ip=found[5] or None,
            client_name=_client_name(found[4]),
            reply=text[: found.start(4) - 6] if kind == "disconnect" else text,
            reason="protocol.violation" if kind == "check" else None,
            detail=detail,
        )
        self.emit(event, context)
        return True

    def _smtpd_client(self, frame: Frame, program: str, qid: str, rest: str) -> bool:
        found = _SMTPD_CLIENT.match(rest)
        if found is None:
            return False
        session = self._session(frame, program, found[1], found[2])
        record = self.queue(frame.node, qid, frame.ts, new_life=True)
        if record.parent is None:
            record.parent = session
        detail: dict[str, object] = {}
        if found[5]:
            detail["sasl_username"] = found[5]
        if found[6]:
            parent = self.queues.get((frame.node, found[6]))
            if parent is not None:
                record.parent = parent
                detail["prev_key"] = parent["message_key"]
            detail["orig_queue_id"] = found[6]
        if found[8] is not None:  # XFORWARD from a content filter: the real client
            record["client_ip"], record["client_name"] = found[8], _client_name(found[7])
            detail["via"] = f"{found[1]}[{found[2]}]"
        else:
            record["client_ip"], record["client_name"] = found[2], _client_name(found[1])
        record["session"] = session.get("session")
        if detail:
            record.detail = {**(record.detail or {}), **detail}
        if isinstance(session, _Session):
            session.open_key = None  # this transaction got a queue file: a later refusal is another one
        return True

    def _reject(self, frame: Frame, program: str, text: str, qid: str | None) -> bool:
        """NOQUEUE and queue-id rejects, milter verdicts, before-queue proxy verdicts (`text` after the id)."""
        proxy = _PROXY.match(text)
        if proxy is not None:
            return self._proxy(frame, program, text, qid, proxy)
        found = _REJECT.match(text)
        if found is None:
            ended = _SESSION_END.match(text)  # `NOQUEUE: lost connection after CONNECT from ...`
            return ended is not None and self._session_problem(frame, program, text, ended)
        action, stage, name, ip = found[1], found[2], found[3], found[4]
        if action in ("filter", "redirect", "warn"):
            return True
        refusal = _Refusal.parse(text[found.end() :], (name, ip))
        detail: dict[str, object] = {"stage": stage}
        if action != "reject":
            detail["action"] = action
        if refusal.proto:
            detail["proto"] = refusal.proto
        if refusal.zone:
            detail["zone"] = refusal.zone
        ours = _OUR_REPLY_REF.search(refusal.text) if action == "milter-reject" else None
        if ours is not None:
            detail["prev_key"] = ours[1]
        event = refusal.event(
            "check" if action == "reject_warning" else refusal.kind,
            frame,
            reason=refusal.reason or self._numeric_mx_reason(frame, refusal),
            queue_id=qid,
            client_ip=ip or None,
            client_name=_client_name(name),
            detail=detail,
        )
        context: Context
        if qid is not None:
            context = self.queue(frame.node, qid, frame.ts)
        else:
            session = context = self._session(frame, program, name, ip)
            if refusal.helo and context.get("helo") is None:
                context["helo"] = refusal.helo
            event.message_key = session.transaction_key(frame.node, refusal.sender, ours[1] if ours else None)
        self.emit(event, context)
        return True

    def _numeric_mx_reason(self, frame: Frame, refusal: _Refusal) -> str | None:
        """`sender.mx_ip_literal` for `Sender address rejected: Malformed DNS server reply` right after
        this process warned that the sender domain's MX record is an IP address."""
        if not refusal.own.startswith("Sender address rejected: Malformed DNS server reply") or not refusal.sender:
            return None
        warned = self._numeric_mx.pop((frame.node, frame.pid), None)
        return "sender.mx_ip_literal" if warned == refusal.sender.rpartition("@")[2].lower() else None

    def _proxy(self, frame: Frame, program: str, text: str, qid: str | None, found: re.Match[str]) -> bool:
        refusal = _Refusal.parse(text[found.end() :], ("", ""))
        accepted = found[1] == "proxy-accept"
        detail: dict[str, object] = {"stage": found[2], "action": found[1]}
        session = self._session(frame, program)
        context: Context = session if qid is None else self.queue(frame.node, qid, frame.ts)
        key = session.transaction_key(frame.node, refusal.sender) if qid is None else None
        queued = _QUEUED_AS.findall(refusal.text)
        if queued:
            detail["next_queue_id"] = queued[-1]
            following = self.link(frame.node, queued[-1], context, frame.ts, key)
            if following is not None:
                detail["next_key"] = following
        event = refusal.event(
            "accept" if accepted else refusal.kind,
            frame,
            reason=None if accepted else refusal.reason,
            queue_id=qid,
            detail=detail,
            message_key=key,
        )
        self.emit(event, context)
        return True

    def _smtpd_warning(self, frame: Frame, program: str, text: str) -> bool:
        failed = _SASL_FAILED.fullmatch(text)
        if failed is not None:
            context = self._session(frame, program, failed[1], failed[2])
            detail: dict[str, object] = {"result": "failed", "protocol": "smtp", "method": failed[4]}
            event = self.event(
                "login",
                frame,
                client_ip=failed[2],
                client_name=_client_name(failed[1]),
                recipient=failed[6] or None,
                reply=failed[5] or None,
                detail=detail,
            )
            self.emit(event, context)
            return True
        if text.startswith(("non-SMTP command from ", "Illegal address syntax from ")):
            found = _CLIENT_AT.search(text)
            if found is None:
                return False
            context = self._session(frame, program, found[1], found[2])
            command = text[found.end() :].lstrip(": ")
            event = self.event(
                "reject",
                frame,
                client_ip=found[2],
                client_name=_client_name(found[1]),
                reply=text,
                reason="protocol.violation",
                detail={"command": command} if command else {},
                message_key=context.transaction_key(frame.node, None),
            )
            self.emit(event, context)
            return True
        limited = _LIMIT.match(text)
        if limited is not None:  # anvil: Postfix answered 421 4.7.0 and closed
            context = self._session(frame, program, limited[3], limited[4])
            reason = "client.too_many_connections" if limited[1].startswith("Connection") else "rate_limited"
            event = self.event(
                "tempfail",
                frame,
                client_ip=limited[4],
                client_name=_client_name(limited[3]),
                smtp_code=421,
                enhanced_code="4.7.0",
                reply=text,
                reason=reason,
                detail={"limit": limited[1], "count": to_int(limited[2]), "service": limited[6]},
                message_key=context.transaction_key(frame.node, None),
            )
            self.emit(event, context)
            return True
        numeric = _NUMERIC_MX.match(text)
        if numeric is not None:  # the finding behind the next `Malformed DNS server reply` of this process
            if len(self._numeric_mx) >= self.SESSION_LIMIT:
                self._numeric_mx.clear()
            self._numeric_mx[(frame.node, frame.pid)] = numeric[1].lower()
            # No reason yet: the domain may be the sender's or a recipient's; the refusal tells.
            detail = {"check": "mx", "result": "fail", "domain": numeric[1].lower(), "record": numeric[2]}
            event = self.event("check", frame, detail=detail)
            self.emit(event, self._session(frame, program))
            return True
        unverified = _UNVERIFIED.match(text)
        if unverified is not None:  # forward-confirmed rDNS failed: the client shows as unknown[ip]
            context = self._session(frame, program, None, unverified[2])
            event = self.event(
                "check",
                frame,
                client_ip=unverified[2],
                reason="client.fcrdns_mismatch",
                detail={"check": "fcrdns", "result": "fail", "hostname": unverified[1]},
            )
            self.emit(event, context)
            return True
        return False

    # ------------------------------------------------------------------ postscreen and dnsblog
    def _postscreen(self, frame: Frame) -> bool:
        program, text = frame.program or "postfix", frame.message
        connect = _PS_CONNECT.match(text) if text.startswith("CONNECT") else None
        if connect is not None:
            key = (frame.node, frame.pid, connect[1], connect[2])
            name = f"{program}[{frame.pid}]:{connect[1]}:{connect[2]}@{frame.ts // 1_000_000}"
            context = self._new_session(frame, program, key, name)
            context["client_ip"] = connect[1]
            detail = {"port": to_int(connect[2]), "server": f"{connect[3]}:{connect[4]}"}
            self.emit(Event("connect", "postfix", frame.node, frame.ts, detail=detail), context)
            return True
        verdict = _PS_VERDICT.match(text) if text.startswith(_PS_VERDICT_WORDS) else None
        if verdict is not None:
            context = self._postscreen_session(frame, program, verdict[2], verdict[3])
            if verdict[1] == "DISCONNECT":
                context.closed_us = frame.ts
                self.emit(Event("disconnect", "postfix", frame.node, frame.ts), context)
                return True
            if verdict[1] in _PS_PASSES:
                return True  # handed on to smtpd, whose lines tell the rest (and no id links the two)
            detail = {"check": "postscreen", "result": "fail", "verdict": verdict[1]}
            self.emit(Event("check", "postfix", frame.node, frame.ts, detail=detail), context)
            return True
        if text.startswith("NOQUEUE: reject: "):  # before the tests' pattern, which it never matches
            return self._postscreen_reject(frame, program, text[17:])
        test = _PS_TEST.match(text)
        if test is not None:
            context = self._postscreen_session(frame, program, test[2], test[3])
            name = test[1]
            reason = "client.dnsbl" if name.startswith("DNSBL") else "protocol.violation"
            detail = {"check": "postscreen", "result": "fail", "verdict": name}
            after = _PS_AFTER.match(test[4])
            if after is not None:
                detail["stage"] = after[1]
                if after[2]:
                    detail["data"] = after[2]
            elif test[4]:
                detail["data"] = test[4].lstrip(": ")
            if name.startswith("HANGUP"):
                detail["result"] = "hangup"
            self.emit(Event("check", "postfix", frame.node, frame.ts, reason=reason, detail=detail), context)
            return True
        return text.startswith(_QUIET) or (text.startswith("warning: ") and self._quiet_warning(text))

    def _postscreen_session(self, frame: Frame, program: str, ip: str, port: str) -> _Session:
        key = (frame.node, frame.pid, ip, port)
        context = self.sessions.get(key)
        if not isinstance(context, _Session):
            context = self._new_session(
                frame, program, key, f"{program}[{frame.pid}]:{ip}:{port}@{frame.ts // 1_000_000}"
            )
            context["client_ip"] = ip
        context.seen_us = frame.ts
        return context

    def _postscreen_reject(self, frame: Frame, program: str, text: str) -> bool:
        found = _PS_REJECT.match(text)
        if found is None:
            return False
        context = self._postscreen_session(frame, program, found[2], found[3])
        refusal = _Refusal.parse(text[found.end() :], (found[2], found[2]))
        detail: dict[str, object] = {"stage": found[1], "check": "postscreen"}
        if refusal.zone:
            detail["zone"] = refusal.zone
        event = refusal.event(
            refusal.kind,
            frame,
            reason=refusal.reason,
            client_ip=found[2],
            detail=detail,
            message_key=context.transaction_key(frame.node, refusal.sender),
        )
        self.emit(event, context)
        return True

    def _dnsblog(self, frame: Frame) -> bool:
        text = frame.message
        found = _DNSBLOG.match(text)
        if found is None:
            return text.startswith(_QUIET)
        detail = {"check": "dnsbl", "result": "listed", "zone": found[2].lower(), "answer": found[3]}
        self.emit(
            Event("check", "postfix", frame.node, frame.ts, client_ip=found[1], reason="client.dnsbl", detail=detail),
            None,
        )
        return True

    # ------------------------------------------------------------------ everything else
    def _quiet(self, frame: Frame) -> bool:
        """Daemons that never speak of a message (TLS proxy, statistics, the master)."""
        return not frame.message.startswith(_LEVEL_PREFIXES) or self._quiet_warning(frame.message)

    def _no_queue_line(self, frame: Frame, program: str, text: str) -> bool:
        if text.startswith(_QUIET):
            return True
        if text.startswith("warning: "):
            return self._quiet_warning(text)
        return False

    @staticmethod
    def _quiet_warning(text: str) -> bool:
        """Operational warnings that concern no message or session (they stay unknown otherwise)."""
        return text.startswith(("warning: dict_", "warning: database ", "warning: getpeername"))

    def evict(self, now_us: int) -> None:
        expire(self.sessions, now_us, open_for_us=3_600_000_000, closed_for_us=60_000_000)
        expire(self.queues, now_us, open_for_us=10 * 86_400_000_000, closed_for_us=_CLOSED_GRACE_US)
