"""TaskWorkflow: split (or take) a plan, run one child workflow per step, aggregate.

The scheduling of the steps lives in `workflows.dag`; this module owns the task's life:
begin (store row, budgets, routing), split with the model unless a plan was given, run
the DAG, and finish with the task's status, error and metrics."""

from __future__ import annotations

import asyncio

from pydantic import ValidationError
from temporalio import workflow
from temporalio.exceptions import (
    ActivityError,
    ApplicationError,
    CancelledError,
)

with workflow.unsafe.imports_passed_through():
    from activities import errors
    from activities.llm import LLMActivities
    from activities.tasks import TaskActivities
    from models.io import (
        BeginTaskInput,
        FinishTaskInput,
        Progress,
        SavePlanInput,
        SplitInput,
        StepStateReport,
        SubtaskView,
        TaskInput,
        TaskResult,
    )
    from models.task import Metrics, Status
    from workflows import policies, search
    from workflows.dag import Dag
    from workflows.failures import failure_message
    from workflows.subtask import child_id


# A payload that does not validate fails the workflow (naming the field) instead of
# failing its workflow task over and over.
@workflow.defn(name="TaskWorkflow", failure_exception_types=[ValidationError])
class TaskWorkflow:
    def __init__(self) -> None:
        self._status = Status.PENDING
        self._error: str | None = None
        self._views: dict[str, SubtaskView] = {}
        self._waits: dict[str, StepStateReport] = {}  # by step id: the latest wait reported
        self._metrics = Metrics()
        self._dag: Dag | None = None
        self._begun = False
        self._title = ""
        self._searchable = False  # the namespace has BeesTown's search attributes

    @workflow.query(name="progress")
    def progress(self) -> Progress:
        views = [self._shown(v) for v in self._views.values()]
        counts: dict[str, int] = {}
        for v in views:
            counts[v.status.value] = counts.get(v.status.value, 0) + 1
        done = [1.0 if v.status is Status.COMPLETED else v.progress for v in views]
        return Progress(
            task_id=workflow.info().workflow_id,
            status=self._status,
            percent=round(100 * sum(done) / len(done), 1) if done else 0.0,
            counts=counts,
            subtasks=views,
            error=self._error,
        )

    @workflow.signal(name="step_state")
    def step_state(self, report: StepStateReport) -> None:
        """A step started or stopped waiting (QUEUED, REVIEWING, BLOCKED, RUNNING again).

        Kept beside the DAG's own view (for which BLOCKED means blocked for good by a
        failed dependency) and laid over it by the `progress` query while the step runs."""
        if report.step_id in self._views:
            self._waits[report.step_id] = report

    def _shown(self, view: SubtaskView) -> SubtaskView:
        """The step as people should see it: waiting on whom, while it is not finished."""
        wait = self._waits.get(view.step_id)
        if wait is None or view.status.terminal or wait.status is Status.RUNNING:
            return view
        return view.model_copy(update={
            "status": wait.status, "detail": wait.detail, "waiting_for": wait.waiting_for,
            "review_round": wait.review_round, "escalation_id": wait.escalation_id,
            "needs_person": wait.needs_person})

    @workflow.run
    async def run(self, inp: TaskInput) -> TaskResult:
        task_id = workflow.info().workflow_id
        if "/" in task_id and not inp.parent_subtask:
            raise ApplicationError(
                f"task id {task_id!r} must not contain '/': subtask ids are "
                "'<task-id>/<step-id>'", type=errors.INVALID_TASK_ID, non_retryable=True)
        self._title = inp.title
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
        self._searchable = begin.routing.search_attributes
        search.publish(self._searchable, status=Status.PENDING.value, assignee=begin.assignee,
                       priority=inp.priority.value, project=begin.project_id)
        if inp.plan is not None:
            if begin.plan_errors:
                await self._fail("invalid plan: " + "; ".join(begin.plan_errors),
                                 errors.INVALID_PLAN)
            plan = inp.plan
        else:
            self._status = Status.SPLITTING
            search.publish(self._searchable, status=self._status.value)
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
                await self._fail(f"splitting failed: {failure_message(e)}",
                                 kind or errors.SPLIT_FAILED)
            plan = split.plan
            self._metrics.add(split.metrics)

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
        search.publish(self._searchable, status=self._status.value)
        self._dag = Dag(task_id, plan, begin, views=self._views, metrics=self._metrics)
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
            raise ApplicationError(self._error or "failed", result, type=errors.TASK_FAILED,
                                   non_retryable=True)
        return result

    async def _finish(self) -> TaskResult:
        search.publish(self._searchable, status=self._status.value)
        result = TaskResult(
            task_id=workflow.info().workflow_id,
            status=self._status,
            error=self._error,
            title=self._title,
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
