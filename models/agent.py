"""The agent engine's messages: one model turn, the tool calls it asks for, code attempts.

The conversation itself lives in PostgreSQL (table `transcripts`); history carries only
positions, previews and ids, so a long tool-using loop stays far below Temporal's limits.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, Field

from models.io import Budgets, StepOutcome, StepRun
from models.task import Metrics
from models.tools import ToolCallResult


class ToolCallRequest(BaseModel):
    """A tool call the model asked for, its arguments parsed (or why they would not parse)."""

    call_id: str
    name: str
    args: dict[str, Any] = Field(default_factory=dict)
    args_error: str | None = None


class ToolReply(BaseModel):
    """The answer to one tool call, as it goes back to the model."""

    call_id: str
    name: str
    result: ToolCallResult


class AgentTurnInput(BaseModel):
    run: StepRun
    turn: int = Field(ge=0)
    seq: int = Field(0, ge=0, description="transcript length before this turn")
    replies: list[ToolReply] = Field(default_factory=list)
    budgets: Budgets = Field(default_factory=Budgets)
    max_turns: int = Field(12, ge=1)


class AgentTurnResult(BaseModel):
    seq: int = Field(description="transcript length after this turn")
    tool_calls: list[ToolCallRequest] = Field(default_factory=list)
    outcome: StepOutcome | None = Field(None, description="set when the model has finished")
    metrics: Metrics = Field(default_factory=Metrics)


class CodeAttempt(BaseModel):
    code: str
    error: str


class WriteCodeInput(BaseModel):
    run: StepRun
    attempts: list[CodeAttempt] = Field(default_factory=list)
    budgets: Budgets = Field(default_factory=Budgets)


class WriteCodeResult(BaseModel):
    code: str
    metrics: Metrics = Field(default_factory=Metrics)
