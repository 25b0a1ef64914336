"""Dovecot: logins and failed logins, logouts with their counts, mail_log events, LMTP/LDA and Sieve deliveries.

Dovecot writes the same message through syslog (`host dovecot: pop3-login: Login: ...`) and into
its own file (`2026-11-28 04:40:54 pop3-login: Info: Login: ...`); both come here. Versions differ
in the process prefix: 2.3 `pop3(user)<pid><session>:`, 2.2 `pop3(user):` or
`lmtp(22587, user):`, and a level (`Info:`) may stand before or after it.

What becomes which event (conventions in docs/ingest.md):

* `Login: user=<u>, method=M, rip=R, lip=L, mpid=P, TLS, session=<S>` -> `login`, `recipient` u,
  `client_ip` R, `session` S, detail lip/method/mpid/tls/protocol. The session remembers R, so
  later lines of that session (mail_log, logout) get it as `client_ip`.
* a failed login (`auth failed`, auth worker `unknown user` / `Password mismatch`, PAM) -> `login`
  with `detail.result = "failed"` and the text in `reply`; a login process giving up without an
  attempt -> `disconnect`.
* `Disconnected: Logged out top=0/0, retr=1/483, del=1/3, size=1407` (POP3) or `Logged out in=..
  out=.. deleted=.. expunged=..` (IMAP) -> `logout` with the counts in `detail`.
* mail_log `expunge:` -> `delete` with reason `access.deleted`: the message is gone. `delete:`
  and `undelete:` only set and clear the IMAP \\Deleted flag (the message still exists and the
  client may take it back), so they make no event; the expunge that may follow is the deletion.
  `copy` and IMAP `save` (APPEND) -> `deliver` with `detail.action` and the target `folder`.
* stats `{"event":"mail_opened", ...}` lines (Dovecot 2.3's event exporter, docs/dovecot.md) ->
  `retrieve` for POP3 RETR/TOP and IMAP FETCH, with `detail.uid`, `box` and `reason_code`, at the
  exporter's microsecond `start_time`; the Message-ID comes from the `save:`/`expunge:` lines of
  the same mailbox and uid.
* LMTP/LDA `msgid=<m>: saved mail to INBOX` and Sieve `stored mail into mailbox 'Junk'` ->
  `deliver` (reason `delivered`, or `delivered.junk` for a Junk/Spam folder) with `detail.uid`
  from the transaction's mail_log `save:` line; Sieve discard -> `delete` with `detail.action =
  "discard"`; `save failed` -> `defer`.
"""

from __future__ import annotations

import json
import math
import re
from datetime import UTC, datetime, timedelta
from typing import Final, NamedTuple

from mailwarden.events import Event
from mailwarden.ingest.base import Context, Emit, Handoffs, SessionParser, bounded_pop, expire, message_id, to_int
from mailwarden.ingest.framing import Frame
from mailwarden.ingest.reasons import classify
from mailwarden.ingest.timestamps import SECOND_US

_LEVEL: Final = r"(?:(?:Info|Warning|Error|Fatal|Panic|Debug): )?"
# service(args)<pid><session>: -- args may hold a user name, "pid, user" or "user pid".
_PREFIX: Final = re.compile(_LEVEL + r"([a-z][a-z0-9_\-]*)(?:\(([^)]*)\))?((?:<[^<>]*>)*): " + _LEVEL)

_LOGIN_SERVICES: Final = frozenset(
    {"imap-login", "pop3-login", "submission-login", "managesieve-login", "lmtp-login", "doveadm-login"}
)
_MAIL_SERVICES: Final = frozenset({"imap", "pop3", "submission", "managesieve", "imap-hibernate", "doveadm"})
_DELIVERY_SERVICES: Final = frozenset({"lmtp", "lda", "dovecot-lda", "deliver"})
_AUTH_SERVICES: Final = frozenset({"auth", "auth-worker", "dovecot-auth"})
# Processes whose lines say nothing about mail or mailbox access.
_QUIET_SERVICES: Final = frozenset(
    {
        "master",
        "config",
        "log",
        "anvil",
        "stats",
        "indexer",
        "indexer-worker",
        "ssl-params",
        "dict",
        "dict-async",
        "replicator",
        "aggregator",
        "quota-status",
        "quota-warning",
        "director",
        "old-stats",
        "imap-urlauth",
        "imap-urlauth-login",
        "imap-urlauth-worker",
        "pop3c",
        "imapc",
        "fts",
        "doveconf",
        "script",
        "script-login",
    }
)
SERVICES: Final = _LOGIN_SERVICES | _MAIL_SERVICES | _DELIVERY_SERVICES | _AUTH_SERVICES | _QUIET_SERVICES

_RIP_TAIL: Final = re.compile(r"rip=([^,\s]+)(?:, lip=([^,\s]+))?")


class _LoginFields(NamedTuple):
    user: str | None
    method: str | None
    rip: str
    lip: str | None
    rest: str


def _login_fields(text: str, start: int) -> _LoginFields | None:
    """`user=<U>, method=M, rip=R, lip=L, ...` from `start`. The user name is a stranger's text and
    comes first, so the fields are found from the last `rip=`: a user name forging `>, rip=...`
    stays inside the name, and what follows `rip=` is Dovecot's own text."""
    rip_at = text.rfind("rip=", start)
    while rip_at > start and text[rip_at - 2 : rip_at] != ", ":
        rip_at = text.rfind("rip=", start, rip_at)
    if rip_at < start:
        return None
    tail = _RIP_TAIL.match(text, rip_at)
    if tail is None:
        return None
    head = text[start : rip_at - 2] if rip_at > start else ""
    user = method = None
    if head.startswith("user=<"):
        method_at = head.rfind(">, method=")
        if method_at >= 0:
            user, method = head[6:method_at], head[method_at + 10 :]
        elif head.endswith(">"):
            user = head[6:-1]
        else:
            return None
    elif head.startswith("method="):
        method = head[7:]
    elif head:
        return None
    return _LoginFields(user or None, method, tail[1], tail[2], text[tail.end() :])


_TAIL_START: Final = re.compile(r": (?=user=<|method=|rip=)")
_MPID: Final = re.compile(r", mpid=(\d+)")
_SESSION: Final = re.compile(r", session=<([^<>]*)>")
_COUNT: Final = re.compile(
    r"\b(top|retr|del|size|in|out|deleted|expunged|trashed|total|hdr_count|body_count)=(\d+)(?:/(\d+))?"
)

_MAIL_LOG: Final = re.compile(
    r"(expunge|delete|undelete|copy|save|flag_change)(?: (from|->) (.*?))?: (?=box=|uid=|msgid=)(.*)"
)
_MAIL_LOG_FIELDS: Final = re.compile(r", (box|uid|msgid|size|vsize|flags|from|subject)=")
_MAIL_OPENED: Final = '{"event":"mail_opened"'
_EPOCH: Final = datetime(1970, 1, 1, tzinfo=UTC)
_MICROSECOND: Final = timedelta(microseconds=1)
_OPENED_LAG_US: Final = 10 * SECOND_US  # how long before its log line an opening may have started

# The Message-ID is a stranger's and may hold `: saved mail to ...`: Dovecot's own words are the last.
_DELIVERY: Final = re.compile(
    r"(?:(?P<sid>[A-Za-z0-9+/]{16,32}(?::T\d+)?): )?(?P<sieve>sieve: )?msgid=(?P<msgid>.*): "
    r"(?P<what>saved mail to |stored mail into mailbox |save failed to |marked message to be discarded"
    r"|forwarded to |rejected)(?P<rest>.*)"
)
_JUNK: Final = re.compile(r"junk|spam", re.IGNORECASE)

_AUTH_FAILURE: Final = re.compile(
    r"(?:conn unix:[^ ]* \([^)]*\): auth-worker<\d+>: )?(?P<backend>[a-z][\w-]*)"
    r"\((?P<user>.*?),(?P<ip>[0-9A-Fa-f.:]+)(?:,[^()]*)?\): (?P<what>.*)"
)
_PAM_UNIX: Final = re.compile(
    r"pam_unix\([^)]*\): authentication failure;.*? rhost=(?P<ip>\S*)(?: +user=(?P<user>\S+))?"
)


def _split_args(args: str | None) -> tuple[str | None, str | None]:
    """(user, pid) from the parenthesised part of a process prefix."""
    if not args:
        return None, None
    if args.isdigit():
        return None, args
    head, sep, tail = args.partition(", ")
    if sep and head.isdigit():
        return tail, head
    head, sep, tail = args.rpartition(" ")
    if sep and tail.isdigit():
        return head, tail
    return args, None


def _fields(text: str) -> dict[str, str]:
    """mail_log's `box=B, uid=N, msgid=<M>, ...`; the first of each key counts, so a Message-ID or
    subject forging `, uid=` cannot replace the real uid and mailbox written before it."""
    parts = _MAIL_LOG_FIELDS.split(", " + text)
    fields: dict[str, str] = {}
    for index in range(1, len(parts) - 1, 2):
        fields.setdefault(parts[index], parts[index + 1])
    return fields


def _opened_at(start_time: object, stamp_us: int) -> int:
    """When a message was opened: the exporter's `start_time` (microseconds, UTC), else the line's stamp.

    Dovecot's own stamps have whole seconds, so a retrieval in the same second as the delivery
    would otherwise tie with it. `start_time` is RFC 3339 (`format_args = time-rfc3339`) or Unix
    seconds (the default `time-unix`); it is taken only when it lies just before the line's stamp
    (the event is logged when it ends), so a log read with the wrong `[ingest] timezone` keeps its
    retrievals in step with its other lines.
    """
    if isinstance(start_time, str):
        try:
            moment = datetime.fromisoformat(start_time)
        except ValueError:
            return stamp_us
        if moment.tzinfo is None:
            return stamp_us
        start_us = (moment - _EPOCH) // _MICROSECOND
    elif isinstance(start_time, int | float) and not isinstance(start_time, bool) and math.isfinite(start_time):
        start_us = round(start_time * SECOND_US)
    else:
        return stamp_us
    return start_us if stamp_us - _OPENED_LAG_US <= start_us < stamp_us + SECOND_US else stamp_us


def _angles(text: str) -> tuple[str | None, str | None]:
    """(pid, session) from `<pid><session>`."""
    if not text:
        return None, None
    parts = text[1:-1].split("><")
    pid = parts[0] if parts[0].isdigit() else None
    session = parts[-1] if not parts[-1].isdigit() else None
    return pid, session


class DovecotParser(SessionParser):
    """`sessions`: logins by (node, session id), by (node, mail process pid) and by (node, protocol, user)."""

    source = "dovecot"
    UID_LIMIT = 500_000

    def __init__(self, emit: Emit, handoffs: Handoffs) -> None:
        super().__init__(emit, handoffs)
        # LMTP/LDA transactions by (node, session id).
        self.transactions: dict[object, Context] = {}
        # (node, user, mailbox, uid) -> Message-ID, from `save:`, `copy` and `expunge:` lines.
        self.message_ids: dict[tuple[str, str, str, int], str] = {}

    def parse(self, frame: Frame) -> bool:
        program = frame.program
        if program is not None and program.startswith("dovecot"):
            text = frame.message
            if text.startswith("dovecot: "):
                text = text[9:]
        else:
            text = frame.body
        prefix = _PREFIX.match(text)
        if prefix is None or prefix[1] not in SERVICES:
            if program in ("dovecot-auth", "auth"):  # 1.x `dovecot-auth: pam_unix(...)`, PAM's own `auth:`
                return self._auth(frame, "auth", None, text, None)
            return False
        service = prefix[1]
        rest = text[prefix.end() :]
        if service in _LOGIN_SERVICES:
            return self._login_process(frame, service[:-6], rest)
        if service in _MAIL_SERVICES:
            return self._mail_process(frame, service, prefix[2], prefix[3], rest)
        if service in _DELIVERY_SERVICES:
            return self._delivery(frame, service, prefix[2], prefix[3], rest)
        if service in _AUTH_SERVICES:
            return self._auth(frame, service, prefix[2], rest, prefix[3])
        if service == "stats" and rest.startswith(_MAIL_OPENED):
            return self._mail_opened(frame, rest)
        return service in _QUIET_SERVICES

    # ------------------------------------------------------------------ login processes
    def _login_process(self, frame: Frame, protocol: str, text: str) -> bool:
        if text.startswith("Login: "):
            fields = _login_fields(text, 7)
            return fields is not None and self._login(frame, protocol, fields)
        start = _TAIL_START.search(text)
        if start is None:
            return False
        fields = _login_fields(text, start.end())
        if fields is None:
            return False
        head = text[: start.start()]
        rest = fields.rest
        session = _SESSION.search(rest)
        user = fields.user
        detail: dict[str, object] = {"protocol": protocol}
        if fields.lip:
            detail["lip"] = fields.lip
        if fields.method:
            detail["method"] = fields.method
        if "TLS" in rest:
            detail["tls"] = True
        failed = (
            "auth failed" in head or "auth_failed" in head or "plaintext auth" in head or "dest auth failed" in head
        )
        if failed:
            detail["result"] = "failed"
        event = self.event(
            "login" if failed else "disconnect",
            frame,
            session=session[1] if session else None,
            client_ip=fields.rip,
            recipient=user,
            reply=head,
            detail=detail,
        )
        self.emit(event, None)
        return True

    def _login(self, frame: Frame, protocol: str, fields: _LoginFields) -> bool:
        rest = fields.rest
        session_match = _SESSION.search(rest)
        mpid_match = _MPID.search(rest)
        session = session_match[1] if session_match else None
        user = fields.user
        detail: dict[str, object] = {"protocol": protocol, "result": "ok"}
        if fields.lip:
            detail["lip"] = fields.lip
        if fields.method:
            detail["method"] = fields.method
        if mpid_match:
            detail["mpid"] = to_int(mpid_match[1])
        if "TLS" in rest:
            detail["tls"] = True
        elif ", secured" in rest:
            detail["secured"] = True
        sessions = self.sessions
        # A line of this session read before its login (out of order) made the context already.
        context = sessions.get((frame.node, session)) if session else None
        if context is None:
            bounded_pop(sessions, self.SESSION_LIMIT)
            context = Context(frame.ts)
        context["session"] = session
        context["client_ip"] = fields.rip
        context["recipient"] = user
        context.detail = {"protocol": protocol}
        if session:
            sessions[(frame.node, session)] = context
        if mpid_match:
            sessions[(frame.node, "pid", mpid_match[1])] = context
        if user:
            sessions[(frame.node, protocol, user)] = context
        event = Event(
            "login",
            "dovecot",
            frame.node,
            frame.ts,
            session=session,
            client_ip=fields.rip,
            recipient=user,
            detail=detail,
        )
        self.emit(event, None)
        return True

    # ------------------------------------------------------------------ mail processes (imap, pop3)
    def _session_of(self, frame: Frame, protocol: str, args: str | None, angles: str) -> Context:
        """The login session a mail process line belongs to (made up if its login line is missing)."""
        user, pid = _split_args(args)
        angle_pid, session = _angles(angles)
        pid = angle_pid or pid
        sessions = self.sessions
        node = frame.node
        context = sessions.get((node, session)) if session else None
        if context is None and pid is not None:
            context = sessions.get((node, "pid", pid))
            if context is not None and user is not None and context.get("recipient") != user:
                context = None
        if context is None and session is None and pid is None and user is not None:
            context = sessions.get((node, protocol, user))
        if context is None:
            context = Context(frame.ts)
            context["session"] = session
            context["recipient"] = user
            context.detail = {"protocol": protocol}
            bounded_pop(sessions, self.SESSION_LIMIT)
            if session:
                sessions[(node, session)] = context
        context.seen_us = frame.ts
        return context

    def _mail_process(self, frame: Frame, protocol: str, args: str | None, angles: str, text: str) -> bool:
        mail_log = _MAIL_LOG.match(text)
        if mail_log is not None:
            return self._mail_log(frame, self._session_of(frame, protocol, args, angles), mail_log)
        if text.startswith(("Disconnected", "Logged out", "Connection closed", "Server shutting down")):
            context = self._session_of(frame, protocol, args, angles)
            detail: dict[str, object] = {}
            for key, first, second in _COUNT.findall(text):
                if second:
                    detail[key] = to_int(first)
                    detail[key + ("_bytes" if key == "retr" else "_of")] = to_int(second)
                else:
                    detail[key] = to_int(first)
            cut = _COUNT.search(text)
            event = Event(
                "logout",
                "dovecot",
                frame.node,
                frame.ts,
                reply=(text[: cut.start()] if cut else text).rstrip(" ,:") or None,
                detail=detail,
            )
            context.closed_us = frame.ts
            self.emit(event, context)
            return True
        return text.startswith(("Mailbox ", "Namespace ")) or text.startswith("Debug: ")

    def _mail_log(self, frame: Frame, context: Context, found: re.Match[str]) -> bool:
        action, direction, other, fields_text = found[1], found[2], found[3], found[4]
        if action in ("delete", "undelete", "flag_change"):
            return True  # a flag only (\Deleted set or cleared): the message is still there
        fields = _fields(fields_text)
        box = fields.get("box")
        uid = to_int(fields.get("uid"))
        msgid = message_id(fields.get("msgid"))
        self._remember(frame.node, context.get("recipient"), box, uid, msgid)
        detail: dict[str, object] = {"action": action}
        if uid is not None:
            detail["uid"] = uid
        if box is not None:
            detail["box"] = box
        if context.get("session"):
            detail["session"] = context.get("session")
        kind, reason = "delete", None
        if action == "expunge":
            reason = "access.deleted"
        else:  # copy, save (IMAP APPEND)
            kind = "deliver"
            if direction == "->" and other:  # old form `copy -> Trash: uid=...`
                detail["folder"] = other
            else:
                detail["folder"] = box
                if other:
                    detail["from_box"] = other
        event = Event(
            kind,
            "dovecot",
            frame.node,
            frame.ts,
            message_id=msgid,
            size=to_int(fields.get("size")),
            reason=reason,
            detail=detail,
        )
        self.emit(event, context)
        return True

    def _remember(self, node: str, user: str | None, box: str | None, uid: int | None, msgid: str | None) -> None:
        """Note which Message-ID a mailbox uid has (retrievals name only the uid)."""
        if user is None or box is None or uid is None or msgid is None:
            return
        table = self.message_ids
        if len(table) >= self.UID_LIMIT:
            for key in list(table)[: self.UID_LIMIT // 10]:
                del table[key]
        table[(node, user, box, uid)] = msgid

    # ------------------------------------------------------------------ LMTP / LDA / Sieve
    def _transaction(self, frame: Frame, session: str | None) -> Context | None:
        """The LMTP/LDA transaction `session`, whose mail_log `save:` line tells the new uid."""
        if not session:
            return None
        key = (frame.node, session)
        context = self.transactions.get(key)
        if context is None:
            bounded_pop(self.transactions, self.SESSION_LIMIT)
            # The MTA's side of the hand-off (its queue id) is found under the same session id.
            context = self.transactions[key] = Context(frame.ts, self.handoffs.to(session, frame.ts))
            context.closed_us = frame.ts  # no line ends a transaction; keep it a minute
        return context

    def _delivery(self, frame: Frame, service: str, args: str | None, angles: str, text: str) -> bool:
        user, _ = _split_args(args)
        _, session = _angles(angles)
        if text.startswith("save: "):
            fields = _fields(text[6:])
            uid = to_int(fields.get("uid"))
            self._remember(frame.node, user, fields.get("box"), uid, message_id(fields.get("msgid")))
            transaction = self._transaction(frame, session)
            if transaction is not None and uid is not None:
                transaction.detail = {"uid": uid}
            return True
        found = _DELIVERY.match(text)
        if found is None:
            return text.startswith(("Connect from", "Disconnect from", "Debug: "))
        session = session or found["sid"]
        what = found["what"]
        rest = found["rest"]
        protocol = "lda" if service != "lmtp" else "lmtp"
        detail: dict[str, object] = {"protocol": protocol}
        if found["sieve"]:
            detail["sieve"] = True
        kind, reason, reply = "deliver", None, None
        if what in ("saved mail to ", "stored mail into mailbox "):
            folder = rest.strip("'") if what.startswith("stored") else rest
            detail["folder"] = folder
            reason = "delivered.junk" if _JUNK.search(folder) else "delivered"
        elif what == "save failed to ":
            kind = "defer"
            folder, _, reply = rest.partition(": ")
            detail["folder"] = folder
            reason = classify(reply)
        elif what == "forwarded to ":
            detail["action"] = "redirect"
            detail["to"] = rest.strip("<>")
        elif what.startswith("marked message"):
            kind = "delete"
            detail["action"] = "discard"
        else:  # rejected
            kind = "reject"
            reply = rest.lstrip(": ") or None
            reason = classify(reply)
        event = Event(
            kind,
            "dovecot",
            frame.node,
            frame.ts,
            session=session,
            message_id=message_id(found["msgid"]),
            recipient=user,
            reply=reply,
            reason=reason,
            detail=detail,
        )
        self.emit(event, self._transaction(frame, session) if kind == "deliver" else None)
        return True

    # ------------------------------------------------------------------ retrievals (event exporter)
    def _mail_opened(self, frame: Frame, text: str) -> bool:
        try:
            record = json.loads(text)
            fields = record["fields"]
            categories = record.get("categories") or []
            protocol = next(c[8:] for c in categories if isinstance(c, str) and c.startswith("service:"))
            user, session, box, uid = fields["user"], fields.get("session"), fields.get("mailbox"), fields.get("uid")
        except (ValueError, KeyError, TypeError, AttributeError, StopIteration):
            return False
        if protocol not in _MAIL_SERVICES or not isinstance(user, str):
            return True  # LMTP reading the message it delivers is no retrieval
        detail: dict[str, object] = {"protocol": protocol, "action": "open"}
        if isinstance(box, str):
            detail["box"] = box
        if isinstance(uid, int):
            detail["uid"] = uid
        codes = fields.get("reason_code")
        if isinstance(codes, list):
            detail["reason_code"] = ",".join(str(code) for code in codes)
        remote = fields.get("remote_ip")
        session = session if isinstance(session, str) else None
        event = Event(
            "retrieve",
            "dovecot",
            frame.node,
            _opened_at(record.get("start_time"), frame.ts),
            session=session,
            client_ip=remote if isinstance(remote, str) else None,
            recipient=user,
            message_id=self.message_ids.get((frame.node, user, str(box), uid)) if isinstance(uid, int) else None,
            reason="access.retrieved",
            detail=detail,
        )
        self.emit(event, self.sessions.get((frame.node, session)) if session else None)
        return True

    # ------------------------------------------------------------------ authentication
    def _auth(self, frame: Frame, service: str, args: str | None, text: str, angles: str | None) -> bool:
        user: str | None = None
        ip: str | None = None
        backend: str | None = None
        session: str | None = None
        if args and "," in args:  # 2.3: auth(user,ip,mech)<session>: Info: sql: Password mismatch
            fields = args.split(",")
            user, ip = fields[0], fields[1] if len(fields) > 1 else None
            _, session = _angles(angles or "")
            backend, _, what = text.partition(": ")
            if not what:
                what, backend = backend, None
        elif (found := _AUTH_FAILURE.match(text)) is not None:
            user, ip, backend, what = found["user"], found["ip"], found["backend"], found["what"]
        elif (pam := _PAM_UNIX.match(text)) is not None:
            user, ip, what = pam["user"], pam["ip"] or None, "authentication failure"
        else:
            return text.startswith(("Debug: ", "Warning: ", "Error: ")) or service == "auth-worker"
        lowered = what.lower()
        if not any(word in lowered for word in ("unknown user", "mismatch", "fail", "invalid", "denied", "not known")):
            return True
        detail: dict[str, object] = {"result": "failed", "protocol": "auth"}
        if backend:
            detail["backend"] = backend
        event = self.event(
            "login",
            frame,
            session=session,
            client_ip=ip or None,
            recipient=user or None,
            reply=what,
            detail=detail,
        )
        self.emit(event, None)
        return True

    def evict(self, now_us: int) -> None:
        expire(self.sessions, now_us, open_for_us=86_400_000_000, closed_for_us=60_000_000)
        expire(self.transactions, now_us, open_for_us=600_000_000, closed_for_us=60_000_000)
