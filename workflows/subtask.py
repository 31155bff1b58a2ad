"""SubtaskWorkflow: one step of a plan, as its own child workflow `<task-id>/<step-id>`.

A child may be started before its dependencies finish; it then waits for one
`dependency_done` signal per missing dependency (from the dependency itself, or from the
parent) and runs the moment the last one arrives. When it finishes it releases the
dependents it was told to, so the release costs no hop through the parent.
"""

from __future__ import annotations

import asyncio

from pydantic import ValidationError
from temporalio import workflow
from temporalio.exceptions import (
    ActivityError,
    ApplicationError,
    CancelledError,
    FailureError,
)

with workflow.unsafe.imports_passed_through():
    from activities.steps import SubtaskActivities
    from activities.tools import ToolActivities
    from models.io import (
        DependencyDone,
        FailSubtaskInput,
        StepOutcome,
        StepOutput,
        StepRun,
        SubtaskInput,
        SubtaskResult,
        SubtaskView,
    )
    from models.task import Status, StepType, subtask_id
    from workflows import policies
    from workflows.engine import run_agent, run_code, write_and_run_code
    from workflows.failures import failure_message


# A payload that does not validate fails the workflow (naming the field) instead of
# failing its workflow task over and over.
@workflow.defn(name="SubtaskWorkflow", failure_exception_types=[ValidationError])
class SubtaskWorkflow:
    @workflow.init
    def __init__(self, inp: SubtaskInput) -> None:
        self._inp: SubtaskInput | None = inp
        self._inputs: dict[str, StepOutput] = {}
        self._status = Status.PENDING
        self._step_id = ""
        self._type = ""
        self._error: str | None = None
        self._output: StepOutput | None = None
        self._fraction = 0.0
        self._detail = ""

    @workflow.signal(name="dependency_done")
    def dependency_done(self, sig: DependencyDone) -> None:
        out = sig.output
        if self._inp is None or out.step_id not in self._inp.step.deps or (
                out.subtask_id != subtask_id(self._inp.task_id, out.step_id)):
            workflow.logger.warning("ignoring dependency_done for %r (%r): not a dependency",
                                    out.step_id, out.subtask_id)
            return
        # Delivery may happen twice (from the dependency and from the parent): keep the first.
        self._inputs.setdefault(out.step_id, out)

    @workflow.query(name="progress")
    def progress(self) -> SubtaskView:
        return SubtaskView(
            id=workflow.info().workflow_id,
            step_id=self._step_id,
            type=self._type,
            status=self._status,
            output=self._output.output if self._output else None,
            error=self._error,
            progress=1.0 if self._status is Status.COMPLETED else self._fraction,
            detail=self._detail,
        )

    @workflow.run
    async def run(self, inp: SubtaskInput) -> SubtaskResult:
        try:
            return await self._run(inp)
        except asyncio.CancelledError:
            # A child still waiting for its dependencies records nothing: the parent
            # decides whether it is BLOCKED or CANCELLED.
            if self._status is Status.RUNNING:
                self._status, self._error = Status.CANCELLED, "cancelled"
                await workflow.execute_activity_method(
                    SubtaskActivities.fail_subtask,
                    FailSubtaskInput(task_id=inp.task_id,
                                     subtask_id=workflow.info().workflow_id,
                                     status=Status.CANCELLED, error="cancelled"),
                    start_to_close_timeout=policies.STORE_TIMEOUT,
                    retry_policy=policies.STORE_RETRY,
                )
            raise

    async def _run(self, inp: SubtaskInput) -> SubtaskResult:
        step = inp.step
        self._step_id, self._type = step.id, step.type.value
        for key, value in inp.inputs.items():
            self._inputs.setdefault(key, value)
        await workflow.wait_condition(lambda: all(d in self._inputs for d in step.deps))
        self._status = Status.RUNNING
        run = StepRun(
            task_id=inp.task_id,
            subtask_id=workflow.info().workflow_id,
            step=step,
            inputs={d: self._inputs[d] for d in step.deps},
        )
        try:
            outcome = await self._execute(inp, run)
        except ActivityError as e:
            if isinstance(e.cause, CancelledError):
                raise asyncio.CancelledError from e  # recorded as CANCELLED by run()
            self._error = failure_message(e)
            await workflow.execute_activity_method(
                SubtaskActivities.fail_subtask,
                FailSubtaskInput(task_id=inp.task_id, subtask_id=run.subtask_id,
                                 status=Status.FAILED, error=self._error),
                start_to_close_timeout=policies.STORE_TIMEOUT,
                retry_policy=policies.STORE_RETRY,
            )
            self._status = Status.FAILED
            raise ApplicationError(
                f"step {step.id} failed: {self._error}", type="SubtaskFailed", non_retryable=True
            ) from e
        self._output = outcome.output
        if not outcome.success:
            self._status, self._error = Status.FAILED, outcome.error
            raise ApplicationError(
                f"step {step.id} failed: {outcome.error}", type="SubtaskFailed",
                non_retryable=True,
            )
        self._status = Status.COMPLETED
        delivered = await self._release(inp.notify, outcome.output)
        return SubtaskResult(
            step_id=step.id,
            status=Status.COMPLETED,
            output=outcome.output,
            delivered=delivered,
            metrics=outcome.metrics,
        )

    def _progress(self, fraction: float, detail: str) -> None:
        self._fraction, self._detail = fraction, detail

    async def _execute(self, inp: SubtaskInput, run: StepRun) -> StepOutcome:
        step = run.step
        if step.type is StepType.TOOL:
            try:
                return await self._tool(inp, run)
            except ActivityError as first:
                if not step.fallback_tool:
                    raise
                self._progress(0.5, f"{step.tool} failed; trying {step.fallback_tool}")
                fallback = step.model_copy(update={
                    "tool": step.fallback_tool,
                    "args": step.args if step.fallback_args is None else step.fallback_args,
                })
                try:
                    return await self._tool(inp, run.model_copy(update={"step": fallback}))
                except ActivityError as second:
                    raise ApplicationError(
                        f"tool {step.tool} failed ({failure_message(first)}), and so did "
                        f"fallback {step.fallback_tool} ({failure_message(second)})",
                        type="ToolFailed", non_retryable=True,
                    ) from second
        if step.type is StepType.CODE:
            if step.cells:
                return await run_code(inp, run)
            return await write_and_run_code(inp, run, self._progress)
        if step.type in (StepType.SEARCH, StepType.WRITE):
            return await run_agent(inp, run, self._progress)
        raise ApplicationError(f"no handler for step type {step.type!r}",
                               type="UnknownStepType", non_retryable=True)

    async def _tool(self, inp: SubtaskInput, run: StepRun) -> StepOutcome:
        if inp.routing.local_tools:
            return await workflow.execute_local_activity_method(
                ToolActivities.run_tool_step, run,
                start_to_close_timeout=policies.TOOL_TIMEOUT,
                retry_policy=policies.TOOL_RETRY,
            )
        return await workflow.execute_activity_method(
            ToolActivities.run_tool_step, run,
            task_queue=inp.routing.tool_queue,
            start_to_close_timeout=policies.TOOL_TIMEOUT,
            retry_policy=policies.TOOL_RETRY,
        )

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
    return subtask_id(task_id, step_id)
