"""Heartbeats for every activity given a heartbeat timeout, whatever its code does.

An LLM turn or a tool call spends its time awaiting another server; it has nothing to
report, but a worker that dies under it must be noticed in seconds, not after its
start-to-close timeout (5-10 minutes). Call sites that set `heartbeat_timeout` get a
background heartbeat from this interceptor every quarter of it; the SDK sends at most one
to the server per 80 % of the timeout, so the server load is ~1.25 / timeout heartbeats a
second per running activity. Activities that heartbeat themselves (code steps, with
their output lines) are unaffected: the SDK keeps only the latest details.
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any

from temporalio import activity
from temporalio.worker import (
    ActivityInboundInterceptor,
    ExecuteActivityInput,
    Interceptor,
)


class _Beating(ActivityInboundInterceptor):
    async def execute_activity(self, input: ExecuteActivityInput) -> Any:
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
    """Worker interceptor: heartbeat each activity that has a heartbeat timeout."""

    def intercept_activity(self, next: ActivityInboundInterceptor
                           ) -> ActivityInboundInterceptor:
        return _Beating(next)
