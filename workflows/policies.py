"""Timeouts and retry policies, named once and applied at each call site."""

from __future__ import annotations

from datetime import timedelta

from temporalio import workflow
from temporalio.common import RetryPolicy

with workflow.unsafe.imports_passed_through():
    from activities import errors

# Errors that no retry can fix: the activity already said so, this only documents it.
PERMANENT = list(errors.PERMANENT)



def _retry(first: timedelta, longest: timedelta, attempts: int, *,
           permanent: list[str] | None = None) -> RetryPolicy:
    """Retry after `first`, doubling up to `longest`, `attempts` tries in all; never retry
    the `permanent` error types."""
    return RetryPolicy(initial_interval=first, backoff_coefficient=2.0,
                       maximum_interval=longest, maximum_attempts=attempts,
                       non_retryable_error_types=permanent)


STORE_TIMEOUT = timedelta(seconds=30)
STORE_RETRY = _retry(timedelta(milliseconds=200), timedelta(seconds=10), 30)

SPLIT_TIMEOUT = timedelta(minutes=5)
# A storm of 429/5xx, or a worker lost mid-call, uses attempts too (a 429's Retry-After
# replaces the backoff for its retry).
LLM_RETRY = _retry(timedelta(seconds=1), timedelta(seconds=30), 8, permanent=PERMANENT)
LLM_STEP_TIMEOUT = timedelta(minutes=5)
# A model call only waits on the server; the worker heartbeats for it (hosting/interceptors.py)
# so a worker that dies mid-call is noticed after this instead of LLM_STEP_TIMEOUT. The
# SDK sends one heartbeat per 8 s: 0.125 a second per running call reach the server.
LLM_HEARTBEAT = timedelta(seconds=10)

TOOL_TIMEOUT = timedelta(minutes=10)
# Tool calls on a tool queue of their own (not local activities): as LLM_HEARTBEAT.
TOOL_HEARTBEAT = timedelta(seconds=10)
TOOL_RETRY = _retry(timedelta(milliseconds=500), timedelta(seconds=20), 3,
                    permanent=PERMANENT)

CODE_TIMEOUT = timedelta(minutes=15)
# A code step heartbeats every 0.5 s; the SDK sends at most one heartbeat per 80 % of this
# timeout (0.42 heartbeats/s per running code step reach the server). A worker that stops
# heartbeating (killed) is given up on after this, and the step is retried elsewhere.
# A worker restarted on the same host does not wait for it: it fails the dead process's
# attempts at start (hosting/lifecycle.py). Measured in bench/chaos.py.
CODE_HEARTBEAT = timedelta(seconds=3)
# A lost worker's attempt is retried at once, a sandbox hiccup backs off from 0.2 s; a
# worker lost mid-step uses an attempt (user code errors do not: they are results).
CODE_RETRY = _retry(timedelta(milliseconds=200), timedelta(seconds=30), 5,
                    permanent=PERMANENT)


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
