"""The DAG of one task run: start each step's child workflow the moment it can run.

A step runs the moment its last dependency completes, with the dependencies' outputs in
hand. To take the child's start off the critical path, a step with exactly one dependency
is started as soon as that dependency has *started*; it then waits, and the dependency
releases it directly with a signal when it finishes (the parent re-sends whatever the
dependency could not deliver). A step with several dependencies is started by the parent
once all of them have completed: one signal per edge would cost more than it saves on
wide graphs. A failure blocks everything downstream; other branches finish.
"""

from __future__ import annotations

import asyncio

from temporalio import workflow
from temporalio.common import Priority, WorkflowIDReusePolicy
from temporalio.exceptions import CancelledError, ChildWorkflowError, FailureError
from temporalio.workflow import ParentClosePolicy

with workflow.unsafe.imports_passed_through():
    from models.io import (
        BeginTaskResult,
        DependencyDone,
        StepOutput,
        SubtaskInput,
        SubtaskResult,
        SubtaskView,
    )
    from models.plan import Plan, PlanStep
    from models.scheduling import priority_score, temporal_priority_key
    from models.task import Metrics, Status
    from workflows import policies
    from workflows.delivery import finish_despite_cancel
    from workflows.failures import failure_message
    from workflows.subtask import SubtaskWorkflow, child_id


class Dag:
    """The scheduling state of one run of a plan (lives inside TaskWorkflow.run).

    `views` (the task's per-step view, by step id) and `metrics` (the task's totals) are
    the task workflow's own objects: the DAG updates them in place as children end.
    """

    def __init__(self, task_id: str, plan: Plan, begin: BeginTaskResult, *,
                 views: dict[str, SubtaskView], metrics: Metrics) -> None:
        self.views = views
        self.metrics = metrics
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
            static_details=self._details(step),
            # Busy clusters serve urgent work first; the child's activities inherit it.
            priority=Priority(priority_key=temporal_priority_key(self.scores[step_id])),
        )

    def _details(self, step: PlanStep) -> str:
        """What the Web UI shows of a step beside its summary (markdown)."""
        org = self.begin.org
        lines = [f"**{step.title or step.id}**", "",
                 f"- task: {self.task_id}", f"- step: {step.id} ({step.type.value})",
                 f"- priority: {step.priority.value}"]
        if step.deps:
            lines.append(f"- after: {', '.join(step.deps)}")
        if org.enabled:
            lines.append(f"- assignee: {step.assignee or 'chosen by skills and load'}"
                         + (f" (skills: {', '.join(step.skills)})" if step.skills else ""))
            lines.append("- reviewer: " + (org.reviewer or "the assignee's manager"))
        if step.description:
            lines += ["", step.description[:500]]
        return "\n".join(lines)

    def _on_success(
        self, step_id: str, output: StepOutput | None, delivered: list[str], metrics: Metrics
    ) -> None:
        view = self.views[step_id]
        view.status, view.progress = Status.COMPLETED, 1.0
        if output is None:  # a completed child always returns one; be safe on old histories
            output = StepOutput(step_id=step_id, subtask_id=view.id)
        view.output, view.truncated = output.output, output.truncated
        self.metrics.add(metrics)
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
            _, cancelled = await finish_despite_cancel(self.handles[step_id].signal(
                SubtaskWorkflow.dependency_done, DependencyDone(output=self.outputs[dep])
            ))
        except FailureError as e:
            # The child is gone (cancelled or terminated from outside): it cannot run.
            self._on_failure(step_id, f"could not be released: {failure_message(e)}")
            return
        if cancelled:
            raise asyncio.CancelledError

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

