"""Activities at a task's edges: create it, store its plan, record how it ended."""

from __future__ import annotations

from temporalio import activity

from activities.store import Store
from models.io import BeginTaskInput, BeginTaskResult, FinishTaskInput, Routing, SavePlanInput
from models.plan import graph_errors
from models.task import Status, StepType


class TaskActivities:
    """Task bookkeeping; also tells the workflow the worker side's routing and limits."""

    def __init__(
        self, store: Store, *, routing: Routing, max_steps: int, tool_names: list[str]
    ) -> None:
        self.store = store
        self.routing = routing
        self.max_steps = max_steps
        self.tool_names = tool_names

    @activity.defn(name="begin_task")
    async def begin_task(self, inp: BeginTaskInput) -> BeginTaskResult:
        """Create the task row; check an explicit plan against this worker's tools."""
        max_steps = inp.task.max_steps or self.max_steps
        status = Status.READY if inp.task.plan else Status.SPLITTING
        await self.store.insert_task(inp.task_id, inp.task, status=status,
                                     created_at=inp.created_at)
        errors: list[str] = []
        if inp.task.plan is not None:
            errors = graph_errors(inp.task.plan, max_steps=max_steps)
            errors += [
                f"step {s.id!r} names unknown tool {s.tool!r} (known: "
                f"{', '.join(self.tool_names) or 'none'})"
                for s in inp.task.plan.steps
                if s.type is StepType.TOOL and s.tool and s.tool not in self.tool_names
            ]
        return BeginTaskResult(routing=self.routing, max_steps=max_steps, plan_errors=errors)

    @activity.defn(name="save_plan")
    async def save_plan(self, inp: SavePlanInput) -> None:
        """Store the plan and a PENDING row per step; the task becomes RUNNING."""
        await self.store.save_plan(inp.task_id, inp.plan, started_at=inp.started_at)

    @activity.defn(name="finish_task")
    async def finish_task(self, inp: FinishTaskInput) -> None:
        """Record the task's final status and result."""
        await self.store.finish_task(inp.result, completed_at=inp.completed_at)
