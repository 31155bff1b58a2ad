"""Work: one round of work on a step — run it by its type, under its deadline, or delegate it.

Step types dispatch through one table (`HANDLERS`). A round ends `Done` (an output, not yet
reviewed) or in `Trouble` (why a manager must decide); cancellation propagates as
`asyncio.CancelledError`.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable

from temporalio import workflow
from temporalio.exceptions import ApplicationError, CancelledError, ChildWorkflowError
from temporalio.workflow import ParentClosePolicy

with workflow.unsafe.imports_passed_through():
    from activities import errors
    from activities.steps import SubtaskActivities
    from activities.tools import ToolActivities
    from models.instants import as_utc
    from models.io import (
        RecordResultInput,
        StepOutcome,
        StepOutput,
        StepRun,
        SubtaskInput,
        TaskInput,
        TaskResult,
    )
    from models.review import EscalationReason
    from models.task import FallbackUsed, StepType
    from workflows import policies
    from workflows.engine import run_agent, run_code, write_and_run_code
    from workflows.failures import ACTIVITY_FAILURES, failure_cause, failure_message
    from workflows.subtask.outcomes import DeadlinePassed, Done, Trouble
    from workflows.subtask.slots import Slots
    from workflows.subtask.state import StepState


# Patch (workflow.patched): a step already past its deadline escalates without starting
# its work; histories from before it started the work and cancelled it 1 ms later.
PAST_DEADLINE_AT_ONCE = "past-deadline-escalates-at-once"


class Work:
    """Runs rounds of work on one step; owns the round count and the nested tasks it starts."""

    def __init__(self, inp: SubtaskInput, state: StepState, slots: Slots) -> None:
        self._inp = inp
        self._state = state
        self._slots = slots
        self.rounds_started = 0  # rounds of work begun (reruns after review or escalation)
        self.nested_tasks_started = 0  # numbers the nested task ids: <subtask>/sub1, /replan2
        self.deadline_waived = False  # once a deadline escalated, it does not trip again

    def next_run(self, *, agent_id: str | None, inputs: dict[str, StepOutput],
                 feedback: list[str]) -> StepRun:
        """Describe the next round of work: who, with which inputs and reviewers' feedback."""
        inp = self._inp
        run = StepRun(
            task_id=inp.task_id, subtask_id=workflow.info().workflow_id, step=inp.step,
            inputs=inputs, feedback=list(feedback), hold_for_review=self._slots.reviewed,
            agent_id=agent_id, round=self.rounds_started,
        )
        self.rounds_started += 1
        return run

    async def attempt(self, run: StepRun) -> Done | Trouble:
        """Run the step once; return its output, or why it needs a manager."""
        inp, step = self._inp, run.step
        try:
            if (self._slots.assignee_is_manager and inp.org.depth < inp.org.max_depth
                    and step.type in (StepType.SEARCH, StepType.WRITE)):
                outcome = await self._delegate(run)
            else:
                outcome = await self._with_deadline(run)
        except ACTIVITY_FAILURES as e:
            if isinstance(e.cause, CancelledError):
                raise asyncio.CancelledError from e  # recorded as CANCELLED by the workflow
            cause = e if isinstance(e, ApplicationError) else e.cause
            kind = cause.type if isinstance(cause, ApplicationError) else None
            reason = (EscalationReason.BUDGET if kind == errors.BUDGET_EXCEEDED
                      else EscalationReason.FAILED)
            return Trouble(reason, failure_message(e))
        except ChildWorkflowError as e:
            if isinstance(e.cause, CancelledError):
                raise asyncio.CancelledError from e
            return Trouble(EscalationReason.FAILED, failure_message(e))
        except DeadlinePassed as e:
            return Trouble(EscalationReason.DEADLINE, str(e))
        if not outcome.success:
            return Trouble(EscalationReason.FAILED, outcome.error or "failed")
        return Done(outcome)

    async def _with_deadline(self, run: StepRun) -> StepOutcome:
        if run.step.deadline is None or self.deadline_waived:
            return await self._execute(run)
        deadline = as_utc(run.step.deadline)  # inputs recorded before UTC-only deadlines
        when = deadline.strftime("%Y-%m-%d %H:%M:%S")
        left = (deadline - workflow.now()).total_seconds()
        if left <= 0 and workflow.patched(PAST_DEADLINE_AT_ONCE):
            self.deadline_waived = True  # whoever decides has seen it
            raise DeadlinePassed(f"step {run.step.id} is past its deadline {when} UTC")
        work = asyncio.create_task(self._execute(run))
        try:
            await workflow.wait_condition(work.done, timeout=max(left, 0.001))
        except TimeoutError:
            work.cancel()
            # The cancelled work ends in a cancellation error of its own; the deadline is
            # what happened.
            with contextlib.suppress(asyncio.CancelledError, *ACTIVITY_FAILURES):
                await work
            self.deadline_waived = True  # whoever decides has seen it
            raise DeadlinePassed(
                f"step {run.step.id} passed its deadline {when} UTC") from None
        return await work

    async def _delegate(self, run: StepRun) -> StepOutcome:
        """A manager decomposes its subtask as a nested task of its own reports."""
        inp, step = self._inp, run.step
        assignee = self._slots.people.assignee
        self._state.progress(0.1, f"{assignee} decomposes it")
        inputs = "\n".join(f"- {k}: {v.summary or v.output}" for k, v in run.inputs.items())
        nested = TaskInput(
            prompt=f"{step.title}\n{step.description}\n{inputs}".strip(),
            title=step.title or step.id, assignee=assignee,
            parent_subtask=run.subtask_id, depth=inp.org.depth + 1,
            token_budget=inp.budgets.task_tokens,
        )
        return await self.nested(
            run.model_copy(update={"hold_for_review": self._slots.reviewed}),
            nested, suffix="sub")

    async def nested(self, run: StepRun, task: TaskInput, *, suffix: str) -> StepOutcome:
        """Run `task` as a nested TaskWorkflow; its sinks' outputs are the step's output."""
        self.nested_tasks_started += 1
        wid = f"{run.subtask_id}/{suffix}{self.nested_tasks_started}"
        result: TaskResult = await workflow.execute_child_workflow(
            "TaskWorkflow", task, id=wid, result_type=TaskResult,
            parent_close_policy=ParentClosePolicy.REQUEST_CANCEL,
        )
        outputs = {s.step_id: s.output for s in result.subtasks}
        sinks = [s.step_id for s in result.subtasks
                 if not any(s.step_id in o.dependencies for o in result.subtasks)]
        value = outputs[sinks[0]] if len(sinks) == 1 else {k: outputs[k] for k in sinks}
        outcome = await workflow.execute_activity_method(
            SubtaskActivities.record_result,
            RecordResultInput(run=run, output=value, summary=f"done by nested task {wid}",
                              metrics=result.metrics),
            start_to_close_timeout=policies.STORE_TIMEOUT, retry_policy=policies.STORE_RETRY,
        )
        outcome.metrics = result.metrics
        return outcome

    async def _execute(self, run: StepRun) -> StepOutcome:
        handler = HANDLERS.get(run.step.type)
        if handler is None:
            raise ApplicationError(f"no handler for step type {run.step.type!r}",
                                   type=errors.UNKNOWN_STEP_TYPE, non_retryable=True)
        return await handler(self, run)

    async def _tool_step(self, run: StepRun) -> StepOutcome:
        """Call the step's tool; when it fails for good, its fallback tool if it has one."""
        step = run.step
        try:
            return await self._call_tool(run)
        except ACTIVITY_FAILURES as first:
            if not step.fallback_tool:
                raise
            self._state.progress(0.5, f"{step.tool} failed; trying {step.fallback_tool}")
            fallback = step.model_copy(update={
                "tool": step.fallback_tool,
                "args": step.args if step.fallback_args is None else step.fallback_args,
            })
            # The fallback's own activity records why it was called (in the step's result
            # and an event): no new workflow command, so older histories replay unchanged.
            kind, message = failure_cause(first)
            why = FallbackUsed(primary_tool=step.tool or "", primary_error=message,
                               primary_error_type=kind, fallback_tool=step.fallback_tool)
            try:
                return await self._call_tool(
                    run.model_copy(update={"step": fallback, "fallback_for": why}))
            except ACTIVITY_FAILURES as second:
                raise ApplicationError(
                    f"tool {step.tool} failed ({failure_message(first)}), and so did "
                    f"fallback {step.fallback_tool} ({failure_message(second)})",
                    type=errors.TOOL_FAILED, non_retryable=True,
                ) from second

    async def _call_tool(self, run: StepRun) -> StepOutcome:
        routing = self._inp.routing
        if routing.local_tools:
            return await workflow.execute_local_activity_method(
                ToolActivities.run_tool_step, run,
                start_to_close_timeout=policies.TOOL_TIMEOUT,
                retry_policy=policies.TOOL_RETRY,
            )
        return await workflow.execute_activity_method(
            ToolActivities.run_tool_step, run,
            task_queue=routing.tool_queue,
            start_to_close_timeout=policies.TOOL_TIMEOUT,
            retry_policy=policies.TOOL_RETRY,
        )

    async def _code_step(self, run: StepRun) -> StepOutcome:
        """Run the step's cells; with none, have the model write the code first."""
        if run.step.cells:
            return await run_code(self._inp, run)
        return await write_and_run_code(self._inp, run, self._state.progress)

    async def _agent_step(self, run: StepRun) -> StepOutcome:
        """Let the assigned agent's model work the step with its tools."""
        return await run_agent(self._inp, run, self._state.progress)


#: How each step type is worked.
HANDLERS: dict[StepType, Callable[[Work, StepRun], Awaitable[StepOutcome]]] = {
    StepType.TOOL: Work._tool_step,
    StepType.CODE: Work._code_step,
    StepType.SEARCH: Work._agent_step,
    StepType.WRITE: Work._agent_step,
}
