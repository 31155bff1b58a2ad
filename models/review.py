"""Review and escalation: the payloads of the `review` and `resolve_escalation` updates."""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum

from pydantic import BaseModel, ConfigDict, Field, model_validator

from models.io import Budgets
from models.org import OrgChart, ReviewPolicy
from models.plan import Plan


class Decision(StrEnum):
    APPROVE = "approve"
    REJECT = "reject"


class ReviewInput(BaseModel):
    """Update `review`: the assigned reviewer approves, or rejects with feedback."""

    model_config = ConfigDict(extra="forbid")

    reviewer_id: str = Field(min_length=1)
    decision: Decision
    feedback: str = ""
    round: int | None = Field(
        None, ge=1, description="the review round this answers (the step's `progress` query "
        "and `beestown tree` show the open one); a decision for a round no longer open is "
        "refused as stale. Omitted: the round open when it arrives")

    @model_validator(mode="after")
    def _reject_says_why(self) -> ReviewInput:
        if self.decision is Decision.REJECT and not self.feedback.strip():
            raise ValueError("a rejection needs feedback saying what to change")
        return self


class ReviewAck(BaseModel):
    subtask_id: str
    round: int
    decision: Decision


class EscalationReason(StrEnum):
    FAILED = "failed"
    REVIEW_ROUNDS = "review_rounds"
    BUDGET = "budget"
    DEADLINE = "deadline"


class Action(StrEnum):
    RETRY = "retry"
    REASSIGN = "reassign"
    REPLAN = "replan"
    SKIP = "skip"
    ESCALATE = "escalate"


class ResolveEscalation(BaseModel):
    """Update `resolve_escalation`: what the manager (or a person) decides."""

    model_config = ConfigDict(extra="forbid")

    by: str = Field(min_length=1, description="who decides: the holder or someone above")
    action: Action
    assignee: str | None = Field(None, description="with reassign: the new assignee")
    plan: Plan | None = Field(None, description="with replan: the sub-plan replacing the step")
    note: str = ""
    escalation_id: str | None = Field(
        None, description="the escalation this answers (`<subtask>#<n>`, as `beestown "
        "escalations` lists it); a decision for one no longer open is refused as stale. "
        "Omitted: the escalation open when it arrives")

    @model_validator(mode="after")
    def _complete(self) -> ResolveEscalation:
        if self.action is Action.REASSIGN and not self.assignee:
            raise ValueError("reassign needs an assignee")
        if self.action is Action.REPLAN and self.plan is None:
            raise ValueError("replan needs a plan")
        return self


class Escalation(BaseModel):
    """An open escalation: who holds it, why, and who is next up the chain."""

    subtask_id: str
    task_id: str
    seq: int
    reason: EscalationReason
    error: str
    holder: str
    level: int
    chain: list[str]
    opened_at: datetime

    @property
    def id(self) -> str:
        return f"{self.subtask_id}#{self.seq}"


class People(BaseModel):
    """Who works on a subtask, who reviews it, and whom it escalates to (nearest first)."""

    assignee: str | None = None
    reviewer: str | None = None
    review_policy: ReviewPolicy = ReviewPolicy.AUTO
    escalation_chain: list[str] = Field(default_factory=list)
    policies: dict[str, ReviewPolicy] = Field(
        default_factory=dict, description="how each manager in the chain decides"
    )


def people_for(chart: OrgChart, agent_id: str, *, reviewer: str | None = None) -> People:
    """Return who reviews `agent_id`'s work and whom its trouble climbs to, nearest first."""
    managers = [a.id for a in reversed(chart.reporting_chain(agent_id))][1:]
    chosen = reviewer if reviewer and reviewer in chart else (managers[0] if managers else None)
    policy = chart.agent(chosen).review_policy if chosen else ReviewPolicy.AUTO
    return People(
        assignee=agent_id,
        reviewer=chosen,
        review_policy=policy,
        escalation_chain=managers,
        policies={m: chart.agent(m).review_policy for m in managers},
    )


class AssignInput(BaseModel):
    task_id: str
    subtask_id: str
    attempt: int = Field(0, ge=0, description="round of work; each takes its own slot")
    reviewer: str | None = Field(None, description="overrides the assignee's manager")
    required_skills: list[str] = Field(default_factory=list)
    candidates: list[str] | None = None
    preferred: str | None = Field(None, description="an assignee named by the plan")
    score: float = 0.0


class AssignResult(BaseModel):
    """Who does the work (None: it waits in QUEUED), why, and who reviews and decides."""

    agent_id: str | None = None
    reason: str = ""
    people: People = Field(default_factory=People)
    org: bool = Field(False, description="an org chart is configured")
    is_manager: bool = False
    agents: list[str] = Field(default_factory=list, description="active agents, to check a "
                              "reassignment against")
    waiting_for: str | None = Field(None, description="queued: the slot it waits for")


class ReleaseInput(BaseModel):
    subtask_id: str
    attempt: int = 0


class CloseEscalation(BaseModel):
    escalation_id: str
    decision: ResolveEscalation | None = None
    status: str = Field("resolved", pattern="^(resolved|cancelled)$")


class ReviewRequest(BaseModel):
    task_id: str
    subtask_id: str
    reviewer_id: str
    round: int = Field(description="the review round, 1 for the first (as people see it)")
    seq: int = Field(0, description="counts every review of the subtask; keys its usage")
    output_preview: str
    description: str = ""
    budgets: Budgets = Field(default_factory=Budgets, description="the model's review "
                             "spends from the task's and subtask's budgets")


class EscalationRequest(BaseModel):
    escalation: Escalation
    description: str = ""
    budgets: Budgets = Field(default_factory=Budgets, description="a model's decision "
                             "spends from the task's and subtask's budgets")


class NoteInput(BaseModel):
    """Record a subtask's status (and what it waits for) and an event, in one write."""

    task_id: str
    subtask_id: str
    status: str | None = None
    waiting_for: str | None = None
    kind: str
    key: str = Field(description="makes the event idempotent")
    data: dict[str, object] = Field(default_factory=dict)
