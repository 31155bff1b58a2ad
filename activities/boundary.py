"""The one place where the runtime's plain exceptions become activity errors.

The runtime (store, model client, tokens, tools, sandbox) raises plain exceptions, each
documented where it is defined; an activity wrapped in ``boundary`` lets them out as
ApplicationErrors typed with the constants of ``activities.errors``, permanent ones
non-retryable. Anything else leaves as it is: Temporal's retry policy decides.
"""

from __future__ import annotations

import functools
from collections.abc import Awaitable, Callable
from datetime import timedelta
from typing import ParamSpec, TypeVar

from temporalio.exceptions import ApplicationError

from activities.errors import (
    BAD_LLM_REPLY,
    BAD_TOOL_ARGUMENTS,
    BUDGET_EXCEEDED,
    CONTEXT_OVERFLOW,
    INVALID_PLAN,
    INVALID_TRANSITION,
    LLM_NOT_CONFIGURED,
    LLM_RATE_LIMITED,
    LLM_REQUEST_REJECTED,
    LLM_SERVER_ERROR,
    NOT_FOUND,
    PRICE_TABLE_ERROR,
    SANDBOX_UNAVAILABLE,
    STORE_REFUSED,
    TASK_ID_REUSED,
    TOOL_FAILED,
    TOOL_UNAVAILABLE,
    UNKNOWN_TOOL,
)
from models.payload import cut_text
from models.plan import InvalidPlan
from models.task import InvalidTransition
from models.usage import BudgetExceeded
from runtime.llm.client import BadLLMReply, LLMNotConfigured, LLMRequestRejected, LLMRetryLater
from runtime.llm.context import ContextOverflow
from runtime.llm.prices import PriceTableError
from runtime.sandbox import SandboxUnavailable
from runtime.store import NotFound, StoreRefused, TaskIdReused
from runtime.tools.errors import BadToolArguments, ToolFailed, UnknownTool

_PERMANENT_CLASSES: tuple[tuple[type[Exception], str], ...] = (
    (InvalidTransition, INVALID_TRANSITION),
    (NotFound, NOT_FOUND),
    (TaskIdReused, TASK_ID_REUSED),
    (StoreRefused, STORE_REFUSED),
    (InvalidPlan, INVALID_PLAN),
    (BudgetExceeded, BUDGET_EXCEEDED),
    (ContextOverflow, CONTEXT_OVERFLOW),
    (PriceTableError, PRICE_TABLE_ERROR),
    (LLMNotConfigured, LLM_NOT_CONFIGURED),
    (LLMRequestRejected, LLM_REQUEST_REJECTED),
    (UnknownTool, UNKNOWN_TOOL),
    (BadToolArguments, BAD_TOOL_ARGUMENTS),
    (SandboxUnavailable, SANDBOX_UNAVAILABLE),
)


def application_error(e: Exception) -> ApplicationError | None:
    """Return the ApplicationError an activity raises for runtime error `e` (None: not ours).

    A retryable ToolFailed becomes TOOL_UNAVAILABLE, so that the retry policy retries it.
    """
    message = cut_text(str(e))  # a failure travels through history
    if isinstance(e, ToolFailed):
        if e.retryable:
            return ApplicationError(message, type=TOOL_UNAVAILABLE)
        return ApplicationError(message, type=TOOL_FAILED, non_retryable=True)
    if isinstance(e, BadLLMReply):
        return ApplicationError(message, type=BAD_LLM_REPLY)
    if isinstance(e, LLMRetryLater):
        return ApplicationError(
            message, type=LLM_RATE_LIMITED if e.rate_limited else LLM_SERVER_ERROR,
            next_retry_delay=None if e.wait_s is None else timedelta(seconds=e.wait_s))
    for cls, kind in _PERMANENT_CLASSES:
        if isinstance(e, cls):
            return ApplicationError(message, type=kind, non_retryable=True)
    return None


P = ParamSpec("P")
T = TypeVar("T")


def boundary(fn: Callable[P, Awaitable[T]]) -> Callable[P, Awaitable[T]]:
    """Wrap an activity (under ``@activity.defn``) so that runtime errors leave it classified."""

    @functools.wraps(fn)
    async def run(*args: P.args, **kwargs: P.kwargs) -> T:
        try:
            return await fn(*args, **kwargs)
        except Exception as e:
            err = application_error(e)
            if err is None:
                raise
            if err.message != str(e):  # the cause would carry the whole text again
                raise err from None
            raise err from e

    return run
