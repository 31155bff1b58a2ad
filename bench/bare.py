"""Bare Temporal baselines for bench/dag.py (their own module so the workflow sandbox can
import them)."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from datetime import timedelta

from pydantic import BaseModel
from temporalio import activity, workflow

Shape = dict[str, list[str]]  # node -> deps


class BareInput(BaseModel):
    shape: Shape
    seconds: float


@activity.defn(name="bench_sleep")
async def bench_sleep(seconds: float) -> float:
    await asyncio.sleep(seconds)
    return seconds


@workflow.defn(name="BareStep")
class BareStep:
    @workflow.run
    async def run(self, seconds: float) -> float:
        return await workflow.execute_activity(
            bench_sleep, seconds, start_to_close_timeout=timedelta(seconds=30)
        )


async def _run_dag(shape: Shape, run_node: Callable[[str], Awaitable[None]]) -> None:
    done: dict[str, asyncio.Event] = {n: asyncio.Event() for n in shape}

    async def node(n: str) -> None:
        for p in shape[n]:
            await done[p].wait()
        await run_node(n)
        done[n].set()

    await asyncio.gather(*(node(n) for n in shape))


@workflow.defn(name="BareChildren")
class BareChildren:
    @workflow.run
    async def run(self, inp: BareInput) -> None:
        wid = workflow.info().workflow_id

        async def run_node(n: str) -> None:
            await workflow.execute_child_workflow(BareStep.run, inp.seconds, id=f"{wid}/{n}")

        await _run_dag(inp.shape, run_node)


@workflow.defn(name="BareActivities")
class BareActivities:
    @workflow.run
    async def run(self, inp: BareInput) -> None:
        async def run_node(n: str) -> None:
            await workflow.execute_activity(
                bench_sleep, inp.seconds, start_to_close_timeout=timedelta(seconds=30)
            )

        await _run_dag(inp.shape, run_node)
