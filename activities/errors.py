"""Every `ApplicationError` type BeesTown raises, named once.

Activities raise ``ApplicationError(message, type=<one of these>, non_retryable=...)``;
workflows compare ``err.type`` against these constants, never against string literals,
and ``workflows.policies`` builds its retry policies' ``non_retryable_error_types`` from
``PERMANENT``. The strings themselves are part of recorded histories and of what
operators search for: never rename one.

Permanent (no retry can fix them; the raising activity also sets ``non_retryable``):

- ``INVALID_PLAN``: a plan (file, model reply or replan) that does not validate.
- ``LLM_REQUEST_REJECTED``: the model server refused the request (400/401/404...).
- ``LLM_NOT_CONFIGURED``: a model call with no endpoint configured.
- ``SANDBOX_UNAVAILABLE``: the sandbox backend cannot run here (self-test failed...).
- ``UNKNOWN_TOOL``, ``BAD_TOOL_ARGUMENTS``, ``TOOL_FAILED``: a tool step that cannot work.
- ``BUDGET_EXCEEDED``, ``CONTEXT_OVERFLOW``, ``PRICE_TABLE_ERROR``: token and cost limits.
- ``INVALID_TRANSITION``, ``NOT_FOUND``, ``TASK_ID_REUSED``, ``STORE_REFUSED``: the
  store's refusals (``STORE_REFUSED``: PostgreSQL refused a value itself; retrying would
  only redo the work that produced it).
- ``UNKNOWN_AGENT``: an assignee that is not in the org chart.
- ``TRANSCRIPT_LOST``: a model turn whose stored conversation is not where history says.

Retryable: ``BAD_LLM_REPLY``, ``LLM_RATE_LIMITED``, ``LLM_SERVER_ERROR``,
``TOOL_UNAVAILABLE``, ``NO_CODE``.

Activities are wrapped in ``activities.boundary.boundary``: the runtime's plain exceptions
(``runtime.store.NotFound``, ``runtime.llm.client.LLMRequestRejected``,
``runtime.tools.errors.ToolFailed``...) leave them as ApplicationErrors of these types.

Raised by workflows (the task or step ends with it): ``SUBTASK_FAILED``, ``SKIPPED``,
``TASK_FAILED``, ``INVALID_TASK_ID``, ``SPLIT_FAILED``, ``UNKNOWN_STEP_TYPE``,
``TURN_CAP_REACHED``.
"""

from __future__ import annotations

# This module imports nothing: workflow code reads it inside Temporal's sandbox.

# -- permanent ------------------------------------------------------------------------
INVALID_PLAN = "InvalidPlan"
LLM_REQUEST_REJECTED = "LLMRequestRejected"
LLM_NOT_CONFIGURED = "LLMNotConfigured"
SANDBOX_UNAVAILABLE = "SandboxUnavailable"
UNKNOWN_TOOL = "UnknownTool"
BAD_TOOL_ARGUMENTS = "BadToolArguments"
TOOL_FAILED = "ToolFailed"
BUDGET_EXCEEDED = "BudgetExceeded"
CONTEXT_OVERFLOW = "ContextOverflow"
PRICE_TABLE_ERROR = "PriceTableError"
INVALID_TRANSITION = "InvalidTransition"
NOT_FOUND = "NotFound"
TASK_ID_REUSED = "TaskIdReused"
STORE_REFUSED = "StoreRefused"
UNKNOWN_AGENT = "UnknownAgent"
TRANSCRIPT_LOST = "TranscriptLost"

# -- retryable ------------------------------------------------------------------------
BAD_LLM_REPLY = "BadLLMReply"
LLM_RATE_LIMITED = "LLMRateLimited"  # 429; retried after the server's Retry-After
LLM_SERVER_ERROR = "LLMServerError"  # 5xx; retried with backoff (or Retry-After)
TOOL_UNAVAILABLE = "ToolUnavailable"
NO_CODE = "NoCode"

# -- raised by workflows --------------------------------------------------------------
SUBTASK_FAILED = "SubtaskFailed"
SKIPPED = "Skipped"
TASK_FAILED = "TaskFailed"
INVALID_TASK_ID = "InvalidTaskId"
SPLIT_FAILED = "SplitFailed"
UNKNOWN_STEP_TYPE = "UnknownStepType"
TURN_CAP_REACHED = "TurnCapReached"

#: Types no retry can fix; retry policies list them as non-retryable.
PERMANENT: tuple[str, ...] = (
    INVALID_PLAN, LLM_REQUEST_REJECTED, LLM_NOT_CONFIGURED, SANDBOX_UNAVAILABLE,
    UNKNOWN_TOOL, BAD_TOOL_ARGUMENTS, TOOL_FAILED, BUDGET_EXCEEDED, CONTEXT_OVERFLOW,
    PRICE_TABLE_ERROR, INVALID_TRANSITION, NOT_FOUND, TASK_ID_REUSED, UNKNOWN_AGENT,
    TRANSCRIPT_LOST, STORE_REFUSED,
)

