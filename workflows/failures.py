"""Turning Temporal failure chains into the sentence a person needs (workflow-safe)."""

from __future__ import annotations

from temporalio import workflow
from temporalio.exceptions import ActivityError, ApplicationError, ChildWorkflowError

with workflow.unsafe.imports_passed_through():
    from activities import errors

# What a failed activity raises in workflow code: ActivityError for a normal activity,
# but a local activity that fails for good surfaces its ApplicationError directly.
ACTIVITY_FAILURES = (ActivityError, ApplicationError)


def failure_message(err: BaseException) -> str:
    """Return what went wrong in a failed activity or child, without the wrappers."""
    while isinstance(err, (ActivityError, ChildWorkflowError)) and err.cause is not None:
        err = err.cause
    if isinstance(err, ApplicationError):
        # A failed child's message already names the root cause.
        if err.type and err.type != errors.SUBTASK_FAILED:
            return f"{err.type}: {err.message}"
        return err.message
    return str(getattr(err, "message", "") or err)
