"""The gateway's handler for an SMTP session that Postfix runs and asks us about (milter or policy service).

The checks, their order, the refusals and their events are the gateway's own (`Connection`), so a
refusal reads the same whichever server sends it: code, enhanced code, sentence, `ref=`. What
differs is who speaks SMTP and who keeps the message: Postfix does. So an accepted message is
not written here; it gets our header fields (`accepted_changes`), and its evidence is committed
before Postfix hears that we agree. The events say `source` "milter" or "policy" and carry
Postfix's queue id (its log lines do too: the trace joins them).

Postfix opens its queue file at the first recipient it accepts, so the queue id is not known at
MAIL and the first RCPT. The milter learns it by DATA at the latest: there a transaction's events
are held until it is (`learn_queue_id`) or the transaction ends without one (every recipient
refused: Postfix logs `NOQUEUE` then), and written together, each with its own time. The policy
service may never learn it (only when Postfix asks at the end of the data too), so it writes at
once and stamps what comes after.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

from mailwarden.addresses import EnvelopePath, PathSyntaxError, parse_path
from mailwarden.checks.base import Transaction, Verdict
from mailwarden.events import Event
from mailwarden.smtp.gateway import Connection, Gateway
from mailwarden.smtp.replies import with_enhanced_code
from mailwarden.spool import Spool
from mailwarden.store import StoreError

log = logging.getLogger(__name__)

AUTH_RESULTS = "Authentication-Results"
UNVERIFIED = "unknown"
CONNECTION_KINDS = frozenset(
    {"connect", "helo", "disconnect"}
)  # Postfix's {client_name} when the client's name is not forward-confirmed


@dataclass(frozen=True, slots=True)
class HeaderChange:
    """One change to an accepted message's header: a field inserted at `index` (0 = on top), or the
    `index`-th (from 1) field called `name` given `value` - removed when the value is empty."""

    insert: bool
    index: int
    name: str
    value: str


def envelope_path(arguments: list[str], keyword: str, postfix_saw: str | None = None) -> EnvelopePath:
    """MAIL FROM/RCPT TO as Postfix relays them (`<address>` and its ESMTP parameters), read as our server reads them.

    Postfix may accept addresses our parser would not (it is more lenient with quotes and
    spaces); those are taken as Postfix saw them (`postfix_saw`: its {mail_addr} or {rcpt_addr}),
    without parameters, rather than refused again.
    """
    line = f"{keyword}:{' '.join(arguments)}"
    try:
        return parse_path(line, keyword, null_allowed=keyword == "FROM", postmaster_allowed=keyword == "TO")
    except PathSyntaxError:
        address = arguments[0].removeprefix("<").removesuffix(">") if arguments else ""
        return EnvelopePath(postfix_saw if postfix_saw is not None else address)


class HostedConnection(Connection):
    """`Connection` for a session Postfix runs: events from `source`, with its queue id; no delivery of our own."""

    def __init__(self, gateway: Gateway, source: str, *, hold_events: bool) -> None:
        super().__init__(gateway)
        self.source = source
        self.hold_events = hold_events  # a transaction's events wait for its queue id
        self.queue_id: str | None = None
        self.mta: dict[str, str] = {}  # what Postfix says about the session: its client name, daemon, SASL login
        self.problem: str | None = None  # why the conversation with Postfix broke off, for the disconnect event
        self.changes: list[HeaderChange] = []  # for the accepted message of the transaction that just ended
        self.auth_results_at: list[int] = []  # where the incoming Authentication-Results fields start in the spool
        self._held: list[Event] = []

    # ------------------------------------------------------------------ events
    def _new_event(self, kind: str, **fields: Any) -> Event:
        if kind not in CONNECTION_KINDS:  # the connection's events belong to no queue file
            fields.setdefault("queue_id", self.queue_id)
        added = {"connect": "daemon_name", "mail": "auth_authen"}.get(kind)
        if added in self.mta:
            fields["detail"] = {**fields.get("detail", {}), added: self.mta[added]}
        if kind == "disconnect" and self.problem:
            fields["detail"] = {**fields.get("detail", {}), "problem": self.problem}
        event = super()._new_event(kind, **fields)
        if event.client_name is None and self.mta.get("client_name", UNVERIFIED) != UNVERIFIED:
            event.client_name = self.mta["client_name"]
        return event

    def _event(self, kind: str, **fields: Any) -> Event:
        """Record an event; one of a transaction whose queue id is not known yet is held until it is."""
        event = self._new_event(kind, **fields)
        if self.hold_events and self.txn is not None and self.queue_id is None:
            self._held.append(event)
        else:
            self.gateway.store.append(event)
        return event

    def learn_queue_id(self, queue_id: str) -> None:
        """Postfix named its queue file: stamp and write what was held."""
        if not queue_id or queue_id == self.queue_id:
            return
        self.queue_id = queue_id
        for event in self._held:
            event.queue_id = queue_id
        self._write_held()

    def end_transaction(self) -> None:
        """The transaction is over (answered, aborted, or the connection gone): write what was held."""
        self._write_held()
        self.queue_id = None
        self.auth_results_at = []
        self.changes = []

    def _write_held(self) -> None:
        for event in self._held:
            self.gateway.store.append(event)
        self._held = []

    def on_rset(self) -> None:
        super().on_rset()
        self.end_transaction()

    def on_disconnect(self, *, lost: bool) -> None:
        super().on_disconnect(lost=lost)
        self.end_transaction()

    # ------------------------------------------------------------------ replies
    def answer(self, reply: str, command: str) -> str | None:
        """What Postfix should send for one of our replies: None to go on, else the refusal (ref and event made once)."""
        if reply[:1] not in ("4", "5"):
            return None
        if self.is_own_reply(reply):
            return reply
        # A refusal of the protocol layer ("503 ... nested MAIL"): given its ref and event here, as `push` does.
        return self.on_protocol_reply("\r\n".join(with_enhanced_code(line) for line in reply.split("\r\n")), command)

    def queued(self, size: int | None) -> None:
        """Postfix took the message after our envelope checks (the policy service sees no content)."""
        if self.txn is not None and self.txn.recipients:
            self._event("accept", size=size, detail={"recipients": [r.address for r in self.txn.recipients]})
            self._accepted()

    # ------------------------------------------------------------------ the accepted message
    async def _deliver(self, txn: Transaction, spool: Spool, msgid: str | None) -> str:
        """Postfix queues and delivers: the message gets our fields, and our evidence is committed first."""
        forged = {start for start, _ in await self._forged_fields(spool)}
        occurrences = [i + 1 for i, start in enumerate(self.auth_results_at) if start in forged]
        # From the last forged field up, so removing one does not shift the position of the next.
        self.changes = [HeaderChange(False, index, AUTH_RESULTS, "") for index in reversed(occurrences)]
        fields = self._evidence_fields(txn)
        self.changes += [HeaderChange(True, index, name, value) for index, (name, value) in enumerate(fields)]
        detail: dict[str, Any] = {"recipients": [r.address for r in txn.recipients], "fields": [n for n, _ in fields]}
        if occurrences:
            detail["forged_fields_removed"] = len(occurrences)
        self._event("accept", message_id=msgid, size=spool.size, detail=detail)
        self._write_held()
        try:
            await self.gateway.store.durable()
        except StoreError as exc:  # nothing is in Postfix's queue yet: it refuses, the sender retries
            log.error("evidence for %s could not be stored (%s): answering 4xx", txn.ref, exc)
            self.changes = []
            return self._refuse(Verdict.tempfail("infra.storage", problem="the event store is not writable"), "data")
        self._accepted()
        return "250 2.0.0 OK"  # Postfix sends its own, with its queue id
