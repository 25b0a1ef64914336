"""Content checks before the final reply to DATA: virus, spam, macros, dangerous attachments.

The scanners are independent, so they run at the same time, each under its own timeout, and the
whole verdict under `scan.budget` (the sender waits for our reply). The verdict follows
"permanent only on proof": a definitive finding refuses (virus > dangerous file > macro >
structure > uninspectable archive > spam) even when another scanner failed; without one, a failed scanner defers
(451 4.3.0) unless that scanner is configured to fail open. Every finding - virus name, score and
symbols, macro keywords, what could not be inspected - goes into the verdict's detail (recorded
in the data event) and, for accepted mail, into X-Spam-* / X-Virus-Scanned headers.

At RCPT the check keeps one transaction to one content policy: a recipient whose mailbox settings
(spam refusal, macro handling) differ from the first accepted recipient's is deferred with
452 4.5.3, so the single DATA verdict is right for everyone and nothing is bounced later.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Mapping
from dataclasses import dataclass
from typing import Any

from mailwarden import metrics
from mailwarden.checks.base import Action, Check, CheckContext, Recipient, Services, Transaction, Verdict
from mailwarden.config import Config
from mailwarden.dns import Resolver
from mailwarden.headers import header_fields
from mailwarden.scan.attachments import ArchiveLimits
from mailwarden.scan.clamd import ClamdClient, ClamdResult, StreamTooLong
from mailwarden.scan.content import ContentLimits, ContentReport, inspect_message, locate_virus, triage
from mailwarden.scan.dkim import DkimResult, txt_lookup
from mailwarden.scan.dkim import verify as verify_dkim
from mailwarden.scan.dmarc import DmarcResult, organizational_domain
from mailwarden.scan.dmarc import evaluate as evaluate_dmarc
from mailwarden.scan.mime import might_carry_files
from mailwarden.scan.net import ScannerError
from mailwarden.scan.spam import Envelope, RspamdClient, SpamdClient, SpamResult, SpamScanner
from mailwarden.scan.workers import WorkerError, WorkerPool
from mailwarden.spool import Spool

log = logging.getLogger(__name__)

JUNK = "Junk"
TRIAGE_LIMIT = 2 * 1024 * 1024  # bytes: the light pass of a message this size costs about a millisecond
LOCATE_BUDGET = 10.0  # seconds to name the infected attachment after the budget; else "the message"


@dataclass(frozen=True)
class ContentPolicy:
    """The per-mailbox part of the content verdict (mailbox settings override the config)."""

    spam_reject: bool
    macros: str

    @classmethod
    def of(cls, config: Config, settings: Mapping[str, Any]) -> ContentPolicy:
        spam_reject = settings.get("spam_reject", True)
        macros = settings.get("macros", config.scan.content.macros)
        return cls(bool(spam_reject), str(macros))


def _switch(value: object) -> bool:
    return str(value).lower() not in ("off", "false", "no", "0")


def parse_setting(name: str, value: str) -> object:
    """A mailbox setting from the command line (`users set ADDRESS spam_reject=off`), validated."""
    if name == "spam_reject":
        if value.lower() not in ("on", "off", "true", "false", "yes", "no", "1", "0"):
            raise ValueError(f"spam_reject takes on or off, not {value!r}")
        return _switch(value)
    if name == "macros":
        if value not in ("reject", "tag", "off"):
            raise ValueError(f"macros takes reject, tag or off, not {value!r}")
        return value
    raise ValueError(f"unknown mailbox setting {name!r}; known: spam_reject, macros")


@dataclass(frozen=True)
class _Auth:
    dkim: list[DkimResult]
    dmarc: DmarcResult | None


@dataclass
class _Outcome:
    """What each scanner said (or the error it ended with)."""

    virus: ClamdResult | None = None
    spam: SpamResult | None = None
    report: ContentReport | None = None
    auth: _Auth | None = None
    errors: dict[str, str] | None = None
    unscanned: dict[str, str] | None = None

    def error(self, scanner: str, problem: str) -> None:
        self.errors = {**(self.errors or {}), scanner: problem}

    def skip(self, scanner: str, why: str) -> None:
        self.unscanned = {**(self.unscanned or {}), scanner: why}


def _source(spool: Spool) -> bytes | str:
    """What a worker process reads: the message itself (small) or the spool file's path."""
    return spool.content() if spool.in_memory else str(spool.path)


async def _timed(scanner: str, job: Awaitable[Any]) -> Any:
    """A scanner's job, its time observed (also when the budget cuts it off)."""
    started = time.perf_counter()
    try:
        return await job
    finally:
        metrics.observe_scanner(scanner, time.perf_counter() - started)


class ContentCheck(Check):
    name = "content"

    def __init__(self, config: Config, resolver: Resolver) -> None:
        self.config = config
        self.resolver = resolver
        scan = config.scan
        self.clamd = (
            ClamdClient(
                scan.clamd.address,
                timeout=scan.clamd.timeout,
                max_stream=scan.clamd.max_stream,
                pool_size=scan.clamd.pool_size,
            )
            if scan.clamd.address
            else None
        )
        self.spam: SpamScanner | None = None
        if scan.spam.address:
            if scan.spam.engine == "rspamd":
                self.spam = RspamdClient(scan.spam.address, timeout=scan.spam.timeout, pool_size=scan.spam.pool_size)
            else:
                self.spam = SpamdClient(scan.spam.address, timeout=scan.spam.timeout)
        content = scan.content
        self.limits = ContentLimits(
            max_depth=content.max_mime_depth,
            max_parts=content.max_mime_parts,
            archive=ArchiveLimits(
                depth=content.archive_depth,
                members=content.archive_members,
                total=content.archive_total_mb * 1024 * 1024,
            ),
            dangerous_extensions=frozenset(content.dangerous_extensions),
        )
        self.inspect_files = content.dangerous_attachments or content.macros != "off"
        self.workers = WorkerPool(content.workers, content.worker_memory_mb)
        if scan.auth.dmarc:
            organizational_domain("example.org")  # load the public suffix list now (0.3 s), not in a session
        self.timeout = scan.budget + LOCATE_BUDGET + 5.0  # the budget is enforced here, with a precise reply

    @classmethod
    def create(cls, services: Services) -> Check:
        return cls(services.config, services.resolver)

    # ------------------------------------------------------------------ RCPT: one policy per transaction
    async def rcpt(self, ctx: CheckContext, recipient: str) -> Verdict | Recipient | None:
        txn, resolved = ctx.txn, ctx.resolved
        if txn is None or resolved is None or not txn.recipients:
            return None
        first = ContentPolicy.of(self.config, txn.recipients[0].settings)
        mine = ContentPolicy.of(self.config, resolved.settings)
        if mine == first:
            return None
        return Verdict(
            Action.TEMPFAIL,
            "rcpt.policy_split",
            {"recipient": recipient},
            detail={"policy": vars(mine), "first_recipient_policy": vars(first)},
        )

    # ------------------------------------------------------------------ DATA
    async def data(self, ctx: CheckContext) -> Verdict | None:
        txn = ctx.txn
        assert txn is not None and txn.spool is not None
        outcome = await self._scan(ctx, txn, txn.spool)
        if outcome.auth is not None:
            txn.results["dkim"] = [r.to_dict() for r in outcome.auth.dkim]
            if outcome.auth.dmarc is not None:
                txn.results["dmarc"] = outcome.auth.dmarc.to_dict()
        policy = ContentPolicy.of(self.config, txn.recipients[0].settings if txn.recipients else {})
        return await self._decide(txn, txn.spool, outcome, policy)

    async def _scan(self, ctx: CheckContext, txn: Transaction, spool: Spool) -> _Outcome:
        jobs: dict[str, Awaitable[Any]] = {}
        outcome = _Outcome()
        if self.clamd is not None:
            jobs["clamd"] = self.clamd.scan(spool)
        if self.spam is not None:
            if spool.size <= self.config.scan.spam.max_size:
                session = ctx.session
                envelope = Envelope(
                    session.client_ip,
                    session.helo,
                    txn.sender or "",
                    tuple(r.address for r in txn.recipients),
                    session.client_name,
                    txn.ref,
                    self.config.smtp.hostname,
                )
                jobs[self.spam.engine] = self.spam.check(spool, envelope)
            else:
                outcome.skip(self.spam.engine, f"larger than scan.spam.max_size ({self.config.scan.spam.max_size})")
        if self.inspect_files and might_carry_files(spool.head()):
            jobs["attachments"] = self._inspect(spool)
        if self.config.scan.auth.dkim or self.config.scan.auth.dmarc:
            jobs["dkim/dmarc"] = self._authenticate(txn, spool)
        tasks = {name: asyncio.ensure_future(_timed(name, job)) for name, job in jobs.items()}
        if not tasks:
            return outcome
        _, pending = await asyncio.wait(tasks.values(), timeout=self.config.scan.budget)
        for task in pending:
            task.cancel()
        if pending:
            await asyncio.wait(pending)
        for name, task in tasks.items():
            if task in pending:  # a finding of the others may still be proof enough to refuse
                problem = f"did not finish within the budget of {self.config.scan.budget:g}s"
                log.error("content scan of %s: %s %s", txn.ref, name, problem)
                outcome.error(name, problem)
            else:
                self._collect(outcome, name, task)
        return outcome

    async def _inspect(self, spool: Spool) -> ContentReport:
        """Messages up to TRIAGE_LIMIT get a cheap first pass here; the heavy parsing always runs in a worker."""
        if spool.size <= TRIAGE_LIMIT:
            quick = triage(_source(spool), self.limits)
            if quick is not None:
                return quick
        full: ContentReport = await self.workers.run(
            inspect_message, _source(spool), self.limits, budget=self.config.scan.content.timeout
        )
        return full

    async def _authenticate(self, txn: Transaction, spool: Spool) -> _Auth:
        """DKIM signatures, then the From domain's DMARC policy with them and the SPF result."""
        settings = self.config.scan.auth
        dkim: list[DkimResult] = []
        try:
            async with asyncio.timeout(settings.timeout):
                fields = header_fields(spool.head())
                signed = any(name.lower() == "dkim-signature" for name, _ in fields)
                if settings.dkim and signed and spool.size <= settings.max_size:
                    message = spool.content() if spool.in_memory else await asyncio.to_thread(spool.read_all)
                    dkim = await verify_dkim(message, txt_lookup(self.resolver))
                elif settings.dkim and signed:
                    dkim = [DkimResult("neutral", "", "", f"larger than scan.auth.max_size ({settings.max_size})")]
                dmarc = None
                if settings.dmarc:
                    dmarc = await evaluate_dmarc(self.resolver, fields, txn.results.get("spf"), dkim)
        except TimeoutError:
            dmarc = DmarcResult("temperror", "", reason=f"no answer within {settings.timeout:g}s")
        return _Auth(dkim, dmarc)

    def _collect(self, outcome: _Outcome, name: str, task: asyncio.Future[Any]) -> None:
        error = task.exception()
        if error is None:
            result = task.result()
            if isinstance(result, ClamdResult):
                outcome.virus = result
            elif isinstance(result, SpamResult):
                outcome.spam = result
            elif isinstance(result, _Auth):
                outcome.auth = result
            else:
                outcome.report = result
            return
        if isinstance(error, StreamTooLong) and self.config.scan.clamd.oversize == "accept":
            log.warning("message not virus-scanned: %s (scan.clamd.oversize = accept)", error)
            outcome.skip(name, str(error))
            return
        if isinstance(error, TimeoutError):
            problem = f"no answer within {self.config.scan.content.timeout:g}s"
        elif isinstance(error, (ScannerError, WorkerError)):
            problem = str(error)
        else:
            log.error("content scanner %s failed", name, exc_info=error)
            problem = f"{type(error).__name__}: {error}"
        fail_open = (name == "clamd" and self.config.scan.clamd.fail_open) or (
            self.spam is not None and name == self.spam.engine and self.config.scan.spam.fail_open
        )
        if fail_open:
            log.error("%s failed (%s): ACCEPTING MAIL UNSCANNED because it is configured to fail open", name, problem)
            outcome.skip(name, f"failed open: {problem}")
        else:
            outcome.error(name, problem)

    async def _decide(self, txn: Transaction, spool: Spool, outcome: _Outcome, policy: ContentPolicy) -> Verdict:
        detail = self._detail(outcome)
        report, spam = outcome.report, outcome.spam
        if outcome.virus is not None and outcome.virus.virus is not None:
            where = await self._where(spool, outcome)
            return Verdict(Action.REJECT, "msg.virus", {"virus": outcome.virus.virus, "where": where}, detail=detail)
        if report is not None and report.dangerous and self.config.scan.content.dangerous_attachments:
            danger = report.dangerous[0]
            values = {"filename": danger.filename, "filetype": danger.filetype}
            return Verdict(Action.REJECT, "msg.dangerous_attachment", values, detail=detail)
        macro = next((m for m in report.macros if m.suspicious), None) if report is not None else None
        if macro is not None and policy.macros == "reject":
            values = {"filename": macro.filename, "finding": macro.summary}
            return Verdict(Action.REJECT, "msg.macro", values, detail=detail)
        if report is not None and report.structure_exceeded:
            return Verdict(Action.REJECT, "msg.too_complex", {"problem": report.structure_exceeded}, detail=detail)
        gap = report.uninspected[0] if report is not None and report.uninspected else None
        if gap is not None and self.config.scan.content.incomplete_archives == "reject":
            return Verdict(Action.REJECT, "msg.uninspectable", {"path": gap.path, "limit": gap.limit}, detail=detail)
        dmarc = outcome.auth.dmarc if outcome.auth is not None else None
        failed_dmarc = dmarc is not None and dmarc.result == "fail" and dmarc.applied
        if failed_dmarc and dmarc is not None and dmarc.policy == "reject" and self.config.scan.auth.dmarc_reject:
            values = {"domain": dmarc.domain, "dmarc_detail": dmarc.reason}
            return Verdict(Action.REJECT, "msg.dmarc_reject", values, detail=detail)
        spam_limit = self.config.scan.spam.reject_score
        if spam is not None and spam.score >= spam_limit and policy.spam_reject:
            values = {"score": f"{spam.score:g}", "limit": f"{spam_limit:g}", "symbols": spam.top()}
            return Verdict(Action.REJECT, "msg.spam", values, detail=detail)
        if outcome.errors:
            scanners = " and ".join(sorted(outcome.errors))
            return Verdict(Action.TEMPFAIL, "infra.scanner_unavailable", {"scanner": scanners}, detail=detail)
        headers = self._headers(outcome)
        junk = spam is not None and spam.score >= self.config.scan.spam.tag_score
        if (
            failed_dmarc
            and dmarc is not None
            and dmarc.policy == "quarantine"
            and self.config.scan.auth.dmarc_quarantine
        ):
            headers.append(("X-Mailwarden-Warning", f"DMARC quarantine for {dmarc.domain}: {dmarc.reason}"))
            junk = True
        if gap is not None:
            headers.append(("X-Mailwarden-Warning", f"not inspected completely: {gap.path} ({gap.limit})"))
        if macro is not None and policy.macros == "tag":
            headers.append(("X-Mailwarden-Warning", f"macro in {macro.filename}: {macro.summary}"))
            junk = True
        return Verdict(
            Action.TAG,
            "delivered.junk" if junk else "delivered",
            {"score": f"{spam.score:g}" if spam else None},
            detail=detail,
            headers=tuple(headers),
            folder=JUNK if junk else None,
        )

    async def _where(self, spool: Spool, outcome: _Outcome) -> str:
        """Name the infected attachment: each attachment is scanned alone (only after a finding)."""
        assert self.clamd is not None
        try:
            label = await self.workers.run(
                locate_virus,
                _source(spool),
                self.limits,
                self.clamd.address,
                self.config.scan.clamd.timeout,
                budget=LOCATE_BUDGET,
            )
        except (TimeoutError, WorkerError) as exc:
            log.warning("could not tell which attachment carries the virus: %s", exc)
            label = None
        return f"the attachment {label}" if label else "the message"

    def _detail(self, outcome: _Outcome) -> dict[str, Any]:
        detail: dict[str, Any] = {}
        if outcome.virus is not None:
            detail["clamd"] = {"virus": outcome.virus.virus, "reply": outcome.virus.reply}
        if outcome.spam is not None:
            detail["spam"] = outcome.spam.detail()
            detail["score"] = outcome.spam.score  # a scalar, for the trace's explanation of delivered.junk
        report = outcome.report
        if report is not None:
            detail["content"] = {
                "parts": report.parts,
                "attachments": report.attachments[:20],
                "dangerous": [vars(d) for d in report.dangerous[:10]],
                "macros": [
                    {
                        "file": m.filename,
                        "suspicious": m.suspicious,
                        "summary": m.summary,
                        "flags": m.flags,
                        "keywords": list(m.keywords),
                        **({"note": m.note} if m.note else {}),
                    }
                    for m in report.macros[:10]
                ],
            }
            if report.problems:
                detail["content"]["problems"] = report.problems[:20]
            if report.uninspected:
                detail["content"]["uninspected"] = [vars(gap) for gap in report.uninspected[:10]]
        if outcome.auth is not None:
            detail["dkim"] = [r.to_dict() for r in outcome.auth.dkim]
            if outcome.auth.dmarc is not None:
                detail["dmarc"] = outcome.auth.dmarc.to_dict()
        if outcome.errors:
            detail["errors"] = outcome.errors
        if outcome.unscanned:
            detail["unscanned"] = outcome.unscanned
        return detail

    def _headers(self, outcome: _Outcome) -> list[tuple[str, str]]:
        hostname = self.config.smtp.hostname
        headers: list[tuple[str, str]] = []
        if outcome.virus is not None:
            headers.append(("X-Virus-Scanned", f"clamd at {hostname}: clean"))
        spam = outcome.spam
        if spam is not None:
            settings = self.config.scan.spam
            flag = spam.score >= settings.tag_score
            headers.append(("X-Spam-Flag", "YES" if flag else "NO"))
            headers.append(("X-Spam-Score", f"{spam.score:g}"))
            headers.append(
                (
                    "X-Spam-Status",
                    f"{'Yes' if flag else 'No'}, score={spam.score:g} tag={settings.tag_score:g} "
                    f"reject={settings.reject_score:g} engine={spam.engine}",
                )
            )
            headers.append(("X-Spam-Symbols", spam.top(12)[:900]))
        return headers
