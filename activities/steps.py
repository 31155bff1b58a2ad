"""Bookkeeping shared by every step activity: RUNNING on entry, the result on exit.

A step activity writes its own status and result so that one activity per step suffices
(each hop through the server costs latency); both writes are idempotent.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

from temporalio import activity

from activities import metrics
from activities.boundary import boundary
from models.io import (
    INLINE_OUTPUT_LIMIT,
    FailSubtaskInput,
    RecordResultInput,
    StepOutcome,
    StepOutput,
    StepRun,
)
from models.payload import cut_text
from models.task import InvalidTransition, Result, Status
from runtime.records import memory_of
from runtime.store import Store
from runtime.text import summarize


def preview(value: Any, *, limit: int = INLINE_OUTPUT_LIMIT) -> tuple[Any, bool]:
    """Return `value` if its JSON fits `limit`, else a truncated text preview and True."""
    text = json.dumps(value, default=str)
    if len(text) <= limit:
        return value, False
    cut = limit // 2
    omitted = len(text) - 2 * cut
    return f"{text[:cut]}\n…[{omitted} characters omitted]…\n{text[-cut:]}", True


__all__ = ["StepBook", "preview", "summarize"]


class StepBook:
    """Records a step's life in the store on behalf of the activity running it."""

    def __init__(self, store: Store) -> None:
        self.store = store

    async def begin(self, run: StepRun) -> StepOutcome | None:
        """Mark the step RUNNING; return its stored outcome instead if it already finished.

        An attempt can write its result and die before Temporal hears of it; the retry
        then hands back what was stored rather than doing the work twice.
        """
        done = await self.store.completed_result(run.subtask_id)
        if done is not None:
            activity.logger.info("%s already completed; returning the stored result",
                                 run.subtask_id)
            return self._outcome(run, done)
        info = activity.info()
        await self.store.start_subtask(run.subtask_id, attempt=info.attempt,
                                       at=datetime.now(UTC))
        return None

    async def full_inputs(self, run: StepRun) -> dict[str, Any]:
        """Return every dependency's complete output, loading truncated ones from the store."""
        out: dict[str, Any] = {}
        for step_id, dep in run.inputs.items():
            out[step_id] = (
                await self.store.get_output(dep.subtask_id) if dep.truncated else dep.output
            )
        return out

    async def finish(
        self,
        run: StepRun,
        *,
        result: Result,
        started: datetime,
    ) -> StepOutcome:
        """Store the result (COMPLETED or FAILED) and return what history should carry."""
        now = datetime.now(UTC)
        result.metrics.time_spent_s = (now - started).total_seconds()
        # A result held for review stays RUNNING until the workflow opens the review (and
        # announces REVIEWING): a reviewer who acts on the store's word is never refused.
        done = Status.RUNNING if run.hold_for_review else Status.COMPLETED
        status = done if result.success else Status.FAILED
        await self.store.finish_subtask(run.subtask_id, status=status, result=result,
                                        error=result.error, at=now)
        metrics.step_finished(Status.REVIEWING if status is Status.RUNNING else status,
                              run.step.type.value)
        if result.success and not run.hold_for_review:
            # Nobody reviews it: the result is final, and later agents of the project may
            # recall it. A reviewed result is remembered once approved (OrgActivities).
            title, content = memory_of(step_id=run.step.id, title=run.step.title,
                                       description=run.step.description, output=result.output)
            await self.store.remember(run.subtask_id, task_id=run.task_id,
                                      subtask=run.subtask_id, title=title, content=content,
                                      agent_id=run.agent_id)
        return self._outcome(run, result)

    @staticmethod
    def _outcome(run: StepRun, result: Result) -> StepOutcome:
        value, truncated = preview(result.output)
        return StepOutcome(
            success=result.success,
            output=StepOutput(
                step_id=run.step.id,
                subtask_id=run.subtask_id,
                output=value,
                truncated=truncated,
                summary=cut_text(result.summary),
            ),
            # An error text can be as big as what the code raised (the store keeps it all).
            error=None if result.error is None else cut_text(result.error),
            metrics=result.metrics,
        )


class SubtaskActivities:
    """Store writes the subtask workflow needs outside of a step activity."""

    def __init__(self, store: Store) -> None:
        self.store = store
        self.book = StepBook(store)

    @activity.defn(name="record_result")
    @boundary
    async def record_result(self, inp: RecordResultInput) -> StepOutcome:
        """Store a result produced elsewhere (a nested task) as the subtask's own."""
        started = datetime.now(UTC)
        if done := await self.book.begin(inp.run):
            return done
        result = Result(success=True, output=inp.output, summary=inp.summary,
                        metrics=inp.metrics)
        return await self.book.finish(inp.run, result=result, started=started)

    @activity.defn(name="fail_subtask")
    @boundary
    async def fail_subtask(self, inp: FailSubtaskInput) -> None:
        """Record that a subtask ended without a result (its step raised, or it was cancelled).

        A subtask that completed meanwhile keeps its result: nothing produced is lost.
        """
        try:
            # A result the step already stored (its stdout, say) is kept.
            step_type = await self.store.finish_subtask(
                inp.subtask_id, status=inp.status, result=None, error=inp.error,
                at=datetime.now(UTC),
            )
        except InvalidTransition as e:
            activity.logger.warning("not recording %s for %s: %s", inp.status,
                                    inp.subtask_id, e)
        else:
            metrics.step_finished(inp.status, step_type)
