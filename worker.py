"""Run a BeesTown worker: `python worker.py` (settings from the environment, see README)."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import signal
import sys
from collections.abc import AsyncIterator, Callable
from datetime import timedelta
from typing import Any

from temporalio.client import Client
from temporalio.runtime import PrometheusConfig, Runtime, TelemetryConfig
from temporalio.worker import UnsandboxedWorkflowRunner, Worker

from activities import metrics
from activities.roles import activities_by_queue, routing
from client import TemporalUnreachable, connect, ensure_search_attributes, exit_now
from hosting.interceptors import AutoHeartbeat, hand_back_now
from hosting.lifecycle import (
    build_id,
    run_until_stopped,
    supervise,
    watch_dead_peers,
    worker_identity,
)
from hosting.outage import riding
from hosting.warmup import load_now, warm_up
from models.org import InvalidOrg
from models.tools import InvalidToolsConfig
from runtime.capacity import sandbox_slots
from runtime.db import DatabaseUnreachable
from runtime.deps import Deps
from runtime.deps import open_deps as open_runtime_deps
from runtime.llm.prices import PriceTableError
from runtime.org_store import OrgStore
from runtime.settings import Settings
from runtime.tools.registry import ToolRegistry
from workflows.subtask import SubtaskWorkflow
from workflows.task import TaskWorkflow

__all__ = ["Deps", "MetricsUnavailable", "build_workers", "connect", "metrics_runtime",
           "open_deps", "routing", "serve"]

log = logging.getLogger("beestown.worker")


@contextlib.asynccontextmanager
async def open_deps(settings: Settings, *, registry: ToolRegistry | None = None
                    ) -> AsyncIterator[Deps]:
    """Open what a worker's activities share (`runtime.deps.open_deps`), with a pool whose
    calls wait out a PostgreSQL outage while heartbeating (`hosting.outage`)."""
    async with open_runtime_deps(settings, registry=registry, wrap_pool=riding) as deps:
        yield deps


def _runner(settings: Settings) -> dict[str, Any]:
    if settings.workflow_sandbox:
        return {}
    # Measured in bench/dag.py: without the sandbox a child workflow costs far less CPU
    # (fan-out 50: 2.9x the critical path instead of 4.1x). Determinism is still checked:
    # the test suite runs every workflow sandboxed.
    return {"workflow_runner": UnsandboxedWorkflowRunner()}


class MetricsUnavailable(Exception):
    """The metrics endpoint could not be served (its port taken, say); `str()` says why."""


def metrics_runtime(settings: Settings) -> Runtime | None:
    """Return a Temporal runtime serving Prometheus /metrics on `BEESTOWN_METRICS_HOST`:
    `BEESTOWN_METRICS_PORT`, or None when that is 0 (off).

    The SDK's own metrics (workflow and activity tasks, pollers, sticky cache, requests)
    and BeesTown's (activities/metrics.py, through each activity's meter) are served there.

    Raises:
        MetricsUnavailable: the address cannot be bound.
    """
    if not settings.metrics_port:
        return None
    host = settings.metrics_host
    address = f"[{host}]:{settings.metrics_port}" if ":" in host else (
        f"{host}:{settings.metrics_port}")
    try:
        return Runtime(telemetry=TelemetryConfig(metrics=PrometheusConfig(
            bind_address=address, histogram_bucket_overrides=metrics.BUCKETS)))
    except (RuntimeError, ValueError) as e:
        raise MetricsUnavailable(f"cannot serve metrics on {address}: {e}") from e


def build_workers(client: Client, settings: Settings, deps: Deps, *,
                  search_attributes: bool = False) -> list[Worker]:
    """Return one Worker per task queue this process serves (`search_attributes`: the
    namespace has BeesTown's, so the workflows upsert them)."""
    roles = settings.roles
    by_queue = activities_by_queue(settings, deps, client=client,
                                   search_attributes=search_attributes)
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
                # Ours is cheap to compute; the SDK's default costs ~0.2-0.4 s per start.
                build_id=build_id(),
                # On SIGTERM running activities get this long to finish; what is still
                # running then is handed back for retry at once (hosting/lifecycle.py).
                graceful_shutdown_timeout=timedelta(seconds=settings.shutdown_grace_s),
                **_runner(settings),
            )
        )
    return workers


async def serve(settings: Settings, *, stop: asyncio.Event | None = None,
                registry: ToolRegistry | None = None,
                adjust: Callable[[Deps], None] | None = None) -> None:
    """Run this process's workers until `stop` is set (or SIGINT/SIGTERM), then give their
    running work `BEESTOWN_SHUTDOWN_GRACE` to finish and hand the rest back at once.

    `registry` replaces the built-in function tools; `adjust(deps)` may wrap the opened
    dependencies before the workers are built (the chaos bench journals the work with it).
    """
    stop = stop or asyncio.Event()
    loop = asyncio.get_running_loop()

    def on_signal() -> None:  # the first stops (with a grace), a second ends the grace
        if stop.is_set():
            log.warning("stop asked again: %d running attempts handed back now",
                        hand_back_now())
        stop.set()

    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError, RuntimeError):
            loop.add_signal_handler(sig, on_signal)
    client = await connect(settings, runtime=metrics_runtime(settings),
                           identity=worker_identity())
    searchable = ("workflows" in settings.roles
                  and await ensure_search_attributes(client, settings))
    # Beside the start: a dead worker's work is handed back while we get ready to serve it.
    queues = sorted({settings.task_queue, *(settings.queue_for(k)
                                            for k in ("llm", "sandbox", "tools"))})
    sweep = asyncio.create_task(
        watch_dead_peers(client, settings.task_queue, queues, settings.state_dir)
        if settings.take_back else asyncio.sleep(0))
    try:
        async with open_deps(settings, registry=registry) as deps:
            if adjust is not None:
                adjust(deps)
            await _say_how_the_org_applies(settings, OrgStore(deps.pool))
            workers = build_workers(client, settings, deps, search_attributes=searchable)
            log.info(
                "worker ready on %s (queues: %s; roles: %s)", settings.temporal_address,
                ", ".join(w.task_queue for w in workers), settings.worker_roles,
            )
            warm_up(settings)  # the SDKs left out of `import worker`, now it serves
            if settings.metrics_port:
                log.info("metrics on http://%s:%d/metrics", settings.metrics_host,
                         settings.metrics_port)
            await run_until_stopped(workers, stop)
    finally:
        sweep.cancel()
        log.info("worker stopped")


async def _say_how_the_org_applies(settings: Settings, org: OrgStore) -> None:
    """Log whether tasks will use an org chart, so nobody wonders why delegation is off."""
    if "workflows" not in settings.roles:
        return
    agents = await org.active_agents()
    if not settings.uses_org:
        if agents:
            log.warning("an org chart is stored (%d agents) but BEESTOWN_ORG=0: tasks run "
                        "without it; unset BEESTOWN_ORG to use it", agents)
    elif agents:
        log.info("tasks use the org chart stored in PostgreSQL (%d agents); a chart loaded "
                 "with `beestown org load` applies to tasks started after it", agents)
    else:
        log.info("no org chart stored: tasks run without an organization until "
                 "`beestown org load FILE` (no restart needed)")


def main() -> None:
    argparse.ArgumentParser(
        prog="worker.py", description=__doc__,
        epilog="Configuration comes from the environment (TEMPORAL_ADDRESS, DATABASE_URL, "
               "BEESTOWN_TASK_QUEUE, BEESTOWN_WORKER_ROLES, OPENAI_BASE_URL, ...): see the "
               "README's configuration table.").parse_args()
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    try:
        settings = Settings()
    except Exception as e:  # pydantic names the variable that is wrong
        raise SystemExit(f"worker: bad configuration: {e}") from e
    # Exit 2, as the CLI does, for what a person must fix before a restart can help; through
    # exit_now, as the Temporal client's threads may be running.
    def run() -> None:
        try:
            asyncio.run(serve(settings))
        except (InvalidToolsConfig, PriceTableError, InvalidOrg) as e:
            sys.stderr.write(f"worker: bad configuration: {e}\n")
            exit_now(2)
        except (TemporalUnreachable, DatabaseUnreachable, MetricsUnavailable) as e:
            sys.stderr.write(f"worker: {e}\n")
            exit_now(2)

    if not settings.supervise:
        run()
        exit_now(0)  # not through finalization: the core SDK's threads (and a warm-up
        # thread still importing) may be running
    # A supervising parent forks the worker, and forks a new one at once if it is killed.
    exit_now(supervise(run, preload=lambda: load_now(settings)))


if __name__ == "__main__":
    main()
