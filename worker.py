"""Run a BeesTown worker: `python worker.py` (settings from the environment, see README)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import asyncpg
from temporalio.client import Client
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.worker import UnsandboxedWorkflowRunner, Worker

from activities.agent import AgentActivities
from activities.code import CodeActivities
from activities.db import create_pool, resolve_dsn
from activities.llm import LLM, LLMActivities
from activities.mcp import open_toolbox
from activities.org import OrgActivities, OrgStore
from activities.sandbox import SandboxError, SandboxFactory
from activities.steps import StepBook, SubtaskActivities
from activities.store import Store
from activities.tasks import TaskActivities
from activities.tokens import load_prices
from activities.tools import ToolActivities, Toolbox, ToolRegistry, builtin_tools
from models.io import Budgets, OrgPolicy, Routing
from models.org import InvalidOrg, load_org
from models.settings import Settings
from models.tools import InvalidToolsConfig
from models.usage import Price, PriceTableError
from runtime.capacity import sandbox_slots
from runtime.interceptors import AutoHeartbeat
from runtime.outage import riding
from workflows.subtask import SubtaskWorkflow
from workflows.task import TaskWorkflow

log = logging.getLogger("beestown.worker")


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


async def connect(settings: Settings, *, identity: str | None = None) -> Client:
    """Return a Temporal client on the configured server, speaking pydantic."""
    return await Client.connect(
        settings.temporal_address,
        namespace=settings.temporal_namespace,
        data_converter=pydantic_data_converter,
        identity=identity,
    )


@contextlib.asynccontextmanager
async def open_deps(
    settings: Settings, *, registry: ToolRegistry | None = None
) -> AsyncIterator[Deps]:
    """Open the pool (migrating the schema), the LLM client and the sandbox; close them after."""
    dsn = await resolve_dsn(
        settings.database_url.get_secret_value() if settings.database_url else None,
        settings.state_dir,
    )
    # Statements and acquires wait out a database outage (runtime/outage.py).
    pool = riding(await create_pool(dsn))
    llm = None
    if settings.llm_configured:
        llm = LLM(
            base_url=settings.openai_base_url,
            api_key=settings.openai_api_key.get_secret_value() if settings.openai_api_key else None,
            model=settings.model,
            timeout_s=settings.llm_timeout_s,
        )
    sandbox: SandboxFactory | None = None
    problem: str | None = None
    if "sandbox" in settings.roles:
        factory = SandboxFactory(
            backend=settings.sandbox_backend,
            e2b_api_key=settings.e2b_api_key.get_secret_value() if settings.e2b_api_key else None,
        )
        try:
            await factory.self_test()
            sandbox = factory
        except SandboxError as e:
            problem = str(e)
            log.error("sandbox self-test failed; this worker refuses code steps: %s", problem)
    prices = load_prices(settings.price_table_file) if settings.price_table_file else None
    if settings.org_file is not None:
        change = await OrgStore(pool).save_org(load_org(settings.org_file))
        log.info("org chart %s loaded: %s", settings.org_file, change)
    try:
        # Function tools plus the MCP servers of BEESTOWN_TOOLS_FILE (a bad file raises
        # InvalidToolsConfig; a server down now is logged and retried at its first call).
        toolbox = await open_toolbox(registry or builtin_tools(), settings.tools_file)
    except BaseException:
        await pool.close()
        raise
    try:
        yield Deps(pool=pool, store=Store(pool), registry=toolbox,
                   llm=llm, sandbox=sandbox, sandbox_problem=problem, prices=prices)
    finally:
        await toolbox.aclose()
        await pool.close()


def routing(settings: Settings) -> Routing:
    tool_queue = settings.queue_for("tools")
    return Routing(
        llm_queue=settings.queue_for("llm"),
        sandbox_queue=settings.queue_for("sandbox"),
        tool_queue=tool_queue,
        # Tool steps run as local activities (no hop through the server) when the
        # workflow worker serves tools itself.
        local_tools=tool_queue == settings.task_queue and {"tools", "workflows"} <= settings.roles,
    )


def _runner(settings: Settings) -> dict[str, Any]:
    if settings.workflow_sandbox:
        return {}
    # Measured in bench/dag.py: without the sandbox a child workflow costs far less CPU
    # (fan-out 50: 2.9x the critical path instead of 4.1x). Determinism is still checked:
    # the test suite runs every workflow sandboxed.
    return {"workflow_runner": UnsandboxedWorkflowRunner()}


def build_workers(client: Client, settings: Settings, deps: Deps) -> list[Worker]:
    """Return one Worker per task queue this process serves."""
    book = StepBook(deps.store)
    org_store = OrgStore(deps.pool)
    # Bookkeeping runs on the workflow queue, the manager's model decisions on the LLM queue.
    org = OrgActivities(org_store, deps.store, llm=deps.llm, client=client)
    by_queue: dict[str, list[Callable[..., Any]]] = {}
    roles = settings.roles
    if "workflows" in roles:
        tasks = TaskActivities(
            deps.store, routing=routing(settings), max_steps=settings.max_plan_steps,
            tool_names=deps.registry.names(), max_turns=settings.max_turns,
            budgets=Budgets(task_tokens=settings.task_token_budget,
                            subtask_tokens=settings.subtask_token_budget),
            org=org_store if settings.uses_org else None,
            org_defaults=OrgPolicy(review_rounds=settings.review_rounds,
                                   escalation_timeout_s=settings.escalation_timeout_s,
                                   max_depth=settings.max_depth),
        )
        subtasks = SubtaskActivities(deps.store)
        by_queue.setdefault(settings.task_queue, []).extend(
            [tasks.begin_task, tasks.save_plan, tasks.finish_task,
             subtasks.fail_subtask, subtasks.record_result,
             org.assign_subtask, org.release_slot, org.note_subtask, org.record_escalation,
             org.close_escalation]
        )
    if "llm" in roles:
        llm = LLMActivities(llm=deps.llm, store=deps.store, tool_names=deps.registry.names(),
                            prices=deps.prices)
        agent = AgentActivities(llm=deps.llm, store=deps.store, book=book,
                                toolbox=deps.registry, prices=deps.prices,
                                context_override=settings.context_limit)
        by_queue.setdefault(settings.queue_for("llm"), []).extend(
            [llm.split_task, agent.agent_turn, agent.write_code,
             org.review_with_llm, org.decide_escalation_with_llm]
        )
    if "sandbox" in roles:
        code = CodeActivities(deps.sandbox, book, unavailable=deps.sandbox_problem)
        by_queue.setdefault(settings.queue_for("sandbox"), []).append(code.run_code_step)
    if "tools" in roles:
        tools = ToolActivities(deps.registry, book)
        by_queue.setdefault(settings.queue_for("tools"), []).extend(
            [tools.run_tool_step, tools.call_tool, tools.list_tools]
        )
    if "workflows" in roles:
        by_queue.setdefault(settings.task_queue, [])
    # Code steps: no more sandboxes at once than the host holds; the rest wait in Temporal.
    sandbox_queue = settings.queue_for("sandbox")
    slots = sandbox_slots(settings.max_sandboxes, memory_mb=(
        deps.sandbox.limits.memory_mb if deps.sandbox is not None else 1024))
    if sandbox_queue == settings.task_queue and "sandbox" in roles:
        log.warning("code steps share the task queue %s: BEESTOWN_MAX_SANDBOXES cannot "
                    "be applied", sandbox_queue)
    workers = []
    for queue, activities in by_queue.items():
        workflows = [TaskWorkflow, SubtaskWorkflow] if (
            "workflows" in roles and queue == settings.task_queue) else []
        workers.append(
            Worker(
                client,
                task_queue=queue,
                workflows=workflows,
                activities=activities,
                max_concurrent_activities=(
                    slots if queue == sandbox_queue != settings.task_queue else 200),
                max_concurrent_workflow_tasks=200,
                max_concurrent_local_activities=200,
                # A killed worker's sticky queue is given up on after 2 s instead of 5 s,
                # so another worker resumes its workflows sooner (measured in the notes).
                sticky_queue_schedule_to_start_timeout=timedelta(seconds=2),
                # Heartbeats while activities wait; a shutdown's attempts retried at once.
                interceptors=[AutoHeartbeat()],
                # No grace: on SIGTERM in-flight activities are cancelled at once and
                # retried elsewhere (runtime/lifecycle.py); steps are idempotent.
                graceful_shutdown_timeout=timedelta(0),
                **_runner(settings),
            )
        )
    return workers


async def serve(settings: Settings, *, stop: asyncio.Event | None = None) -> None:
    """Run this process's workers until `stop` is set (or SIGINT/SIGTERM)."""
    from runtime.lifecycle import serve_workers

    await serve_workers(settings, stop=stop)


def main() -> None:
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    try:
        settings = Settings()
    except Exception as e:  # pydantic names the variable that is wrong
        raise SystemExit(f"worker: bad configuration: {e}") from e

    def run() -> None:
        try:
            asyncio.run(serve(settings))
        except (InvalidToolsConfig, PriceTableError, InvalidOrg) as e:
            raise SystemExit(f"worker: bad configuration: {e}") from e

    if not settings.supervise:
        run()
        return
    # A supervising parent forks the worker, and forks a new one at once if it is killed.
    from runtime.lifecycle import supervise

    raise SystemExit(supervise(run))


if __name__ == "__main__":
    main()
