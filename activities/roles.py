"""Which activities a worker serves, by role (``BEESTOWN_WORKER_ROLES``), on which queue.

    workflows   task and subtask bookkeeping, assignment, review and escalation records
                (on the main task queue, beside the workflows)
    llm         the splitter, agent turns, code writing, the managers' model decisions
    sandbox     code steps
    tools       tool steps and tool calls
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from temporalio.client import Client

from activities import metrics
from activities.agent import AgentActivities
from activities.code import CodeActivities
from activities.llm import LLMActivities
from activities.org import OrgActivities
from activities.steps import StepBook, SubtaskActivities
from activities.tasks import TaskActivities
from activities.tools import ToolActivities
from models.io import Budgets, OrgPolicy, Routing
from runtime.deps import Deps, workspace_from
from runtime.llm.metered import MeteredLLM
from runtime.org_store import OrgStore
from runtime.settings import Settings

ROLES = ("workflows", "llm", "sandbox", "tools")


def routing(settings: Settings, *, search_attributes: bool = False) -> Routing:
    """Return where the workflows send each kind of activity (and whether they may upsert
    BeesTown's search attributes: only once the namespace has them)."""
    tool_queue = settings.queue_for("tools")
    return Routing(
        llm_queue=settings.queue_for("llm"),
        sandbox_queue=settings.queue_for("sandbox"),
        tool_queue=tool_queue,
        # Tool steps run as local activities (no hop through the server) when the
        # workflow worker serves tools itself.
        local_tools=tool_queue == settings.task_queue and {"tools", "workflows"} <= settings.roles,
        search_attributes=search_attributes,
    )


def activities_by_queue(
    settings: Settings, deps: Deps, *, client: Client | None, search_attributes: bool = False
) -> dict[str, list[Callable[..., Any]]]:
    """Return the activities this worker's roles serve, by task queue.

    `client` lets a finished subtask wake the queued subtasks its slot goes to. A worker
    with the workflows role always has an entry (maybe empty) for the main task queue.
    """
    book = StepBook(deps.store)
    org_store = OrgStore(deps.pool)

    def metered(hint: str = "") -> MeteredLLM:
        return MeteredLLM(deps.llm, deps.store, prices=deps.prices,
                          context_override=settings.context_limit, hint=hint,
                          on_usage=metrics.model_usage)

    # Bookkeeping runs on the workflow queue, the manager's model decisions on the LLM queue.
    org = OrgActivities(org_store, deps.store, client=client,
                        llm=metered("for a manager whose review policy is 'llm'"))
    by_queue: dict[str, list[Callable[..., Any]]] = {}
    roles = settings.roles
    if "workflows" in roles:
        tasks = TaskActivities(
            deps.store, routing=routing(settings, search_attributes=search_attributes),
            max_steps=settings.max_plan_steps,
            tools=deps.registry, max_turns=settings.max_turns,
            budgets=Budgets(task_tokens=settings.task_token_budget,
                            subtask_tokens=settings.subtask_token_budget),
            org=org_store if settings.uses_org else None,
            org_defaults=OrgPolicy(review_rounds=settings.review_rounds,
                                   escalation_timeout_s=settings.escalation_timeout_s,
                                   max_depth=settings.max_depth),
        )
        subtasks = SubtaskActivities(deps.store)
        by_queue.setdefault(settings.task_queue, []).extend(
            [tasks.begin_task, tasks.save_plan, tasks.finish_task,
             subtasks.fail_subtask, subtasks.record_result,
             org.assign_subtask, org.release_slot, org.note_subtask, org.record_escalation,
             org.close_escalation]
        )
    if "llm" in roles:
        llm = LLMActivities(llm=metered("or run an explicit plan with --plan FILE"),
                            tools=deps.registry)
        agent = AgentActivities(llm=metered(), book=book, toolbox=deps.registry,
                                org=org_store, workspace=workspace_from(settings))
        by_queue.setdefault(settings.queue_for("llm"), []).extend(
            [llm.split_task, agent.agent_turn, agent.write_code,
             org.review_with_llm, org.decide_escalation_with_llm]
        )
    if "sandbox" in roles:
        code = CodeActivities(deps.sandbox, book, unavailable=deps.sandbox_problem)
        by_queue.setdefault(settings.queue_for("sandbox"), []).append(code.run_code_step)
    if "tools" in roles:
        tools = ToolActivities(deps.registry, book)
        by_queue.setdefault(settings.queue_for("tools"), []).extend(
            [tools.run_tool_step, tools.call_tool, tools.list_tools]
        )
    return by_queue
