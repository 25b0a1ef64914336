"""The gateway's policy and evidence: what to answer at each SMTP stage, and the events it leaves.

`Gateway` holds what all connections share (config, checks, store, mailboxes, limits);
`Connection` is the policy of one connection, called by the protocol layer (smtp/server.py).
Every decision becomes an event; the reply to DATA is "250" only after the message is fsynced
into every recipient's Maildir and the transaction's events are committed.
"""

from __future__ import annotations

import asyncio
import logging
import socket
import ssl
import time
from collections import Counter
from collections.abc import Coroutine, Mapping, Sequence
from datetime import UTC, datetime
from email.utils import format_datetime
from typing import Any, Final

from mailwarden import authresults, metrics
from mailwarden.addresses import EnvelopePath
from mailwarden.checks.base import (
    Action,
    CheckContext,
    InputWatch,
    Recipient,
    Services,
    SessionInfo,
    Stage,
    Transaction,
    Verdict,
)
from mailwarden.checks.chain import ChainResult, CheckChain
from mailwarden.config import Config, parse_hostport
from mailwarden.deliver.downstream import (
    Downstream,
    DownstreamError,
    already_delivered,
    content_digest,
    decide,
    earlier_deliveries,
    verdict_for,
)
from mailwarden.deliver.journal import JOURNAL_DIR, reconcile
from mailwarden.deliver.maildir import Delivered, MaildirError, Maildirs, Sink, Target
from mailwarden.deliver.writer import DeliveryThreads
from mailwarden.events import Event
from mailwarden.handoff import lmtp_session
from mailwarden.headers import header_fields, message_id
from mailwarden.listening import shown
from mailwarden.messages.keys import CONNECTION_KINDS
from mailwarden.refs import RefGenerator
from mailwarden.smtp import replies
from mailwarden.smtp.server import GatewaySMTP
from mailwarden.spool import Spool
from mailwarden.store import Store, StoreError
from mailwarden.text import ascii_printable, printable

log = logging.getLogger(__name__)

# Protocol-layer refusals that have a catalog entry more precise than protocol.violation.
PROTOCOL_REASONS: Final[Mapping[tuple[int, str], str]] = {(553, "5.6.7"): "protocol.smtputf8_required"}


BACKLOG: Final = 1024
REFUSALS: Final = frozenset({"reject", "tempfail"})


def worker_files(worker: int) -> str:
    """What the names of a worker's journal and spool files start with (none for the only process)."""
    return f"w{worker}-" if worker else ""


def recover(config: Config, store: Store, worker: int | None = None) -> None:
    """Before accepting mail: record what a crash left in mailboxes unrecorded, clear what it left half-done.

    With `worker`, only what that SMTP worker left (its successor is about to start; the others
    deliver on): its journal and spool files. Without, everything, also tmp/ of every Maildir.
    """
    maildirs = Maildirs(config.path(config.mail.maildir_root))
    files = "" if worker is None else worker_files(worker)
    reconcile(maildirs, store, maildirs.root / JOURNAL_DIR, files)
    if worker is None:
        maildirs.recover()
    spool_dir = config.path(config.mail.spool_dir)
    if spool_dir.is_dir():
        for leftover in spool_dir.glob(f"msg-{files}*.spool"):
            leftover.unlink(missing_ok=True)


class Gateway:
    """Shared state of the SMTP gateway."""

    def __init__(
        self,
        config: Config,
        store: Store,
        chain: CheckChain,
        services: Services,
        *,
        refs: RefGenerator,
        tls_context: ssl.SSLContext | None,
        worker: int = 0,
    ) -> None:
        """`worker`: the SMTP worker's slot (0: the only process); its journal and spool files carry it."""
        self.config = config
        self.store = store
        self.chain = chain
        self.services = services
        self.refs = refs
        self.tls_context = tls_context
        self.maildirs = Maildirs(config.path(config.mail.maildir_root))
        self.journal = self.maildirs.root / JOURNAL_DIR
        self.files = worker_files(worker)
        self.delivery = DeliveryThreads(self.maildirs, store.commit_soon, self.journal, self.files)
        self.downstream = (
            Downstream(config.delivery, config.smtp.hostname) if config.delivery.mode != "maildir" else None
        )
        self.spool_dir = config.path(config.mail.spool_dir)
        self.node = config.node.name
        self.connections: set[GatewaySMTP] = set()
        self.shutting_down = False
        self._servers: list[asyncio.AbstractServer] = []
        self._finishing: set[asyncio.Task[str]] = set()

    def protocol(self) -> GatewaySMTP:
        return GatewaySMTP(Connection(self), tls_context=self.tls_context)

    def recover(self) -> None:
        """Before accepting mail: record what a crash left in mailboxes unrecorded, clear what it left half-done."""
        recover(self.config, self.store)

    async def start(self, sockets: Sequence[socket.socket] = ()) -> list[str]:
        """Listen on `smtp.listen`, or on `sockets` bound for this worker by the supervisor."""
        loop = asyncio.get_running_loop()
        servers = [await loop.create_server(self.protocol, sock=sock, backlog=BACKLOG) for sock in sockets]
        for address in self.config.smtp.listen if not sockets else ():
            host, port = parse_hostport(address)
            servers.append(
                await loop.create_server(self.protocol, host=host, port=port, reuse_address=True, backlog=BACKLOG)
            )
        self._servers.extend(servers)
        return [shown(s) for server in servers for s in server.sockets]

    def finish_soon(self, work: Coroutine[Any, Any, str]) -> asyncio.Task[str]:
        """Run the end of a transaction (decide, deliver, record) to completion, even if its client goes away."""
        task = asyncio.get_running_loop().create_task(work)
        self._finishing.add(task)
        task.add_done_callback(self._finishing.discard)
        return task

    async def stop(self, grace: float = 10.0) -> None:
        """Stop listening, let running transactions finish for `grace` seconds, then hang up."""
        self.shutting_down = True
        for server in self._servers:
            server.close()
        deadline = time.monotonic() + grace

        def busy() -> bool:  # a transaction is over (txn None) before its reply is queued: deciding counts too
            return any(p.conn.txn is not None or p.deciding for p in self.connections)

        while busy() and time.monotonic() < deadline:  # noqa: ASYNC110
            await asyncio.sleep(0.05)
        for protocol in list(self.connections):
            protocol.hang_up(protocol.conn.shutdown_reply())
        if self._finishing:  # accepted messages are delivered and recorded before we exit
            await asyncio.wait(set(self._finishing))
        for server in self._servers:
            await server.wait_closed()
        self.delivery.close()


class Connection:
    """The policy of one connection: decisions, replies and events (`on_*`, called by smtp/server.py)."""

    source: str = "gateway"  # the events' source; the handler of a session Postfix runs says "milter" or "policy"

    def __init__(self, gateway: Gateway) -> None:
        self.gateway = gateway
        self.session = SessionInfo(id="", node=gateway.node, client_ip="", client_port=0)
        self.txn: Transaction | None = None
        self.counts: Counter[str] = Counter()
        self.quit_seen = False
        self.pending: Verdict | None = None  # a connect/HELO refusal, given at RCPT (delay_reject)
        self._first_ref_free = True
        self._last_own: object = None
        self._counted = False
        self._started = 0.0

    # ------------------------------------------------------------------ helpers
    @property
    def config(self) -> Config:
        return self.gateway.config

    @property
    def ref(self) -> str:
        return self.txn.ref if self.txn is not None else self.session.id

    def _ctx(self) -> CheckContext:
        return CheckContext(self.gateway.services, self.session, self.txn)

    def _new_event(self, kind: str, **fields: Any) -> Event:
        ref = fields.setdefault("ref", self.ref)
        if kind not in CONNECTION_KINDS:  # the transaction's events are its message's; connect/HELO the connection's
            fields.setdefault("message_key", ref)
        if self.txn is not None:
            fields.setdefault("sender", self.txn.sender)
        if kind in REFUSALS:  # recorded as made; an accept is counted once it holds (`_accepted`)
            metrics.count_decision(kind, fields.get("reason"))
        return Event(
            kind=kind,
            source=self.source,
            node=self.gateway.node,
            session=self.session.id,
            client_ip=self.session.client_ip,
            client_name=self.session.client_name,
            helo=self.session.helo,
            **fields,
        )

    def _event(self, kind: str, **fields: Any) -> Event:
        """Record an event (queued; committed with the next batch)."""
        event = self._new_event(kind, **fields)
        self.gateway.store.append(event)
        return event

    def _own(self, reply: str) -> str:
        """Mark a reply as decided (and recorded) here, so the protocol layer does not record it again."""
        self._last_own = reply
        return reply

    def is_own_reply(self, status: object) -> bool:
        return status is self._last_own

    def _refuse(
        self, verdict: Verdict, stage: str, *, record: list[dict[str, Any]] | None = None, recipient: str | None = None
    ) -> str:
        reply = replies.for_verdict(verdict, self.ref, self.config.explain.url, utf8=True)
        detail: dict[str, Any] = {"stage": stage, **dict(verdict.detail)}
        if verdict.values:  # the reply's template values, so the trace can explain it in any language
            detail["values"] = {k: v if isinstance(v, int | float) else str(v) for k, v in verdict.values.items()}
        if record:
            detail["checks"] = record
        self._refusal_event(verdict.action, verdict.reason, reply, detail, recipient=recipient)
        return self._own(reply.wire())

    def _refusal_event(
        self, action: Action, reason: str, reply: replies.Reply, detail: dict[str, Any], **fields: Any
    ) -> None:
        """Record a refusal (REJECT or TEMPFAIL) with the reply the client got."""
        self._event(
            "reject" if action is Action.REJECT else "tempfail",
            smtp_code=reply.code,
            enhanced_code=reply.enhanced,
            reply=reply.line,
            reason=reason,
            detail=detail,
            **fields,
        )

    def count(self, verb: str) -> None:
        self.counts[verb.lower()] += 1

    # ------------------------------------------------------------------ connection
    async def on_connect(
        self, client_ip: str, client_port: int, watch_input: InputWatch | None = None
    ) -> tuple[str, bool]:
        gateway = self.gateway
        self._started = time.monotonic()
        self.session = SessionInfo(
            id=gateway.refs.new(),
            node=gateway.node,
            client_ip=client_ip,
            client_port=client_port,
            watch_input=watch_input,
        )
        from_client, in_total = gateway.services.counts.opened(client_ip)  # all workers' connections
        self._counted = True
        limits = self.config.smtp
        result = ChainResult()
        if gateway.shutting_down:
            result.verdict = Verdict.tempfail("infra.shutdown")
        elif from_client > limits.max_connections_per_ip:  # the client's load
            result.verdict = Verdict.tempfail(
                "client.too_many_connections", client_ip=client_ip, limit=limits.max_connections_per_ip
            )
        elif in_total > limits.max_connections:  # ours: the client may hold just this one
            result.verdict = Verdict.tempfail("infra.server_busy", client_ip=client_ip, limit=limits.max_connections)
        else:
            result = await gateway.chain.run(Stage.CONNECT, self._ctx())
        self.session.watch_input = None  # only before the greeting
        self._event(
            "connect", detail={"port": client_port, "checks": result.record} if result.record else {"port": client_port}
        )
        if result.verdict is None:
            return f"220 {limits.hostname} ESMTP mailwarden", True
        if result.verdict.code == 421:  # "closing the transmission channel": answered at once
            return self._refuse(result.verdict, "connect", record=result.record), False
        self.pending = result.verdict  # refuse at RCPT, so the sender's bounce names a recipient
        return f"220 {limits.hostname} ESMTP mailwarden", True

    async def on_helo(self, hostname: str, *, esmtp: bool) -> str | None:
        self.txn = None
        self.session.helo = hostname
        self.session.esmtp = esmtp
        result = await self.gateway.chain.run(Stage.HELO, self._ctx())
        detail: dict[str, Any] = {"esmtp": esmtp}
        if self.session.tls:
            detail["tls"] = self.session.tls
        if result.record:
            detail["checks"] = result.record
        self._event("helo", detail=detail)
        if result.verdict is not None and self.pending is None:
            self.pending = result.verdict
        return None

    def on_starttls(self, version: str) -> None:
        self.session.tls = version
        self.session.helo = None  # RFC 3207 4.2: forget everything learnt before TLS
        self.txn = None

    # ------------------------------------------------------------------ MAIL and RCPT
    async def on_mail(self, path: EnvelopePath) -> str:
        if self.txn is not None:
            return "503 5.5.1 Error: nested MAIL command"
        options = path.options
        problem = self._utf8_problem(path.mailbox, options)
        if problem is not None:
            return problem
        ref = self.session.id if self._first_ref_free else self.gateway.refs.new()
        self._first_ref_free = False
        self.txn = Transaction(ref=ref, sender=path.mailbox, mail_options=options)
        # A client already refused at connect/HELO gets that refusal at RCPT; judging its sender too
        # would answer with a lesser reason (and cost DNS lookups) first.
        result = ChainResult() if self.pending is not None else await self.gateway.chain.run(Stage.MAIL, self._ctx())
        if result.verdict is not None:
            reply = self._refuse(result.verdict, "mail", record=result.record)
            self.txn = None
            return reply
        self._apply_tags(result)
        detail: dict[str, Any] = {"options": options} if options else {}
        if result.record:
            detail["checks"] = result.record
        self._event("mail", detail=detail)
        return self._own("250 2.1.0 Sender OK")

    async def on_rcpt(self, path: EnvelopePath) -> str:
        txn = self.txn
        if txn is None:
            return "503 5.5.1 Error: need MAIL command"
        address = path.mailbox
        problem = self._utf8_problem(address, txn.mail_options)
        if problem is not None:
            return problem
        if len(txn.recipients) >= self.config.smtp.max_recipients:
            return self._refuse(
                Verdict.tempfail("rcpt.too_many", limit=self.config.smtp.max_recipients), "rcpt", recipient=address
            )
        if self.pending is not None:
            return self._refuse(self.pending, "rcpt", recipient=address)
        result = await self.gateway.chain.run(Stage.RCPT, self._ctx(), address)
        verdict = result.verdict
        if verdict is None and result.recipient is None:  # no check vouched for it: never relay
            verdict = Verdict.reject("rcpt.relay_denied", recipient=address, problem="no check accepted this recipient")
        if verdict is not None:
            return self._refuse(verdict, "rcpt", record=result.record, recipient=address)
        assert result.recipient is not None
        self._apply_tags(result)
        txn.recipients.append(result.recipient)
        detail: dict[str, Any] = {"mailbox": result.recipient.mailbox}
        if result.record:
            detail["checks"] = result.record
        self._event("rcpt", recipient=address, detail=detail)
        return self._own("250 2.1.5 Recipient OK")

    @staticmethod
    def _utf8_problem(address: str, mail_options: list[str]) -> str | None:
        if not address.isascii() and "SMTPUTF8" not in (o.upper() for o in mail_options):
            return "553 5.6.7 Error: a non-ASCII address needs the SMTPUTF8 parameter on MAIL FROM"
        return None

    def _apply_tags(self, result: ChainResult) -> None:
        assert self.txn is not None
        for tag in result.tags:
            self.txn.headers.extend(tag.headers)
            if tag.folder:
                self.txn.folder = tag.folder
                # why it went there (e.g. the spam score), for the deliver event and so the trace
                self.txn.results["folder_values"] = {k: v for k, v in tag.values.items() if v is not None}

    def on_rset(self) -> None:
        self.txn = None

    # ------------------------------------------------------------------ DATA
    async def on_data_start(self) -> str | None:
        if self.txn is None:
            return "503 5.5.1 Error: need MAIL command"
        if not self.txn.recipients:
            return "554 5.5.1 Error: no valid recipients"
        return None

    def new_spool(self) -> Spool:
        smtp = self.config.smtp
        return Spool(self.gateway.spool_dir, smtp.memory_spool_limit, smtp.max_message_size, self.gateway.files)

    def on_data_lost(self, spool: Spool) -> None:
        spool.discard()
        if self.txn is not None:
            self._event(
                "data",
                size=spool.received,
                detail={"incomplete": True, "note": "connection lost during DATA; nothing was accepted"},
            )
            self.txn = None

    def on_data_undecodable(self, spool: Spool, error: Exception) -> str:
        """A fault while decoding DATA: its end cannot be found, so the connection is closed with 421."""
        spool.discard()
        values = {"check": "session", "problem": type(error).__name__}
        reply = self._refuse(Verdict(Action.TEMPFAIL, "infra.check_failed", values, smtp_code=421), "data")
        self.txn = None
        return reply

    async def on_data_end(self, spool: Spool, *, line_too_long: bool, bare_newlines: int) -> str:
        txn = self.txn
        assert txn is not None
        txn.spool = spool
        try:
            return await self._finish_transaction(txn, spool, line_too_long, bare_newlines)
        finally:
            spool.discard()
            self.txn = None

    async def _finish_transaction(self, txn: Transaction, spool: Spool, line_too_long: bool, bare_newlines: int) -> str:
        fields = header_fields(spool.head())
        msgid = message_id(fields)
        data_detail: dict[str, Any] = {}
        if bare_newlines:
            data_detail["bare_newlines"] = bare_newlines
        verdict: Verdict | None = None
        record: list[dict[str, Any]] = []
        if spool.failure is not None:  # the spool kept nothing: the sender must send it again
            verdict = self._spool_failed(txn, spool.failure)
        elif spool.overflowed:  # the spool kept nothing past the limit: never deliver a truncated message
            verdict = Verdict.reject("msg.too_big", size=spool.received, limit=self.config.smtp.max_message_size)
        elif line_too_long:
            verdict = Verdict.reject(
                "protocol.violation",
                problem=f"a line in the message is longer than {self.config.smtp.max_line_length} bytes",
            )
        elif bare_newlines and self.config.smtp.bare_newline == "reject":
            verdict = Verdict(Action.REJECT, "protocol.bare_lf", detail={"bare_newlines": bare_newlines})
        else:
            result = await self.gateway.chain.run(Stage.DATA, self._ctx())
            verdict, record = result.verdict, result.record
            if verdict is None:
                self._apply_tags(result)
        if record:
            data_detail["checks"] = record
        self._event("data", size=spool.received, message_id=msgid, detail=data_detail)
        if verdict is not None:
            reply = self._refuse(verdict, "data")
            return reply
        return await self._deliver(txn, spool, msgid)

    async def _deliver(self, txn: Transaction, spool: Spool, msgid: str | None) -> str:
        gateway = self.gateway
        forged = await self._forged_fields(spool)
        if gateway.downstream is not None:
            return await self._deliver_downstream(gateway.downstream, txn, spool, msgid, forged)
        folder = txn.folder or "INBOX"
        targets: list[Target] = []
        for recipient in txn.recipients:
            target = Target(recipient.mailbox, self._folder(recipient, folder))
            if target not in targets:
                targets.append(target)
        prefix = self._trace_headers(txn)
        size = len(prefix) + spool.size - sum(end - start for start, end in forged)
        try:
            copies = gateway.maildirs.plan(targets, size)
        except MaildirError as exc:
            return self._storage_failed(txn, exc)
        reply = replies.Reply(
            250,
            "2.0.0",
            replies.with_ref(f"Message accepted and stored for {len(txn.recipients)} recipient(s)", txn.ref),
        )
        # The evidence is made before the message is written, so the delivery threads can commit it
        # as soon as the message is on disk (never before), without waking this loop in between.
        by_target = {(copy.mailbox, copy.folder): copy for copy in copies}
        evidence = [
            self._delivery_event(
                recipient,
                by_target[(recipient.mailbox, self._folder(recipient, folder))],
                msgid,
                size,
                txn.results.get("folder_values"),
            )
            for recipient in txn.recipients
        ]
        accepted = {"forged_fields_removed": len(forged)} if forged else {}
        evidence.append(self._accept_event(txn, reply, msgid, size, **accepted))

        def write(sink: Sink) -> None:
            sink.write(prefix)
            spool.copy_into(sink, without=forged)

        try:
            await gateway.delivery.deliver(copies, write, evidence)
        except MaildirError as exc:
            return self._storage_failed(txn, exc)
        except StoreError as exc:  # the evidence is not safe: the mail was taken back, the sender retries
            log.error("evidence for %s could not be stored (%s): delivery withdrawn, answering 4xx", txn.ref, exc)
            return self._refuse(Verdict.tempfail(exc.reason, problem="the event store is not writable"), "data")
        self._accepted()
        return reply.wire()

    @staticmethod
    def _spool_failed(txn: Transaction, error: Exception) -> Verdict:
        # An OSError (full or read-only disk) is the operator's to fix; anything else is our bug.
        log.error(
            "the spool failed while %s arrived (%s); its rest was read and discarded, answering 4xx",
            txn.ref,
            error,
            exc_info=None if isinstance(error, OSError) else error,
        )
        problem = error.strerror if isinstance(error, OSError) and error.strerror else type(error).__name__
        return Verdict.tempfail("infra.storage", problem=f"the spool for arriving messages failed: {problem}")

    def _storage_failed(self, txn: Transaction, error: MaildirError) -> str:
        log.error("delivery of %s failed: %s", txn.ref, error)
        return self._refuse(Verdict.tempfail("infra.storage", problem=str(error)), "data")

    async def _forged_fields(self, spool: Spool) -> list[tuple[int, int]]:
        """Incoming Authentication-Results fields with our authserv-id (RFC 8601 section 5): left out on delivery."""
        hostname = self.config.smtp.hostname

        def scan() -> list[tuple[int, int]]:
            with spool.open() as message:
                return authresults.forged_fields(message, hostname)

        # A message in memory is scanned here (its header block, usually a microsecond); a spooled
        # one may have a header block of megabytes on disk, so that one is read off the loop.
        return scan() if spool.in_memory else await asyncio.to_thread(scan)

    @staticmethod
    def _accepted() -> None:
        """Count an accepted message once the sender is told so (its evidence committed or handed on)."""
        metrics.count_decision("accept", "delivered")

    def _accept_event(
        self, txn: Transaction, reply: replies.Reply, msgid: str | None, size: int, **detail: Any
    ) -> Event:
        return self._new_event(
            "accept",
            smtp_code=250,
            enhanced_code="2.0.0",
            reply=reply.line,
            message_id=msgid,
            size=size,
            reason="delivered",
            detail={"recipients": [r.address for r in txn.recipients], **detail},
        )

    async def _deliver_downstream(
        self,
        downstream: Downstream,
        txn: Transaction,
        spool: Spool,
        msgid: str | None,
        forged: list[tuple[int, int]],
    ) -> str:
        """Proxy mode: the downstream's answers become ours (deliver/downstream.py), each one an event."""
        prefix = self._trace_headers(txn)
        if txn.folder and txn.folder != "INBOX":  # LMTP cannot name a folder: a Sieve rule files by this header
            prefix += f"X-Mailwarden-Folder: {ascii_printable(txn.folder, 100)}\r\n".encode()
        options = {o.upper() for o in txn.mail_options}
        mailboxes = list(dict.fromkeys(r.mailbox for r in txn.recipients))
        digest = await asyncio.to_thread(content_digest, spool.open)  # what the client sent, not our headers
        earlier = await asyncio.to_thread(
            earlier_deliveries, self.gateway.store, msgid, txn.sender or "", digest, mailboxes
        )
        outcomes = [already_delivered(m, earlier[m]) for m in mailboxes if m in earlier]
        try:
            if len(outcomes) < len(mailboxes):
                outcomes += await downstream.deliver(
                    txn.sender or "",
                    [m for m in mailboxes if m not in earlier],
                    prefix,
                    lambda: spool.open(without=forged),
                    smtputf8="SMTPUTF8" in options,
                    eightbit="BODY=8BITMIME" in options,
                )
        except DownstreamError as exc:
            log.warning("downstream delivery of %s failed: %s", txn.ref, exc.problem)
            return self._refuse(Verdict.tempfail("infra.downstream", problem=exc.problem), "data")
        verdict = decide(outcomes)
        refused = [o for o in outcomes if not o.reply.accepted]
        if verdict is not None:
            reply = replies.for_verdict(verdict, txn.ref, self.config.explain.url, utf8=True)
        else:
            report = "".join(f"; refused by the mailbox server for {o.mailbox}: {o.reply.line}" for o in refused)
            delivered = len(outcomes) - len(refused)
            text = replies.with_ref(f"Message delivered for {delivered} recipient(s){report}", txn.ref)
            reply = replies.plain(250, "2.0.0", text, utf8=True)
        size = len(prefix) + spool.size - sum(end - start for start, end in forged)
        by_mailbox = {o.mailbox: o for o in outcomes}
        for recipient in txn.recipients:
            outcome = by_mailbox[recipient.mailbox]
            detail = {
                "mailbox": recipient.mailbox,
                "downstream": downstream.label,
                "downstream_reply": outcome.reply.line,
                "downstream_stage": outcome.stage,
                "content_sha256": digest,
            }
            handed_to = lmtp_session(outcome.reply.line)  # the link to Dovecot's side (messages/keys.py)
            if handed_to is not None:
                detail["downstream_session"] = handed_to
            if outcome.reply.accepted:
                self._event(
                    "deliver",
                    recipient=recipient.address,
                    message_id=msgid,
                    size=size,
                    reason="delivered",
                    detail=detail,
                )
                continue
            refusal = verdict_for(outcome)
            self._refusal_event(
                refusal.action, refusal.reason, reply, detail, recipient=recipient.address, message_id=msgid
            )
        if verdict is None:
            removed = {"forged_fields_removed": len(forged)} if forged else {}
            accept = self._accept_event(txn, reply, msgid, size, downstream=downstream.label, **removed)
            self.gateway.store.append(accept)
            self._accepted()
        try:
            await self.gateway.store.durable()
        except StoreError as exc:  # the downstream has the mail: it cannot be taken back, the events are retried
            log.error("evidence for %s not yet stored (%s); the downstream already answered", txn.ref, exc)
        return self._own(reply.wire())

    @staticmethod
    def _folder(recipient: Recipient, transaction_folder: str) -> str:
        """A recipient's own folder (from its check) wins over the transaction's (from a TAG)."""
        return recipient.folder if recipient.folder != "INBOX" else transaction_folder

    def _delivery_event(
        self,
        recipient: Recipient,
        copy: Delivered,
        msgid: str | None,
        size: int,
        folder_values: Mapping[str, object] | None = None,
    ) -> Event:
        detail: dict[str, Any] = {"mailbox": copy.mailbox, "folder": copy.folder, "uid": copy.uid}
        if folder_values and copy.folder != "INBOX":
            detail["values"] = dict(folder_values)
        return self._new_event(
            "deliver",
            recipient=recipient.address,
            message_id=msgid,
            size=size,
            reason="delivered.junk" if copy.folder == "Junk" else "delivered",
            detail=detail,
        )

    def _trace_headers(self, txn: Transaction) -> bytes:
        session = self.session
        helo = ascii_printable(session.helo or "unknown", 200).replace("(", "[").replace(")", "]")
        protocol = (
            ("UTF8SMTP" if any(o.upper() == "SMTPUTF8" for o in txn.mail_options) else "ESMTP")
            if session.esmtp
            else "SMTP"
        )
        if session.tls and session.esmtp:
            protocol += "S"
        rdns = ascii_printable(session.client_name or "unknown", 200)
        recipient = f"\r\n\tfor <{ascii_printable(txn.recipients[0].address, 300)}>" if len(txn.recipients) == 1 else ""
        received = (
            f"Received: from {helo} ({rdns} [{session.client_ip}])\r\n"
            f"\tby {self.config.smtp.hostname} (mailwarden) with {protocol} id {txn.ref}{recipient};\r\n"
            f"\t{format_datetime(datetime.now(UTC))}\r\n"
        )
        fields = "".join(f"{name}: {value}\r\n" for name, value in self._evidence_fields(txn))
        return (received + fields).encode("utf-8")

    def _evidence_fields(self, txn: Transaction) -> list[tuple[str, str]]:
        """The fields an accepted message gets below our Received: Authentication-Results, our ref, the checks' tags.

        Values are ready to send (folded with CRLF+TAB where long, stranger text escaped).
        """
        fields: list[tuple[str, str]] = []
        auth = authresults.header(self.config.smtp.hostname, txn.results)
        if auth is not None:
            name, _, value = auth.partition(": ")
            fields.append((name, value.removesuffix("\r\n")))
        fields.append(("X-Mailwarden-Ref", txn.ref))
        fields.extend((name, printable(value)) for name, value in txn.headers)
        return fields

    # ------------------------------------------------------------------ endings and protocol errors
    def on_protocol_reply(self, reply: str, command: str | None = None) -> str:
        """A refusal made by the protocol layer (syntax, sequence, limits): given our ref and recorded.

        The one place these get their ref and event, so no refusal string elsewhere has to remember it.
        """
        sent = replies.parse(reply)
        problem = sent.text.removeprefix(f"{self.config.smtp.hostname} ").removeprefix("Error: ")
        reason = PROTOCOL_REASONS.get((sent.code, sent.enhanced), "protocol.violation")
        rendered = replies.plain(
            sent.code, sent.enhanced, replies.with_ref(sent.text, self.ref, self.config.explain.url), utf8=True
        )
        detail: dict[str, Any] = {"stage": "protocol", "values": {"problem": problem}}
        if command:
            detail["command"] = command
        self._refusal_event(Action.REJECT if sent.code >= 500 else Action.TEMPFAIL, reason, rendered, detail)
        return rendered.wire()

    def on_timeout(self, seconds: float, *, in_data: bool) -> str:
        verdict = Verdict.tempfail("protocol.timeout", seconds=int(seconds))
        rendered = replies.for_verdict(verdict, self.ref, self.config.explain.url, utf8=True)
        # "421 <hostname> ..." (RFC 5321 3.8); the event records the reply as sent
        reply = replies.Reply(rendered.code, rendered.enhanced, f"{self.config.smtp.hostname} {rendered.text}")
        self._event(
            "tempfail",
            smtp_code=reply.code,
            enhanced_code=reply.enhanced,
            reply=reply.line,
            reason="protocol.timeout",
            detail={"stage": "data" if in_data else "command", "seconds": seconds},
        )
        return reply.line

    def on_proxy_refused(self, peer_ip: str, peer_port: int, problem: str) -> str:
        """A connection without a usable PROXY header (smtp.proxy_protocol): recorded, answered 421, closed."""
        self._started = time.monotonic()
        self.session = SessionInfo(
            id=self.gateway.refs.new(), node=self.gateway.node, client_ip=peer_ip, client_port=peer_port
        )
        return self.on_protocol_reply(
            f"421 4.7.0 {self.config.smtp.hostname} Error: {printable(problem, 200)}; closing", "PROXY"
        )

    def on_non_smtp(self, verb: str) -> str:
        return self.on_protocol_reply(
            f"421 4.7.0 {self.config.smtp.hostname} Error: non-SMTP command ({printable(verb)}); closing", verb
        )

    def on_too_many_errors(self, errors: int) -> str:
        return self.on_protocol_reply(
            f"421 4.7.0 {self.config.smtp.hostname} Error: too many errors ({errors}); closing"
        )

    def on_internal_error(self, error: Exception) -> str:
        verdict = Verdict.tempfail("infra.check_failed", check="session", problem=type(error).__name__)
        return self._refuse(verdict, "protocol")

    def shutdown_reply(self) -> str:
        if not self.session.id:  # a PROXY header still awaited: the refusal needs a session to be recorded in
            self.session.id = self.gateway.refs.new()
        return self._refuse(Verdict.tempfail("infra.shutdown"), "shutdown")

    def release_slot(self) -> None:
        """No longer count this connection against the limits (`smtp.max_connections`, `max_connections_per_ip`)."""
        if self._counted:
            self.gateway.services.counts.closed(self.session.client_ip)
            self._counted = False

    def on_disconnect(self, *, lost: bool) -> None:
        self.release_slot()
        if not self.session.id:
            return
        detail: dict[str, Any] = {"commands": dict(self.counts)}
        if lost:
            detail["lost"] = True
        if self._started:
            detail["seconds"] = round(time.monotonic() - self._started, 3)
        self._event("disconnect", ref=self.session.id, detail=detail)
