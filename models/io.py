"""Inputs and results of workflows, activities, signals and queries: one model each way."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from pydantic import AliasChoices, BaseModel, Field

from models.instants import UtcDatetime
from models.plan import Plan, PlanStep
from models.task import FallbackUsed, Metrics, Priority, Status

# Outputs larger than this (as JSON) travel through history as a preview; the full value
# stays in PostgreSQL and activities load it by subtask id.
INLINE_OUTPUT_LIMIT = 8_192

#: The project of a task that names none and has no parent task: one per org.
DEFAULT_PROJECT = "default"
PROJECT_ID_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$"
# Related files and agents a task may name (each is a line or a file in a prompt).
MAX_RELATED = 50


class Budgets(BaseModel):
    """Token budgets of a task and of each of its subtasks; None means unlimited."""

    task_tokens: int | None = Field(None, ge=0)
    subtask_tokens: int | None = Field(None, ge=0)


class OrgPolicy(BaseModel):
    """How the org chart shapes a task: None of it applies when no chart is loaded."""

    enabled: bool = False
    candidates: list[str] | None = Field(None, description="whom steps may go to")
    reviewer: str | None = None
    review_rounds: int = Field(2, ge=0, description="rejections before it escalates")
    escalation_timeout_s: float = Field(3600.0, gt=0, description="before it climbs")
    depth: int = 0
    max_depth: int = 2


class Routing(BaseModel):
    """Where each kind of activity runs; decided by the worker, recorded in history."""

    llm_queue: str
    sandbox_queue: str
    tool_queue: str
    local_tools: bool = False
    search_attributes: bool = Field(False, description="the namespace has BeesTown's search "
                                    "attributes (see workflows/search.py): upsert them")


class TaskInput(BaseModel):
    """What a person asks for: a prompt to split, or an explicit plan."""

    prompt: str = ""
    plan: Plan | None = None
    title: str = ""
    priority: Priority = Priority.MEDIUM
    deadline: UtcDatetime | None = Field(
        None, description="an ISO 8601 instant; without an offset it is read as UTC")
    tags: list[str] = Field(default_factory=list)
    metadata: dict[str, Any] = Field(default_factory=dict)
    max_steps: int | None = Field(None, ge=1, le=1000)
    token_budget: int | None = Field(None, ge=0, description="tokens the whole task may use")
    subtask_token_budget: int | None = Field(None, ge=0, description="tokens per subtask")
    max_turns: int | None = Field(None, ge=1, le=200, description="model turns per subtask")
    creator: str = Field("", description="who asked: a person or an agent id")
    assignee: str | None = Field(None, description="the agent it is given to; default the root")
    reviewer: str | None = Field(None, description="reviews every subtask; default each "
                                 "assignee's manager")
    parent_subtask: str | None = Field(None, description="set when a manager decomposes a "
                                       "subtask as a nested task")
    depth: int = Field(0, ge=0, description="how many decompositions above this one")
    # The seed's Task fields; its camelCase names are accepted too. They travel as ids and
    # paths: what they name is read by the activities that build an agent's context.
    project_id: str | None = Field(
        None, pattern=PROJECT_ID_PATTERN,
        validation_alias=AliasChoices("project_id", "projectId"),
        description="the project it belongs to; default: its parent task's, else "
        f"{DEFAULT_PROJECT!r}")
    related_files: list[str] = Field(
        default_factory=list, max_length=MAX_RELATED,
        validation_alias=AliasChoices("related_files", "relatedFiles"),
        description="paths under the worker's workspace root, read into agents' context")
    related_agents: list[str] = Field(
        default_factory=list, max_length=MAX_RELATED,
        validation_alias=AliasChoices("related_agents", "relatedAgents"),
        description="agent ids whose roles and skills agents are told about")
    parent_task: str | None = Field(
        None, validation_alias=AliasChoices("parent_task", "parentTask", "parentTaskId",
                                            "parent_task_id"),
        description="the task this one serves; set for nested tasks from parent_subtask")


class BeginTaskInput(BaseModel):
    task_id: str
    run_id: str = ""
    task: TaskInput
    created_at: datetime


class BeginTaskResult(BaseModel):
    routing: Routing
    max_steps: int
    plan_errors: list[str] = Field(default_factory=list)
    budgets: Budgets = Field(default_factory=Budgets)
    max_turns: int = 12
    org: OrgPolicy = Field(default_factory=OrgPolicy)
    manager_context: str = Field("", description="who splits: role and reports' skills")
    assignee: str | None = Field(None, description="with an org chart: who the task is given to")
    project_id: str = Field(DEFAULT_PROJECT, description="the project the task was placed in")


class SplitInput(BaseModel):
    task_id: str
    prompt: str
    max_steps: int
    token_budget: int | None = None
    manager_context: str = ""


class SplitResult(BaseModel):
    plan: Plan
    rounds: int = 1
    metrics: Metrics = Field(default_factory=Metrics)


class SavePlanInput(BaseModel):
    task_id: str
    plan: Plan
    started_at: datetime


class StepOutput(BaseModel):
    """A finished step's output as it travels through history (maybe only a preview)."""

    step_id: str
    subtask_id: str
    output: Any = None
    truncated: bool = False
    summary: str = ""


class SubtaskInput(BaseModel):
    task_id: str
    step: PlanStep
    routing: Routing
    budgets: Budgets = Field(default_factory=Budgets)
    max_turns: int = 12
    org: OrgPolicy = Field(default_factory=OrgPolicy)
    score: float = 0.0
    inputs: dict[str, StepOutput] = Field(default_factory=dict)
    waiting_for: list[str] = Field(default_factory=list)
    notify: list[str] = Field(default_factory=list, description="child ids to release")


class DependencyDone(BaseModel):
    """Signal: a dependency finished and here is its output."""

    output: StepOutput


class SubtaskResult(BaseModel):
    step_id: str
    status: Status
    output: StepOutput | None = None
    error: str | None = None
    delivered: list[str] = Field(default_factory=list)
    metrics: Metrics = Field(default_factory=Metrics)


class StepRun(BaseModel):
    """Activity input: run one step now, its dependencies' outputs at hand."""

    task_id: str
    subtask_id: str
    step: PlanStep
    inputs: dict[str, StepOutput] = Field(default_factory=dict)
    feedback: list[str] = Field(default_factory=list, description="reviewers' rejections")
    hold_for_review: bool = Field(False, description="finish as REVIEWING, not COMPLETED")
    agent_id: str | None = None
    round: int = Field(0, ge=0, description="round of work (reruns after a review or an "
                       "escalation); keys usage and tool outputs apart")
    fallback_for: FallbackUsed | None = Field(
        None, description="this run calls the step's fallback tool because its tool failed "
        "so; the result and the events record it")


class StepOutcome(BaseModel):
    success: bool
    output: StepOutput
    error: str | None = None
    detail: str = Field("", description="e.g. the tail of a failed code step's stderr")
    metrics: Metrics = Field(default_factory=Metrics)


class RecordResultInput(BaseModel):
    run: StepRun
    output: Any = None
    summary: str = ""
    metrics: Metrics = Field(default_factory=Metrics)


class FailSubtaskInput(BaseModel):
    task_id: str
    subtask_id: str
    status: Status
    error: str


class SubtaskView(BaseModel):
    id: str
    step_id: str
    type: str
    status: Status
    dependencies: list[str] = Field(default_factory=list)
    output: Any = None
    truncated: bool = False
    error: str | None = None
    progress: float = Field(0.0, ge=0, le=1)
    detail: str = ""
    waiting_for: str | None = Field(None, description="QUEUED: the agent(s) it waits for; "
                                    "REVIEWING: the reviewer; BLOCKED: the escalation holder")
    review_round: int | None = Field(None, description="REVIEWING: the round a verdict answers")
    escalation_id: str | None = Field(None, description="BLOCKED: the open escalation")
    refusals: list[str] = Field(default_factory=list, description="signals refused, newest last")
    needs_person: bool = Field(False, description="REVIEWING or BLOCKED: a person's verdict or "
                               "decision is awaited (`beestown review` / `beestown resolve`)")


class StepStateReport(BaseModel):
    """Signal `step_state` (step to its task): it started or stopped waiting on a person or
    a slot, so the task's `progress` query shows QUEUED / REVIEWING / BLOCKED as they are."""

    step_id: str
    status: Status
    detail: str = ""
    waiting_for: str | None = None
    review_round: int | None = None
    escalation_id: str | None = None
    needs_person: bool = False


class TaskResult(BaseModel):
    task_id: str
    status: Status
    error: str | None = None
    title: str = ""
    subtasks: list[SubtaskView] = Field(default_factory=list)
    metrics: Metrics = Field(default_factory=Metrics)


class Progress(BaseModel):
    task_id: str
    status: Status
    percent: float = Field(0.0, description="done of the whole, steps weighted equally")
    counts: dict[str, int] = Field(default_factory=dict)
    subtasks: list[SubtaskView] = Field(default_factory=list)
    error: str | None = None


class FinishTaskInput(BaseModel):
    result: TaskResult
    completed_at: datetime
