"""What one round of work on a step ends in: done, trouble for a manager, or work again."""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum

from temporalio import workflow

with workflow.unsafe.imports_passed_through():
    from models.io import StepOutcome
    from models.review import EscalationReason


@dataclass(frozen=True)
class Done:
    """The work produced an output (not yet reviewed)."""

    outcome: StepOutcome


@dataclass(frozen=True)
class Trouble:
    """The work could not finish; a manager must decide what happens next."""

    reason: EscalationReason
    error: str


class WorkAgain(Enum):
    """A manager decided to retry the step or give it to someone else."""

    WORK_AGAIN = "work again"


WORK_AGAIN = WorkAgain.WORK_AGAIN

#: What a round of work, or a manager's decision about it, leads to.
Result = Done | Trouble | WorkAgain


class DeadlinePassed(Exception):
    """The step's deadline passed while it ran (its work was cancelled)."""


class ReplanFailed(Exception):
    """The sub-plan a manager chose failed too: it goes back up the chain."""
