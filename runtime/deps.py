"""What the activities of one worker process share, opened from the settings and closed after."""

from __future__ import annotations

import contextlib
import logging
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass

import asyncpg

from models.usage import Price
from runtime.db import connect_pool, resolve_dsn
from runtime.documents import load_org
from runtime.llm.client import LLM
from runtime.llm.prices import load_prices
from runtime.org_store import OrgStore
from runtime.sandbox import SandboxError, SandboxFactory
from runtime.settings import Settings
from runtime.store import Store
from runtime.tools.files import Workspace, register_file_tools
from runtime.tools.registry import ToolRegistry, builtin_tools
from runtime.tools.toolbox import Toolbox, open_toolbox

log = logging.getLogger(__name__)


@dataclass
class Deps:
    """What the activities of one worker process share."""

    pool: asyncpg.Pool
    store: Store
    registry: Toolbox
    llm: LLM | None
    sandbox: SandboxFactory | None
    sandbox_problem: str | None = None
    prices: dict[str, Price] | None = None


def llm_from(settings: Settings) -> LLM | None:
    """Return the model client the settings configure, None when they configure none."""
    if not settings.llm_configured:
        return None
    key = settings.openai_api_key
    return LLM(base_url=settings.openai_base_url,
               api_key=key.get_secret_value() if key else None,
               model=settings.model, timeout_s=settings.llm_timeout_s)


def workspace_from(settings: Settings) -> Workspace | None:
    """Return the workspace related files are read from; None when none is configured.

    Raises InvalidWorkspace when BEESTOWN_WORKSPACE is not a directory."""
    if settings.workspace_root is None:
        return None
    return Workspace(settings.workspace_root, limit=settings.workspace_file_limit)


async def sandbox_from(settings: Settings) -> tuple[SandboxFactory | None, str | None]:
    """Return the sandbox factory once its self-test passed, else None and why not."""
    factory = SandboxFactory.from_settings(settings)
    try:
        await factory.self_test()
    except SandboxError as e:
        log.error("sandbox self-test failed; this worker refuses code steps: %s", e)
        return None, str(e)
    return factory, None


@contextlib.asynccontextmanager
async def open_deps(
    settings: Settings, *, registry: ToolRegistry | None = None,
    wrap_pool: Callable[[asyncpg.Pool], asyncpg.Pool] | None = None,
) -> AsyncIterator[Deps]:
    """Open the pool (migrating the schema), the LLM client, the sandbox, the price table,
    the org chart and the tools; close what was opened after, or when one of them fails.

    `wrap_pool` wraps the pool every store uses (the worker's rides out outages)."""
    async with contextlib.AsyncExitStack() as stack:
        dsn = await resolve_dsn(
            settings.database_url.get_secret_value() if settings.database_url else None,
            settings.state_dir,
        )
        pool = await connect_pool(dsn)
        if wrap_pool is not None:
            pool = wrap_pool(pool)
        stack.push_async_callback(pool.close)
        sandbox, problem = (await sandbox_from(settings) if "sandbox" in settings.roles
                            else (None, None))
        prices = load_prices(settings.price_table_file) if settings.price_table_file else None
        if settings.org_file is not None:
            change = await OrgStore(pool).save_org(load_org(settings.org_file))
            log.info("org chart %s loaded: %s", settings.org_file, change)
        # Function tools plus the MCP servers of BEESTOWN_TOOLS_FILE (a bad file raises
        # InvalidToolsConfig; a server down now is logged and retried at its first call).
        functions = registry or builtin_tools()
        workspace = workspace_from(settings)
        if workspace is not None:
            register_file_tools(functions, workspace)
        toolbox = await open_toolbox(functions, settings.tools_file)
        stack.push_async_callback(toolbox.aclose)
        yield Deps(pool=pool, store=Store(pool), registry=toolbox, llm=llm_from(settings),
                   sandbox=sandbox, sandbox_problem=problem, prices=prices)
