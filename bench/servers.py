"""The real servers a benchmark measures against: a fresh tuned Temporal dev server and a
scratch PostgreSQL database, both gone when the benchmark ends."""

from __future__ import annotations

import contextlib
import tempfile
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import asyncpg
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.testing import WorkflowEnvironment

from testkit.servers import DEV_SERVER_ARGS, admin_dsn, temporal_cli, with_database


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
    admin = await admin_dsn(tmp)
    dbname = f"beestown_bench_{uuid.uuid4().hex[:8]}"
    conn = await asyncpg.connect(admin)
    await conn.execute(f'CREATE DATABASE "{dbname}"')
    await conn.close()
    env = await WorkflowEnvironment.start_local(
        dev_server_existing_path=temporal_cli(), dev_server_extra_args=DEV_SERVER_ARGS,
        data_converter=pydantic_data_converter,
    )
    try:
        yield Scratch(env=env, database_url=with_database(admin, dbname), tmp=tmp)
    finally:
        await env.shutdown()
        conn = await asyncpg.connect(admin)
        await conn.execute(f'DROP DATABASE IF EXISTS "{dbname}" WITH (FORCE)')
        await conn.close()
