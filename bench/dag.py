"""Makespan / critical path of DAGs of 200 ms steps: BeesTown against bare Temporal.

    python bench/dag.py [--runs 3] [--step 0.2]

Everything runs in one process against one fresh, tuned Temporal dev server, the three
systems interleaved run by run so they see the same machine. Baselines:
  children   - a parent starts one bare child workflow per node when its deps complete;
               the child runs one activity that sleeps.
  activities - one workflow runs one activity per node when its deps complete.
Prints one line per shape: `<shape> beestown=X children=Y activities=Z` (min of runs),
then the medians.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import statistics
import sys
import time
import uuid
from pathlib import Path

from temporalio.client import Client
from temporalio.worker import Worker

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.bare import (
    BareActivities,
    BareChildren,
    BareInput,
    BareStep,
    Shape,
    bench_sleep,
)
from bench.servers import scratch_servers
from models.io import TaskInput
from models.plan import Plan
from runtime.settings import Settings
from worker import build_workers, open_deps


def chain(n: int) -> Shape:
    return {f"n{i}": [f"n{i-1}"] if i else [] for i in range(n)}


def layered(layers: int, width: int) -> Shape:
    shape: Shape = {}
    for layer in range(layers):
        for j in range(width):
            shape[f"l{layer}_{j}"] = [f"l{layer-1}_{k}" for k in range(width)] if layer else []
    return shape


def fan_out(n: int) -> Shape:
    return {f"f{i}": [] for i in range(n)}


def depth(shape: Shape) -> int:
    memo: dict[str, int] = {}

    def d(n: str) -> int:
        if n not in memo:
            memo[n] = 1 + max((d(p) for p in shape[n]), default=0)
        return memo[n]

    return max(d(n) for n in shape)


def plan_of(shape: Shape, seconds: float) -> Plan:
    return Plan.model_validate({"steps": [
        {"id": n, "type": "tool", "tool": "sleep", "deps": deps, "args": {"seconds": seconds}}
        for n, deps in shape.items()
    ]})


async def timed(client: Client, kind: str, shape: Shape, seconds: float, queue: str,
                bare_queue: str) -> float:
    wid = f"bench-{kind}-{uuid.uuid4().hex[:8]}"
    began = time.perf_counter()
    if kind == "beestown":
        await client.execute_workflow("TaskWorkflow", TaskInput(plan=plan_of(shape, seconds)),
                                      id=wid, task_queue=queue)
    else:
        wf = BareChildren.run if kind == "children" else BareActivities.run
        await client.execute_workflow(wf, BareInput(shape=shape, seconds=seconds), id=wid,
                                      task_queue=bare_queue)
    return time.perf_counter() - began


async def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--step", type=float, default=0.2, help="seconds per step")
    ap.add_argument("--shapes", default="chain,layered,fanout")
    args = ap.parse_args()
    shapes = {"chain": chain(20), "layered": layered(5, 10), "fanout": fan_out(50)}
    shapes = {k: v for k, v in shapes.items() if k in args.shapes.split(",")}

    results: dict[str, dict[str, list[float]]] = {s: {} for s in shapes}
    async with scratch_servers("bench-dag") as scratch:
        env = scratch.env
        queue, bare_queue = f"bt-{uuid.uuid4()}", f"bare-{uuid.uuid4()}"
        settings = Settings(
            temporal_address=scratch.temporal_address, task_queue=queue,
            database_url=scratch.database_url, state_dir=scratch.tmp,
            worker_roles="workflows,tools",
        )
        async with open_deps(settings) as deps, contextlib.AsyncExitStack() as stack:
            for w in build_workers(env.client, settings, deps):
                await stack.enter_async_context(w)
            await stack.enter_async_context(Worker(
                env.client, task_queue=bare_queue, workflows=[BareChildren, BareActivities,
                                                              BareStep],
                activities=[bench_sleep], max_concurrent_activities=200,
                max_concurrent_workflow_tasks=200,
            ))
            # Warm up every path once so imports and caches are not measured.
            for kind in ("beestown", "children", "activities"):
                await timed(env.client, kind, chain(2), 0.01, queue, bare_queue)
            for name, shape in shapes.items():
                cp = depth(shape) * args.step
                for _ in range(args.runs):
                    for kind in ("beestown", "children", "activities"):
                        t = await timed(env.client, kind, shape, args.step, queue, bare_queue)
                        results[name].setdefault(kind, []).append(t / cp)
                line = " ".join(f"{k}={min(v):.2f}" for k, v in results[name].items())
                print(f"{name} {line}", flush=True)
    print("medians:")
    for name, by_kind in results.items():
        line = " ".join(f"{k}={statistics.median(v):.2f}" for k, v in by_kind.items())
        print(f"{name} {line}")


if __name__ == "__main__":
    asyncio.run(main())
