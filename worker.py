"""Run a BeesTown worker: `python worker.py` (settings from the environment, see README)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
from datetime import timedelta
from typing import Any

from temporalio.client import Client
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.worker import UnsandboxedWorkflowRunner, Worker

from activities.roles import activities_by_queue, routing
from models.org import InvalidOrg
from models.tools import InvalidToolsConfig
from runtime.deps import Deps, open_deps
from runtime.llm.prices import PriceTableError
from runtime.settings import Settings
from workflows.subtask import SubtaskWorkflow
from workflows.task import TaskWorkflow

__all__ = ["Deps", "build_workers", "connect", "open_deps", "routing", "serve"]

log = logging.getLogger("beestown.worker")


async def connect(settings: Settings) -> Client:
    """Return a Temporal client on the configured server, speaking pydantic."""
    return await Client.connect(
        settings.temporal_address,
        namespace=settings.temporal_namespace,
        data_converter=pydantic_data_converter,
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
    roles = settings.roles
    by_queue = activities_by_queue(settings, deps, client=client)
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
                max_concurrent_activities=200,
                max_concurrent_workflow_tasks=200,
                max_concurrent_local_activities=200,
                # A killed worker's sticky queue is given up on after 2 s instead of 5 s,
                # so another worker resumes its workflows sooner (measured in the notes).
                sticky_queue_schedule_to_start_timeout=timedelta(seconds=2),
                graceful_shutdown_timeout=timedelta(seconds=5),
                **_runner(settings),
            )
        )
    return workers


async def serve(settings: Settings, *, stop: asyncio.Event | None = None) -> None:
    """Run this process's workers until `stop` is set (or SIGINT/SIGTERM)."""
    stop = stop or asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError, RuntimeError):
            loop.add_signal_handler(sig, stop.set)
    client = await connect(settings)
    async with open_deps(settings) as deps:
        workers = build_workers(client, settings, deps)
        async with contextlib.AsyncExitStack() as stack:
            for w in workers:
                await stack.enter_async_context(w)
            log.info(
                "worker ready on %s (queues: %s; roles: %s)", settings.temporal_address,
                ", ".join(w.task_queue for w in workers), settings.worker_roles,
            )
            await stop.wait()


def main() -> None:
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    try:
        settings = Settings()
    except Exception as e:  # pydantic names the variable that is wrong
        raise SystemExit(f"worker: bad configuration: {e}") from e
    try:
        asyncio.run(serve(settings))
    except (InvalidToolsConfig, PriceTableError, InvalidOrg) as e:
        raise SystemExit(f"worker: bad configuration: {e}") from e


if __name__ == "__main__":
    main()
