"""TaskWorkflow: split (or take) a plan, run one child workflow per step, aggregate.

Scheduling. A step runs the moment its last dependency completes, with the
dependencies' outputs in hand. To take the child's start off the critical path, a step
with exactly one dependency is started as soon as that dependency has *started*; it then
waits, and the dependency releases it directly with a signal when it finishes (the
parent re-sends whatever the dependency could not deliver). A step with several
dependencies is started by the parent once all of them have completed: one signal per
edge would cost more than it saves on wide graphs.
"""

from __future__ import annotations

import asyncio

from pydantic import ValidationError
from temporalio import workflow
from temporalio.common import Priority, WorkflowIDReusePolicy
from temporalio.exceptions import (
    ActivityError,
    ApplicationError,
    CancelledError,
    ChildWorkflowError,
    FailureError,
)
from temporalio.workflow import ParentClosePolicy

with workflow.unsafe.imports_passed_through():
    from activities.llm import LLMActivities
    from activities.tasks import TaskActivities
    from models.io import (
        BeginTaskInput,
        BeginTaskResult,
        DependencyDone,
        FinishTaskInput,
        Progress,
        SavePlanInput,
        SplitInput,
        StepOutput,
        SubtaskInput,
        SubtaskResult,
        SubtaskView,
        TaskInput,
        TaskResult,
    )
    from models.plan import Plan, PlanStep
    from models.scheduling import priority_score, temporal_priority_key
    from models.task import Metrics, Status
    from workflows import policies
    from workflows.engine import add_metrics
    from workflows.failures import failure_message
    from workflows.subtask import SubtaskWorkflow, child_id


# A payload that does not validate fails the workflow (naming the field) instead of
# failing its workflow task over and over.
@workflow.defn(name="TaskWorkflow", failure_exception_types=[ValidationError])
class TaskWorkflow:
    def __init__(self) -> None:
        self._status = Status.PENDING
        self._error: str | None = None
        self._views: dict[str, SubtaskView] = {}
        self._metrics = Metrics()
        self._dag: _Dag | None = None
        self._begun = False

    @workflow.query(name="progress")
    def progress(self) -> Progress:
        counts: dict[str, int] = {}
        for v in self._views.values():
            counts[v.status.value] = counts.get(v.status.value, 0) + 1
        done = [1.0 if v.status is Status.COMPLETED else v.progress
                for v in self._views.values()]
        return Progress(
            task_id=workflow.info().workflow_id,
            status=self._status,
            percent=round(100 * sum(done) / len(done), 1) if done else 0.0,
            counts=counts,
            subtasks=list(self._views.values()),
            error=self._error,
        )

    @workflow.run
    async def run(self, inp: TaskInput) -> TaskResult:
        task_id = workflow.info().workflow_id
        if "/" in task_id and not inp.parent_subtask:
            raise ApplicationError(
                f"task id {task_id!r} must not contain '/': subtask ids are "
                "'<task-id>/<step-id>'", type="InvalidTaskId", non_retryable=True)
        try:
            return await self._run(task_id, inp)
        except asyncio.CancelledError:
            if self._dag is not None:
                await self._dag.cancel()
            for v in self._views.values():
                if not v.status.terminal:
                    v.status, v.error = Status.CANCELLED, "cancelled"
            self._status, self._error = Status.CANCELLED, "cancelled"
            if self._begun:
                await self._finish()
            raise

    async def _run(self, task_id: str, inp: TaskInput) -> TaskResult:
        begin = await workflow.execute_activity_method(
            TaskActivities.begin_task,
            BeginTaskInput(task_id=task_id, run_id=workflow.info().run_id, task=inp,
                           created_at=workflow.now()),
            start_to_close_timeout=policies.STORE_TIMEOUT,
            retry_policy=policies.STORE_RETRY,
        )
        self._begun = True
        if inp.plan is not None:
            if begin.plan_errors:
                await self._fail("invalid plan: " + "; ".join(begin.plan_errors), "InvalidPlan")
            plan = inp.plan
        else:
            self._status = Status.SPLITTING
            try:
                split = await workflow.execute_activity_method(
                    LLMActivities.split_task,
                    SplitInput(task_id=task_id, prompt=inp.prompt, max_steps=begin.max_steps,
                               token_budget=begin.budgets.task_tokens,
                               manager_context=begin.manager_context),
                    task_queue=begin.routing.llm_queue,
                    start_to_close_timeout=policies.SPLIT_TIMEOUT,
                    retry_policy=policies.LLM_RETRY,
                )
            except ActivityError as e:
                cause = e.cause
                if isinstance(cause, CancelledError):
                    raise asyncio.CancelledError from e
                kind = cause.type if isinstance(cause, ApplicationError) and cause.type else None
                await self._fail(f"splitting failed: {failure_message(e)}", kind or "SplitFailed")
            plan = split.plan
            add_metrics(self._metrics, split.metrics)

        for s in plan.steps:
            self._views[s.id] = SubtaskView(
                id=child_id(task_id, s.id), step_id=s.id, type=s.type.value,
                status=Status.PENDING, dependencies=list(s.deps),
            )
        await workflow.execute_activity_method(
            TaskActivities.save_plan,
            SavePlanInput(task_id=task_id, plan=plan, started_at=workflow.now()),
            start_to_close_timeout=policies.STORE_TIMEOUT,
            retry_policy=policies.STORE_RETRY,
        )
        self._status = Status.RUNNING
        self._dag = _Dag(self, task_id, plan, begin)
        await self._dag.run()

        def named(status: Status) -> list[str]:
            return [v.step_id for v in self._views.values() if v.status is status]

        failed, cancelled = named(Status.FAILED), named(Status.CANCELLED)
        blocked = named(Status.BLOCKED)
        if failed or cancelled or blocked:
            parts = []
            if failed:
                parts.append("failed: " + ", ".join(
                    f"{s} ({self._views[s].error})" for s in failed))
            if cancelled:
                parts.append("cancelled: " + ", ".join(cancelled))
            if blocked:
                parts.append("blocked: " + ", ".join(blocked))
            self._error = "; ".join(parts)
            self._status = Status.FAILED
        else:
            self._status = Status.COMPLETED
        result = await self._finish()
        if self._status is Status.FAILED:
            raise ApplicationError(self._error or "failed", result, type="TaskFailed",
                                   non_retryable=True)
        return result

    async def _finish(self) -> TaskResult:
        result = TaskResult(
            task_id=workflow.info().workflow_id,
            status=self._status,
            error=self._error,
            subtasks=list(self._views.values()),
            metrics=self._metrics,
        )
        # The store's usage table is the authority on tokens and cost.
        result.metrics = await workflow.execute_activity_method(
            TaskActivities.finish_task,
            FinishTaskInput(result=result, completed_at=workflow.now()),
            start_to_close_timeout=policies.STORE_TIMEOUT,
            retry_policy=policies.STORE_RETRY,
        )
        self._metrics = result.metrics
        return result

    async def _fail(self, error: str, kind: str) -> None:
        """End the task FAILED before any step ran; raises."""
        self._status, self._error = Status.FAILED, error
        result = await self._finish()
        raise ApplicationError(error, result, type=kind, non_retryable=True)


class _Dag:
    """The scheduling state of one run of a plan (lives inside TaskWorkflow.run)."""

    def __init__(self, wf: TaskWorkflow, task_id: str, plan: Plan,
                 begin: BeginTaskResult) -> None:
        self.wf = wf
        self.task_id = task_id
        self.begin = begin
        self.routing = begin.routing
        self.steps: dict[str, PlanStep] = {s.id: s for s in plan.steps}
        self.dependents: dict[str, list[str]] = {s.id: [] for s in plan.steps}
        for s in plan.steps:
            for d in s.deps:
                self.dependents[d].append(s.id)
        # Released by their only dependency; the others are started by the parent.
        self.direct = {s.id for s in plan.steps if len(s.deps) == 1}
        self.outputs: dict[str, StepOutput] = {}
        now = workflow.now()
        self.scores = {
            s.id: priority_score(priority=s.priority, deadline=s.deadline, now=now,
                                 is_subtask=True, blocks=len(self._below(s.id)))
            for s in plan.steps
        }
        self.handles: dict[
            str, workflow.ChildWorkflowHandle[SubtaskWorkflow, SubtaskResult]] = {}
        self.launched: set[str] = set()
        self.delivered: set[tuple[str, str]] = set()  # (dependency, dependent)
        self.tasks: list[asyncio.Task[None]] = []
        self.cancelling = False

    def _below(self, step_id: str) -> set[str]:
        """Every step that waits, directly or not, on `step_id`."""
        seen: set[str] = set()
        todo = list(self.dependents[step_id])
        while todo:
            d = todo.pop()
            if d not in seen:
                seen.add(d)
                todo.extend(self.dependents[d])
        return seen

    @property
    def views(self) -> dict[str, SubtaskView]:
        return self.wf._views

    async def run(self) -> None:
        for s in self.steps.values():
            if not s.deps:
                self._launch(s.id)
        await workflow.wait_condition(
            lambda: all(v.status.terminal for v in self.views.values())
        )
        # Every child has ended; let the last bookkeeping coroutines finish too.
        await asyncio.gather(*self.tasks)

    async def cancel(self) -> None:
        """Cancel every child still running and wait for them; unfinished steps: CANCELLED."""
        self.cancelling = True
        for t in self.tasks:
            t.cancel()
        await asyncio.gather(*self.tasks, return_exceptions=True)
        for v in self.views.values():
            if not v.status.terminal:
                v.status, v.error = Status.CANCELLED, "cancelled"

    def _launch(self, step_id: str) -> None:
        if step_id in self.launched or self.views[step_id].status.terminal:
            return
        self.launched.add(step_id)
        self.tasks.append(asyncio.create_task(self._run_child(step_id)))

    async def _run_child(self, step_id: str) -> None:
        step = self.steps[step_id]
        waiting = [d for d in step.deps if d not in self.outputs]
        if not waiting:
            self.views[step_id].status = Status.RUNNING
        try:
            handle = await self._start(step, waiting)
        except FailureError as e:
            self._on_failure(step_id, f"could not start: {failure_message(e)}")
            return
        self.handles[step_id] = handle
        if self.views[step_id].status is Status.BLOCKED:
            # A dependency failed while this child was being started.
            handle.cancel()
        else:
            for d in waiting:
                if d in self.outputs:  # finished while we were starting this child
                    await self._deliver(d, step_id)
            for d in self.dependents[step_id]:
                if d in self.direct:
                    self._launch(d)
        try:
            result = await handle
        except ChildWorkflowError as e:
            if isinstance(e.cause, CancelledError) or self.cancelling:
                view = self.views[step_id]
                if not view.status.terminal:
                    view.status, view.error = Status.CANCELLED, "cancelled"
                    self._block_dependents(step_id)
                return
            self._on_failure(step_id, failure_message(e))
            return
        self._on_success(step_id, result.output, result.delivered, result.metrics)

    async def _start(
        self, step: PlanStep, waiting: list[str]
    ) -> workflow.ChildWorkflowHandle[SubtaskWorkflow, SubtaskResult]:
        step_id = step.id
        return await workflow.start_child_workflow(
            SubtaskWorkflow.run,
            SubtaskInput(
                task_id=self.task_id,
                step=step,
                routing=self.routing,
                budgets=self.begin.budgets,
                max_turns=self.begin.max_turns,
                org=self.begin.org,
                score=self.scores[step_id],
                inputs={d: self.outputs[d] for d in step.deps if d in self.outputs},
                waiting_for=waiting,
                notify=[child_id(self.task_id, d) for d in self.dependents[step_id]
                        if d in self.direct],
            ),
            id=child_id(self.task_id, step_id),
            parent_close_policy=ParentClosePolicy.REQUEST_CANCEL,
            task_timeout=policies.CHILD_TASK_TIMEOUT,
            id_reuse_policy=WorkflowIDReusePolicy.ALLOW_DUPLICATE,
            static_summary=f"{step.type.value}: {step.title or step.id}",
            # Busy clusters serve urgent work first; the child's activities inherit it.
            priority=Priority(priority_key=temporal_priority_key(self.scores[step_id])),
        )

    def _on_success(
        self, step_id: str, output: StepOutput | None, delivered: list[str], metrics: Metrics
    ) -> None:
        view = self.views[step_id]
        view.status = Status.COMPLETED
        if output is None:  # a completed child always returns one; be safe on old histories
            output = StepOutput(step_id=step_id, subtask_id=view.id)
        view.output, view.truncated = output.output, output.truncated
        add_metrics(self.wf._metrics, metrics)
        self.outputs[step_id] = output
        for d in delivered:
            self.delivered.add((step_id, d.rsplit("/", 1)[-1]))
        for d in self.dependents[step_id]:
            if self.views[d].status.terminal:
                continue
            if all(dep in self.outputs for dep in self.steps[d].deps):
                self.views[d].status = Status.RUNNING
            if d in self.handles:
                self.tasks.append(asyncio.create_task(self._deliver(step_id, d)))
            elif d not in self.direct and all(dep in self.outputs for dep in self.steps[d].deps):
                self._launch(d)

    async def _deliver(self, dep: str, step_id: str) -> None:
        """Hand `dep`'s output to the started child `step_id` unless it already has it."""
        if (dep, step_id) in self.delivered:
            return
        self.delivered.add((dep, step_id))
        try:
            await self.handles[step_id].signal(
                SubtaskWorkflow.dependency_done, DependencyDone(output=self.outputs[dep])
            )
        except FailureError as e:
            # The child is gone (cancelled or terminated from outside): it cannot run.
            self._on_failure(step_id, f"could not be released: {failure_message(e)}")

    def _on_failure(self, step_id: str, error: str) -> None:
        view = self.views[step_id]
        if view.status is Status.BLOCKED:
            return  # cancelled by us because a dependency failed
        view.status, view.error = Status.FAILED, error
        self._block_dependents(step_id)

    def _block_dependents(self, step_id: str) -> None:
        for d in self.dependents[step_id]:
            view = self.views[d]
            if view.status.terminal:
                continue
            view.status = Status.BLOCKED
            view.error = f"blocked by {step_id}"
            if d in self.handles:
                self.handles[d].cancel()
            self._block_dependents(d)

