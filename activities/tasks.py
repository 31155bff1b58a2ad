"""Activities at a task's edges: create it, store its plan, record how it ended."""

from __future__ import annotations

from pydantic import ValidationError
from temporalio import activity
from temporalio.exceptions import ApplicationError

from activities.boundary import boundary
from activities.errors import UNKNOWN_AGENT
from models.io import (
    BeginTaskInput,
    BeginTaskResult,
    Budgets,
    FinishTaskInput,
    OrgPolicy,
    Routing,
    SavePlanInput,
)
from models.org import InvalidOrg
from models.plan import graph_errors
from models.task import Metrics, Status
from runtime.org_store import OrgStore
from runtime.store import NotFound, Store
from runtime.tools.registry import ToolRegistry


class TaskActivities:
    """Task bookkeeping; also tells the workflow the worker side's routing and limits."""

    def __init__(
        self, store: Store, *, routing: Routing, max_steps: int, tools: ToolRegistry,
        budgets: Budgets | None = None, max_turns: int = 12, org: OrgStore | None = None,
        org_defaults: OrgPolicy | None = None,
    ) -> None:
        self.store = store
        self.org = org
        self.org_defaults = org_defaults or OrgPolicy()
        self.routing = routing
        self.max_steps = max_steps
        self.tools = tools  # asked at each plan: MCP servers come up while the worker runs
        self.budgets = budgets or Budgets()
        self.max_turns = max_turns

    @activity.defn(name="begin_task")
    @boundary
    async def begin_task(self, inp: BeginTaskInput) -> BeginTaskResult:
        """Create the task row; check an explicit plan against this worker's tools."""
        # A task may ask for less than the operator's caps, never more.
        max_steps = min(inp.task.max_steps or self.max_steps, self.max_steps)
        status = Status.READY if inp.task.plan else Status.SPLITTING
        await self.store.insert_task(inp.task_id, inp.task, status=status,
                                     created_at=inp.created_at, run_id=inp.run_id)
        errors: list[str] = []
        if inp.task.plan is not None:
            errors = graph_errors(inp.task.plan, max_steps=max_steps,
                                  tools=self.tools.known())
        budgets = Budgets(
            task_tokens=_lower(inp.task.token_budget, self.budgets.task_tokens),
            subtask_tokens=_lower(inp.task.subtask_token_budget, self.budgets.subtask_tokens),
        )
        org, context, assignee = await self._org_policy(inp)
        return BeginTaskResult(
            routing=self.routing, max_steps=max_steps, plan_errors=errors, budgets=budgets,
            max_turns=min(inp.task.max_turns or self.max_turns, self.max_turns),
            org=org, manager_context=context,
            assignee=assignee,
            project_id=(await self.store.get_task(inp.task_id))["project_id"],
        )

    async def _org_policy(self, inp: BeginTaskInput) -> tuple[OrgPolicy, str, str | None]:
        """Whom the task's steps go to (the assignee's reports), what the splitter knows,
        and who the task's assignee is (None without an org chart)."""
        if self.org is None:
            return OrgPolicy(), "", None
        try:
            chart = await self.org.load_org()
        except (InvalidOrg, ValidationError):
            return OrgPolicy(), "", None  # no chart loaded: no organization
        task = inp.task
        assignee = task.assignee or chart.root.id
        if assignee not in chart:
            raise ApplicationError(f"unknown assignee {assignee!r}", type=UNKNOWN_AGENT,
                                   non_retryable=True)
        reports = [a for a in chart.reports(assignee) if a.active] or [chart.agent(assignee)]
        boss = chart.agent(assignee)
        lines = [f"You split this job as {boss.name or boss.id} ({boss.role or 'manager'}). "
                 "Give every step an \"assignee\" (one of the ids below) and the \"skills\" "
                 "it needs:"]
        for a in reports:
            skills = set(chart.skills_of(a.id))
            for below in chart.subtree(a.id):
                skills |= chart.skills_of(below.id)
            kind = "manager" if chart.is_manager(a.id) else "worker"
            lines.append(f"- {a.id} ({a.role or kind}, {kind}): {', '.join(sorted(skills))}")
        await self.store.set_task_people(inp.task_id, assignee=assignee,
                                         reviewer=task.reviewer)
        policy = self.org_defaults.model_copy(update={
            "enabled": True, "candidates": [a.id for a in reports],
            "reviewer": task.reviewer, "depth": task.depth,
        })
        return policy, "\n".join(lines), assignee

    @activity.defn(name="save_plan")
    @boundary
    async def save_plan(self, inp: SavePlanInput) -> None:
        """Store the plan and a PENDING row per step; the task becomes RUNNING."""
        await self.store.save_plan(inp.task_id, inp.plan, started_at=inp.started_at)

    @activity.defn(name="finish_task")
    @boundary
    async def finish_task(self, inp: FinishTaskInput) -> Metrics:
        """Record the task's final status and result; return its tokens and cost."""
        usage = await self.store.usage_summary(inp.result.task_id)
        metrics = inp.result.metrics.model_copy(update={
            "prompt_tokens": int(usage.get("prompt_tokens", 0)),
            "completion_tokens": int(usage.get("completion_tokens", 0)),
            "tokens_used": int(usage.get("prompt_tokens", 0))
            + int(usage.get("completion_tokens", 0)),
            "cost_usd": float(usage.get("cost_usd", 0.0)),
        })
        result = inp.result.model_copy(update={"metrics": metrics})
        try:
            await self.store.finish_task(result, completed_at=inp.completed_at)
        except NotFound:
            # Cancelled before its row was written: there is nothing to record.
            activity.logger.warning("task %s has no row; its end is not recorded",
                                    inp.result.task_id)
        return metrics


def _lower(asked: int | None, cap: int | None) -> int | None:
    """Return the smaller of two optional limits (None is unlimited)."""
    if asked is None:
        return cap
    return asked if cap is None else min(asked, cap)
