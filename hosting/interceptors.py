"""What every activity of a worker gets, whatever its code does.

**Heartbeats** for every activity given a heartbeat timeout.

An LLM turn or a tool call spends its time awaiting another server; it has nothing to
report, but a worker that dies under it must be noticed in seconds, not after its
start-to-close timeout (5-10 minutes). Call sites that set `heartbeat_timeout` get a
background heartbeat from this interceptor every quarter of it; the SDK sends at most one
to the server per 80 % of the timeout, so the server load is ~1.25 / timeout heartbeats a
second per running activity. Activities that heartbeat themselves (code steps, with
their output lines) are unaffected: the SDK keeps only the latest details.

**An immediate retry when the worker shuts down.** An attempt a shutdown cancels (still
running when its grace ran out: SIGTERM, hosting/lifecycle.py) fails with
`WorkerShutdown` and a retry delay of 10 ms, so another worker takes it at once instead
of after the kind's initial retry interval (0.2-1 s).
"""

from __future__ import annotations

import asyncio
import contextlib
from datetime import timedelta
from typing import Any

from temporalio import activity
from temporalio.exceptions import ApplicationError
from temporalio.worker import (
    ActivityInboundInterceptor,
    ExecuteActivityInput,
    Interceptor,
)

HAND_BACK_DELAY = timedelta(milliseconds=10)


# This process's running attempts (not local activities), for `hand_back_now`.
_running: set[asyncio.Task[Any]] = set()


def hand_back_now() -> int:
    """End a stopping worker's grace early: cancel every running attempt of this process,
    so each fails as `WorkerShutdown` and is retried at once elsewhere (a second SIGTERM or
    Ctrl-C, worker.py). Returns how many were running."""
    tasks = [t for t in _running if not t.done()]
    for task in tasks:
        task.cancel()
    return len(tasks)


def _by_shutdown() -> bool:
    """Whether the worker's shutdown (its grace over) cancelled this attempt, rather than
    a cancellation asked for meanwhile (the task cancelled, a deadline, a timeout), which
    must stay a cancellation."""
    if not activity.is_worker_shutdown():
        return False
    d = activity.cancellation_details()
    return d is None or d.worker_shutdown or not (
        d.cancel_requested or d.timed_out or d.not_found or d.paused or d.reset)


class _Beating(ActivityInboundInterceptor):
    async def execute_activity(self, input: ExecuteActivityInput) -> Any:
        task = None if activity.info().is_local else asyncio.current_task()
        if task is not None:
            _running.add(task)
        try:
            return await self._beating(input)
        except asyncio.CancelledError:
            if _by_shutdown() and task is not None:
                raise ApplicationError(
                    "the worker shut down during this attempt; retried elsewhere",
                    type="WorkerShutdown", next_retry_delay=HAND_BACK_DELAY) from None
            raise
        finally:
            if task is not None:
                _running.discard(task)

    async def _beating(self, input: ExecuteActivityInput) -> Any:
        info = activity.info()
        timeout = info.heartbeat_timeout
        if info.is_local or not timeout:
            return await self.next.execute_activity(input)
        every = max(0.05, timeout.total_seconds() / 4)

        async def beat() -> None:
            while True:
                await asyncio.sleep(every)
                activity.heartbeat()

        beater = asyncio.create_task(beat())
        try:
            return await self.next.execute_activity(input)
        finally:
            beater.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await beater


class AutoHeartbeat(Interceptor):
    """Worker interceptor: heartbeat each activity that has a heartbeat timeout, and hand
    an attempt a shutdown cancels straight back for retry."""

    def intercept_activity(self, next: ActivityInboundInterceptor
                           ) -> ActivityInboundInterceptor:
        return _Beating(next)
