"""Turning Temporal failure chains into the sentence a person needs (workflow-safe)."""

from __future__ import annotations

from temporalio import workflow
from temporalio.exceptions import ActivityError, ApplicationError, ChildWorkflowError

with workflow.unsafe.imports_passed_through():
    from activities import errors

# What a failed activity raises in workflow code: ActivityError for a normal activity,
# but a local activity that fails for good surfaces its ApplicationError directly.
ACTIVITY_FAILURES = (ActivityError, ApplicationError)


def failure_cause(err: BaseException) -> tuple[str | None, str]:
    """Return the type and message of the failure under the activity or child wrappers.

    A blank message is said to be blank: a failure is never reported as nothing.
    """
    err = _root(err)
    if isinstance(err, ApplicationError):
        kind, message = err.type, err.message
    else:
        kind, message = type(err).__name__, str(getattr(err, "message", "") or err)
    return kind, message if message.strip() else "an empty error message"


def failure_message(err: BaseException) -> str:
    """Return what went wrong in a failed activity or child, without the wrappers."""
    kind, message = failure_cause(err)
    # A failed child's message already names the root cause.
    if isinstance(_root(err), ApplicationError) and kind and kind != errors.SUBTASK_FAILED:
        return f"{kind}: {message}"
    return message


def _root(err: BaseException) -> BaseException:
    while isinstance(err, (ActivityError, ChildWorkflowError)) and err.cause is not None:
        err = err.cause
    return err
