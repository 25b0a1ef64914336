"""Runs the configured checks of one stage in order and records what each decided.

Like Haraka's plugin timeouts: a check that raises or runs past its timeout yields a temporary
failure (infra.check_failed, 451 4.3.0) - never a silent accept and never a permanent refusal.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from mailwarden.checks.base import Action, Check, CheckContext, Recipient, Stage, Verdict

log = logging.getLogger(__name__)


@dataclass
class ChainResult:
    """The outcome of one stage: the deciding verdict (if any), TAG verdicts, and the record."""

    verdict: Verdict | None = None
    tags: list[Verdict] = field(default_factory=list)
    recipient: Recipient | None = None
    record: list[dict[str, Any]] = field(default_factory=list)


class CheckChain:
    def __init__(self, checks: Sequence[Check], timeout: float) -> None:
        self.checks = list(checks)
        self.timeout = timeout
        self._by_stage = {stage: [c for c in self.checks if c.acts_on(stage)] for stage in Stage}

    def names(self, stage: Stage) -> list[str]:
        return [check.name for check in self._by_stage[stage]]

    async def run(self, stage: Stage, ctx: CheckContext, recipient: str | None = None) -> ChainResult:
        result = ChainResult()
        for check in self._by_stage[stage]:
            started = time.perf_counter()
            outcome = await self._run_one(check, stage, ctx, recipient)
            entry: dict[str, Any] = {"check": check.name, "ms": round((time.perf_counter() - started) * 1000, 3)}
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
            if isinstance(outcome, Verdict):
                if outcome.action is Action.TAG:
                    result.tags.append(outcome)
                    continue
                result.verdict = outcome
                break
        return result

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
        except Exception as exc:
            log.exception("check %s failed at %s (session %s)", check.name, stage, ctx.session.id)
            problem = f"{type(exc).__name__}: {exc}"
        return Verdict(
            Action.TEMPFAIL,
            "infra.check_failed",
            {"check": check.name, "problem": problem},
            detail={"check": check.name, "problem": problem},
        )
