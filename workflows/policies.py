"""Timeouts and retry policies, named once and applied at each call site."""

from __future__ import annotations

from datetime import timedelta

from temporalio import workflow
from temporalio.common import RetryPolicy

with workflow.unsafe.imports_passed_through():
    from activities import errors

# Errors that no retry can fix: the activity already said so, this only documents it.
PERMANENT = list(errors.PERMANENT)

STORE_TIMEOUT = timedelta(seconds=30)
STORE_RETRY = RetryPolicy(
    initial_interval=timedelta(milliseconds=200),
    backoff_coefficient=2.0,
    maximum_interval=timedelta(seconds=10),
    maximum_attempts=30,
)

SPLIT_TIMEOUT = timedelta(minutes=5)
LLM_RETRY = RetryPolicy(
    initial_interval=timedelta(seconds=1),
    backoff_coefficient=2.0,
    maximum_interval=timedelta(seconds=30),
    # A storm of 429/5xx, or a worker lost mid-call, uses attempts too.
    maximum_attempts=8,
    non_retryable_error_types=PERMANENT,
)
LLM_STEP_TIMEOUT = timedelta(minutes=5)
# A model call only waits on the server; the worker heartbeats for it (hosting/interceptors.py)
# so a worker that dies mid-call is noticed after this instead of LLM_STEP_TIMEOUT. The
# SDK sends one heartbeat per 8 s: 0.125 a second per running call reach the server.
LLM_HEARTBEAT = timedelta(seconds=10)

TOOL_TIMEOUT = timedelta(minutes=10)
# Tool calls on a tool queue of their own (not local activities): as LLM_HEARTBEAT.
TOOL_HEARTBEAT = timedelta(seconds=10)
TOOL_RETRY = RetryPolicy(
    initial_interval=timedelta(milliseconds=500),
    backoff_coefficient=2.0,
    maximum_interval=timedelta(seconds=20),
    maximum_attempts=3,
    non_retryable_error_types=PERMANENT,
)

CODE_TIMEOUT = timedelta(minutes=15)
# A code step heartbeats every 0.5 s; the SDK sends at most one heartbeat per 80 % of this
# timeout (0.42 heartbeats/s per running code step reach the server). A worker that stops
# heartbeating (killed) is given up on after this, and the step is retried elsewhere.
# A worker restarted on the same host does not wait for it: it fails the dead process's
# attempts at start (hosting/lifecycle.py). Measured in bench/chaos.py.
CODE_HEARTBEAT = timedelta(seconds=3)
CODE_RETRY = RetryPolicy(
    # A lost worker's attempt is retried at once; a sandbox hiccup backs off from here.
    initial_interval=timedelta(milliseconds=200),
    backoff_coefficient=2.0,
    maximum_interval=timedelta(seconds=30),
    # A worker lost mid-step uses an attempt (user code errors do not: they are results).
    maximum_attempts=5,
    non_retryable_error_types=PERMANENT,
)


# A child's workflow task is given up on after this when its worker dies (with a local
# activity in flight the task stays open, heartbeated by the SDK at 80 % of this). Lower
# than the 10 s default so another worker resumes sooner; measured in tests/test_crash.py.
CHILD_TASK_TIMEOUT = timedelta(seconds=3)

# A code step the model writes gets this many more tries, each told the last error.
CODE_FIX_ATTEMPTS = 2

# An escalation holder's model may answer `retry` to a step's trouble this many times per
# level of the chain; one more and the trouble climbs (a model that always says retry
# looped about four times a second for ever). People's decisions are not capped.
MODEL_RETRIES_PER_LEVEL = 2

# A queued subtask is woken by the slot it waits for; it also asks again this often.
QUEUE_RECHECK = timedelta(seconds=30)
