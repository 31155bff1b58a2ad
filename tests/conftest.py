"""Real servers for the suite: a Temporal dev server, PostgreSQL, a scripted LLM endpoint.

Each is started once per session; each test gets its own task queue.
"""

from __future__ import annotations

import contextlib
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio
from temporalio.client import Client
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.testing import WorkflowEnvironment

from runtime.documents import load_org
from runtime.org_store import OrgStore
from runtime.settings import Settings
from runtime.tools.registry import ToolRegistry, builtin_tools
from testkit import servers
from testkit.fake_llm import FakeLLM
from testkit.servers import admin_dsn, scratch_database
from worker import Deps, build_workers, open_deps

ROOT = Path(__file__).resolve().parent.parent


def temporal_cli() -> str:
    try:
        return servers.temporal_cli()
    except servers.TemporalCliMissing as e:
        pytest.exit(str(e), returncode=3)


@pytest_asyncio.fixture(scope="session")
async def temporal_env() -> AsyncIterator[WorkflowEnvironment]:
    env = await WorkflowEnvironment.start_local(
        dev_server_existing_path=temporal_cli(),
        dev_server_extra_args=servers.DEV_SERVER_ARGS,
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


@pytest_asyncio.fixture(scope="session")
async def database_url(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[str]:
    """A fresh database for this session on a real PostgreSQL, dropped afterwards."""
    async with scratch_database(await admin_dsn(tmp_path_factory.mktemp("pg"))) as dsn:
        yield dsn


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
async def running_workers(client: Client, settings: Settings, deps: Deps, *,
                          search_attributes: bool = False) -> AsyncIterator[Settings]:
    """Run this process's workers, with `settings` over `deps`, for the block; yield the
    settings. With `search_attributes` the workflows upsert BeesTown's (the session's dev
    server has them)."""
    async with contextlib.AsyncExitStack() as stack:
        for w in build_workers(client, settings, deps, search_attributes=search_attributes):
            await stack.enter_async_context(w)
        yield settings


@contextlib.asynccontextmanager
async def org_workers(client: Client, deps: Deps, database_url: str, llm: FakeLLM,
                      tmp: Path, *, human: bool = True, search_attributes: bool = False,
                      **over: Any) -> AsyncIterator[Settings]:
    """Store the example org (every manager a person, unless `human` is False) and run
    this process's workers with it on a task queue of their own; yield their settings."""
    org_file = human_org(tmp) if human else ROOT / "examples" / "org.yaml"
    await OrgStore(deps.pool).save_org(load_org(org_file))
    settings = make_settings(tmp, database_url, llm.base_url, temporal_address(client),
                             org_enabled=True, **over)
    async with running_workers(client, settings, deps, search_attributes=search_attributes):
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
