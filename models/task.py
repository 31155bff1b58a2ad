"""Tasks, subtasks, their statuses and the one table of legal status transitions."""

from __future__ import annotations

from enum import StrEnum
from typing import Any

from pydantic import BaseModel, Field


class Status(StrEnum):
    PENDING = "PENDING"
    SPLITTING = "SPLITTING"
    READY = "READY"
    QUEUED = "QUEUED"
    ASSIGNED = "ASSIGNED"
    RUNNING = "RUNNING"
    REVIEWING = "REVIEWING"
    COMPLETED = "COMPLETED"
    FAILED = "FAILED"
    CANCELLED = "CANCELLED"
    BLOCKED = "BLOCKED"

    @property
    def terminal(self) -> bool:
        return self in TERMINAL


TERMINAL = frozenset({Status.COMPLETED, Status.FAILED, Status.CANCELLED, Status.BLOCKED})

S = Status
# new status -> the statuses it may be entered from. Re-entering the same status is always
# allowed (a retried activity writes it again). FAILED and BLOCKED can be reopened by a
# retry or a replan; COMPLETED and CANCELLED are final.
_ENTER_FROM: dict[Status, frozenset[Status]] = {
    S.PENDING: frozenset({S.BLOCKED, S.FAILED}),
    S.SPLITTING: frozenset({S.PENDING}),
    S.READY: frozenset({S.PENDING, S.SPLITTING, S.BLOCKED, S.FAILED}),
    # Rework after a rejection, and a retry or reassignment after an escalation, go
    # through assignment again.
    S.QUEUED: frozenset({S.PENDING, S.READY, S.ASSIGNED, S.REVIEWING, S.FAILED, S.BLOCKED}),
    S.ASSIGNED: frozenset({S.PENDING, S.READY, S.QUEUED, S.REVIEWING, S.FAILED, S.BLOCKED}),
    S.RUNNING: frozenset({S.PENDING, S.SPLITTING, S.READY, S.QUEUED, S.ASSIGNED, S.REVIEWING,
                          S.FAILED, S.BLOCKED}),
    S.REVIEWING: frozenset({S.RUNNING}),
    S.COMPLETED: frozenset({S.RUNNING, S.REVIEWING}),
    S.FAILED: frozenset({S.PENDING, S.SPLITTING, S.READY, S.QUEUED, S.ASSIGNED, S.RUNNING,
                         S.REVIEWING, S.BLOCKED}),
    S.CANCELLED: frozenset({S.PENDING, S.SPLITTING, S.READY, S.QUEUED, S.ASSIGNED, S.RUNNING,
                            S.REVIEWING, S.BLOCKED, S.FAILED}),
    # BLOCKED: waiting on something other than its own work: a failed dependency, or an
    # escalation (from RUNNING, REVIEWING or FAILED) until a manager decides.
    S.BLOCKED: frozenset({S.PENDING, S.READY, S.QUEUED, S.ASSIGNED, S.RUNNING, S.REVIEWING,
                          S.FAILED}),
}


class InvalidTransition(ValueError):
    """A status change that makes no sense, e.g. COMPLETED -> RUNNING."""


def allowed_from(new: Status) -> frozenset[Status]:
    """Return every status from which `new` may be entered (itself included)."""
    return _ENTER_FROM[new] | {new}


def check_transition(old: Status, new: Status, *, what: str = "status") -> None:
    """Raise InvalidTransition unless `old -> new` is a legal move."""
    if old not in allowed_from(new):
        raise InvalidTransition(f"{what}: {old} -> {new} is not a legal transition")


class Priority(StrEnum):
    LOW = "low"
    MEDIUM = "medium"
    HIGH = "high"
    URGENT = "urgent"


class StepType(StrEnum):
    """What kind of work a subtask is; add a member and a handler to extend."""

    SEARCH = "search"
    CODE = "code"
    TOOL = "tool"
    WRITE = "write"


class Metrics(BaseModel):
    """What work cost: tokens, money, time, and the files it left."""

    tokens_used: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cost_usd: float = 0.0
    time_spent_s: float = 0.0
    files_modified: list[str] = Field(default_factory=list)

    def add(self, other: Metrics) -> None:
        """Add `other`'s tokens, cost, time and files to these, in place."""
        self.prompt_tokens += other.prompt_tokens
        self.completion_tokens += other.completion_tokens
        self.tokens_used += other.tokens_used
        self.cost_usd += other.cost_usd
        self.time_spent_s += other.time_spent_s
        self.files_modified += other.files_modified


class Artifact(BaseModel):
    name: str
    id: str = ""
    mime: str = "application/octet-stream"
    size: int = 0


class FallbackUsed(BaseModel):
    """A tool step's primary tool failed for good and its `fallback_tool` was called instead."""

    primary_tool: str
    primary_error: str = Field(description="why the primary tool failed, never blank")
    primary_error_type: str | None = Field(None, description="e.g. ToolFailed, UnknownTool")
    fallback_tool: str

    def sentence(self) -> str:
        """Return what happened, for a person: the primary's error and who answered."""
        return (f"{self.primary_tool} failed ({self.primary_error}); "
                f"fallback {self.fallback_tool} answered")


class Result(BaseModel):
    """What a subtask (or a whole task) produced."""

    success: bool
    output: Any = None
    summary: str = ""
    stdout: str = ""
    stderr: str = ""
    error: str | None = None
    # stdout or stderr was longer than the inline limit: its middle was cut out (a marker
    # says how much) and the whole stream is the artifact named "stdout" / "stderr".
    truncated: bool = False
    artifacts: list[Artifact] = Field(default_factory=list)
    metrics: Metrics = Field(default_factory=Metrics)
    fallback: FallbackUsed | None = Field(
        None, description="set when the step's fallback tool answered for its failed tool")


def subtask_id(task_id: str, step_id: str) -> str:
    """Return the id shared by the subtask row and its child workflow."""
    return f"{task_id}/{step_id}"
