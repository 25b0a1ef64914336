"""Runs the configured checks of one stage in order and records what each decided.

Like Haraka's plugin timeouts: a check that raises or runs past its timeout yields a temporary
failure (infra.check_failed, 451 4.3.0) - never a silent accept and never a permanent refusal.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from typing import Any

from mailwarden import metrics
from mailwarden.checks.base import Action, Check, CheckContext, Recipient, Stage, Verdict
from mailwarden.store.base import StoreError

log = logging.getLogger(__name__)


@dataclass
class ChainResult:
    """The outcome of one stage: the deciding verdict (if any), TAG verdicts, and the record."""

    verdict: Verdict | None = None
    tags: list[Verdict] = field(default_factory=list)
    recipient: Recipient | None = None
    record: list[dict[str, Any]] = field(default_factory=list)


class CheckChain:
    def __init__(self, checks: Sequence[Check], timeout: float, reject_score: float = 10.0) -> None:
        self.checks = list(checks)
        self.timeout = timeout
        self.reject_score = reject_score
        self._by_stage = {stage: [c for c in self.checks if c.acts_on(stage)] for stage in Stage}

    def names(self, stage: Stage) -> list[str]:
        return [check.name for check in self._by_stage[stage]]

    async def run(self, stage: Stage, ctx: CheckContext, recipient: str | None = None) -> ChainResult:
        result = ChainResult()
        for check in self._by_stage[stage]:
            started = time.perf_counter()
            outcome = await self._run_one(check, stage, ctx, recipient)
            seconds = time.perf_counter() - started
            metrics.observe_check(check.name, seconds)
            entry: dict[str, Any] = {"check": check.name, "ms": round(seconds * 1000, 3)}
            if isinstance(outcome, Recipient):
                result.recipient = ctx.resolved = outcome
                entry["result"] = "resolved"
                entry["mailbox"] = outcome.mailbox
            elif outcome is None:
                entry["result"] = "pass"
            else:
                entry["result"] = outcome.action.value
                entry["reason"] = outcome.reason
                if outcome.detail:
                    entry["detail"] = dict(outcome.detail)
            result.record.append(entry)
            if isinstance(outcome, Verdict) and outcome.action is Action.SCORE:
                outcome = self._add_score(stage, ctx, check.name, outcome, entry)
            else:
                self._ledger(stage, ctx).pop(f"{check.name}@{stage}", None)
            if isinstance(outcome, Verdict):
                if outcome.action is Action.SCORE:
                    continue
                if outcome.action is Action.TAG:
                    result.tags.append(outcome)
                    continue
                result.verdict = outcome
                break
        return result

    @staticmethod
    def _ledger(stage: Stage, ctx: CheckContext) -> dict[str, float]:
        if stage in (Stage.CONNECT, Stage.HELO) or ctx.txn is None:
            return ctx.session.scores
        return ctx.txn.scores

    def _add_score(
        self, stage: Stage, ctx: CheckContext, name: str, verdict: Verdict, entry: dict[str, Any]
    ) -> Verdict:
        """Book the points; once the session's and transaction's points reach the limit, refuse."""
        self._ledger(stage, ctx)[f"{name}@{stage}"] = verdict.score
        scores = {**ctx.session.scores, **(ctx.txn.scores if ctx.txn is not None else {})}
        total = sum(scores.values())
        entry["score"] = verdict.score
        entry["total"] = total
        if total < self.reject_score:
            return verdict
        detail = {**dict(verdict.detail), "score": total, "reject_score": self.reject_score, "scores": scores}
        return replace(verdict, action=Action.REJECT, detail=detail)

    async def _run_one(
        self, check: Check, stage: Stage, ctx: CheckContext, recipient: str | None
    ) -> Verdict | Recipient | None:
        timeout = check.timeout or self.timeout
        try:
            async with asyncio.timeout(timeout):
                if stage is Stage.RCPT:
                    assert recipient is not None
                    return await check.rcpt(ctx, recipient)
                method = getattr(check, stage.value)
                outcome: Verdict | None = await method(ctx)
                return outcome
        except TimeoutError:
            log.error("check %s timed out after %.1fs at %s (session %s)", check.name, timeout, stage, ctx.session.id)
            problem = f"no answer within {timeout:g} seconds"
        except StoreError as exc:  # says what is wrong and what to do; a traceback per session says no more
            log.error("check %s failed at %s (session %s): %s", check.name, stage, ctx.session.id, exc)
            problem = f"{type(exc).__name__}: {exc}"
        except Exception as exc:
            log.exception("check %s failed at %s (session %s)", check.name, stage, ctx.session.id)
            problem = f"{type(exc).__name__}: {exc}"
        return Verdict(
            Action.TEMPFAIL,
            "infra.check_failed",
            {"check": check.name, "problem": problem},
            detail={"check": check.name, "problem": problem},
        )
