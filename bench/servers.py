"""The real servers a benchmark measures against: a fresh tuned Temporal dev server and a
scratch PostgreSQL database, both gone when the benchmark ends; and a stopwatch."""

from __future__ import annotations

import contextlib
import tempfile
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.testing import WorkflowEnvironment

from testkit.servers import DEV_SERVER_ARGS, admin_dsn, scratch_database, temporal_cli


@dataclass
class Scratch:
    env: WorkflowEnvironment
    database_url: str
    tmp: Path

    @property
    def temporal_address(self) -> str:
        return self.env.client.service_client.config.target_host


@contextlib.asynccontextmanager
async def scratch_servers(prefix: str) -> AsyncIterator[Scratch]:
    """Start the dev server (tuned as in the tests) and create a database; drop both after."""
    tmp = Path(tempfile.mkdtemp(prefix=f"{prefix}-"))
    async with scratch_database(await admin_dsn(tmp), "beestown_bench") as dsn:
        env = await WorkflowEnvironment.start_local(
            dev_server_existing_path=temporal_cli(), dev_server_extra_args=DEV_SERVER_ARGS,
            data_converter=pydantic_data_converter,
        )
        try:
            yield Scratch(env=env, database_url=dsn, tmp=tmp)
        finally:
            await env.shutdown()


async def timed_ms(fn: Callable[[], Awaitable[Any]], runs: int) -> list[float]:
    """Milliseconds each of `runs` awaits of `fn()` took."""
    out = []
    for _ in range(runs):
        started = time.perf_counter()
        await fn()
        out.append((time.perf_counter() - started) * 1000)
    return out
