"""SubtaskWorkflow: one step of a plan, as its own child workflow `<task-id>/<step-id>`.

A child may be started before its dependencies finish; it then waits for one
`dependency_done` signal per missing dependency (from the dependency itself, or from the
parent) and runs the moment the last one arrives. Then, in the design's words: an agent
is assigned (waiting QUEUED for a free slot), executes the step, its reviewer approves or
rejects it (a rejection reruns it with the feedback), and it completes; trouble on the way
escalates up the chain of managers, whose decision reruns, reassigns, replans or skips it.
When it completes it releases the dependents it was told to, so the release costs no hop
through the parent.
"""

from __future__ import annotations

import asyncio
from typing import Any

from pydantic import ValidationError
from temporalio import workflow
from temporalio.exceptions import ActivityError, ApplicationError, ChildWorkflowError, FailureError

with workflow.unsafe.imports_passed_through():
    from models.io import (
        DependencyDone,
        StepOutcome,
        StepOutput,
        SubtaskInput,
        SubtaskResult,
        SubtaskView,
    )
    from models.review import (
        Decision,
        Escalation,
        EscalationReason,
        ResolveEscalation,
        ReviewAck,
        ReviewInput,
    )
    from models.task import Status, subtask_id
    from workflows.delivery import finish_despite_cancel
    from workflows.subtask.escalation import Ladder
    from workflows.subtask.outcomes import Done, Result, Trouble
    from workflows.subtask.review import Review
    from workflows.subtask.slots import Slots
    from workflows.subtask.state import Records, StepState, show_in_search, tell_parent
    from workflows.subtask.work import Work


# A payload that does not validate fails the workflow (naming the field) instead of
# failing its workflow task over and over.
@workflow.defn(name="SubtaskWorkflow", failure_exception_types=[ValidationError])
class SubtaskWorkflow:
    @workflow.init
    def __init__(self, inp: SubtaskInput) -> None:
        self._inp = inp
        self._inputs: dict[str, StepOutput] = {}  # the dependencies' outputs, as they arrive
        self._state = StepState(step_id=inp.step.id, type=inp.step.type.value)
        self._records = Records(inp, self._state)
        self._slots = Slots(inp, self._state)
        self._work = Work(inp, self._state, self._slots)
        self._review = Review(inp, self._state, self._slots, self._records)
        self._ladder = Ladder(inp, self._state, self._slots, self._work, self._records)

    # -- handlers ---------------------------------------------------------------------------
    @workflow.signal(name="slot_free")
    def slot_free(self) -> None:
        """A finishing subtask freed a slot this one was queued for."""
        self._slots.woken = True

    @workflow.signal(name="dependency_done")
    def dependency_done(self, sig: DependencyDone) -> None:
        out = sig.output
        if out.step_id not in self._inp.step.deps or (
                out.subtask_id != subtask_id(self._inp.task_id, out.step_id)):
            workflow.logger.warning("ignoring dependency_done for %r (%r): not a dependency",
                                    out.step_id, out.subtask_id)
            return
        # Delivery may happen twice (from the dependency and from the parent): keep the first.
        self._inputs.setdefault(out.step_id, out)

    @workflow.query(name="progress")
    def progress(self) -> SubtaskView:
        return self._state.view()

    @workflow.query(name="escalation")
    def open_escalation(self) -> Escalation | None:
        return self._ladder.open

    @workflow.update(name="review")
    async def review(self, verdict: ReviewInput) -> ReviewAck:
        """Approve the result, or reject it with feedback (which reruns the step)."""
        return self._review.accept(verdict)

    @review.validator
    def _check_review(self, verdict: ReviewInput) -> None:
        self._review.check(verdict)

    @workflow.signal(name="review")
    async def review_signal(self, payload: Any) -> None:
        """The `review` update's verdict as a signal: durable while no worker runs, and
        sendable from `temporal workflow signal` or the Web UI; a refusal is recorded."""
        await self._review.signalled(payload)

    @workflow.update(name="resolve_escalation")
    async def resolve_escalation(self, decision: ResolveEscalation) -> Escalation:
        """Decide an open escalation: retry, reassign, replan, skip or escalate further."""
        return self._ladder.accept(decision)

    @resolve_escalation.validator
    def _check_decision(self, decision: ResolveEscalation) -> None:
        self._ladder.check(decision)

    # -- the step's life --------------------------------------------------------------------
    @workflow.signal(name="resolve_escalation")
    async def resolve_escalation_signal(self, payload: Any) -> None:
        """The `resolve_escalation` update's decision as a signal (refusals recorded)."""
        await self._ladder.signalled(payload)

    @workflow.run
    async def run(self, inp: SubtaskInput) -> SubtaskResult:
        try:
            return await self._run(inp)
        except asyncio.CancelledError:
            await self._wind_down(cancelled=True)
            raise
        except (ApplicationError, ActivityError, ChildWorkflowError):
            await self._wind_down(cancelled=False)
            raise

    async def _run(self, inp: SubtaskInput) -> SubtaskResult:
        step = inp.step
        for key, value in inp.inputs.items():
            self._inputs.setdefault(key, value)
        await workflow.wait_condition(lambda: all(d in self._inputs for d in step.deps))
        while True:
            agent = await self._slots.acquire()
            self._state.status = Status.RUNNING
            show_in_search(inp, self._state, assignee=agent)
            await tell_parent(inp, self._state)  # no longer queued, reviewed or blocked
            run = self._work.next_run(agent_id=agent, feedback=self._review.feedback,
                                      inputs={d: self._inputs[d] for d in step.deps})
            result: Result = await self._work.attempt(run)
            await self._slots.free()
            if isinstance(result, Trouble):
                result = await self._ladder.resolve(result)
            if not isinstance(result, Done):
                continue  # retry or reassign: work again
            verdict = await self._review.ask(result.outcome)
            if verdict.decision is Decision.APPROVE:
                break
            if self._review.too_many_rejections:
                replanned = await self._ladder.resolve(Trouble(
                    EscalationReason.REVIEW_ROUNDS,
                    f"rejected {self._review.rejections} times; last feedback: "
                    f"{verdict.feedback}"))
                if isinstance(replanned, Done):
                    result = replanned
                    break
                self._review.start_over()
        return await self._complete(result.outcome)

    async def _complete(self, outcome: StepOutcome) -> SubtaskResult:
        """Approved: COMPLETED, the manager gets the report, the dependents are released.

        The work is done and stored: a cancellation arriving now neither undoes it nor
        interrupts the release (see `workflows.delivery`); the step completes."""
        self._state.output = outcome.output
        self._state.status = Status.COMPLETED
        show_in_search(self._inp, self._state)
        result, cancelled = await finish_despite_cancel(self._report_and_release(outcome))
        if cancelled:
            workflow.logger.info("%s was cancelled after it completed; it stays completed",
                                 workflow.info().workflow_id)
        return result

    async def _report_and_release(self, outcome: StepOutcome) -> SubtaskResult:
        reviewer = self._slots.people.reviewer
        await self._records.note(
            "completed", status=Status.COMPLETED if self._slots.reviewed else None,
            data={"to": reviewer or "", "summary": outcome.output.summary})
        delivered = await self._release(self._inp.notify, outcome.output)
        await workflow.wait_condition(workflow.all_handlers_finished)
        return SubtaskResult(
            step_id=self._inp.step.id,
            status=Status.COMPLETED,
            output=outcome.output,
            delivered=delivered,
            metrics=outcome.metrics,
        )

    async def _wind_down(self, *, cancelled: bool) -> None:
        """On any way out but success: give the agent's slot back, close an open escalation,
        and (when cancelled mid-work) record CANCELLED. A child still waiting for its
        dependencies records nothing: the parent decides whether it is BLOCKED."""
        await self._slots.free()
        await self._ladder.close_unanswered()
        if cancelled and self._state.status not in (Status.PENDING, Status.CANCELLED):
            await self._records.cancelled()
        await workflow.wait_condition(workflow.all_handlers_finished)

    async def _release(self, notify: list[str], output: StepOutput) -> list[str]:
        """Signal each dependent that this step is done; return those that got it.

        The signals are awaited before the workflow completes: a signal sent in the same
        workflow task as completion would never be delivered. A dependent that does not
        exist yet is left to the parent, which hands it the output when it starts it.
        """

        async def send(child_id: str) -> str | None:
            handle = workflow.get_external_workflow_handle(child_id)
            try:
                await handle.signal(SubtaskWorkflow.dependency_done, DependencyDone(output=output))
            except FailureError:
                return None
            return child_id

        results = await asyncio.gather(*(send(c) for c in notify))
        return [c for c in results if c is not None]


def child_id(task_id: str, step_id: str) -> str:
    """The workflow id of a task's step: `<task-id>/<step-id>`."""
    return subtask_id(task_id, step_id)
