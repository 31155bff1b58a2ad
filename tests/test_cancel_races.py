"""Cancelling a task at any moment ends every workflow CANCELLED within seconds.

A cancel can land while a child starts, runs, releases its dependents by signal, or
completes; every such history must close, and must replay.
"""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from temporalio.client import Client, WorkflowExecutionStatus, WorkflowHistory
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.worker import Replayer

from models.io import TaskInput
from models.task import Status
from runtime.settings import Settings
from tests.helpers import outcome, plan_of, start_task
from workflows.subtask import SubtaskWorkflow
from workflows.task import TaskWorkflow

STEP = {"type": "tool", "tool": "sleep", "args": {"seconds": 0.2}}

SHAPES: dict[str, list[dict[str, Any]]] = {
    # One step that releases thirty dependents the moment it completes.
    "fan_out_30": [{"id": "root", **STEP}] + [
        {"id": f"d{i}", **STEP, "deps": ["root"]} for i in range(30)],
    # A chain: each step releases the next.
    "chain_8": [{"id": "s0", **STEP}] + [
        {"id": f"s{i}", **STEP, "deps": [f"s{i - 1}"]} for i in range(1, 8)],
    # A diamond: the join is started by the parent.
    "diamond": [{"id": "a", **STEP}, {"id": "b", **STEP, "deps": ["a"]},
                {"id": "c", **STEP, "deps": ["a"]}, {"id": "d", **STEP, "deps": ["b", "c"]}],
}

OFFSETS = [round(0.1 * i, 1) for i in range(21)]  # 0 to 2 s after the start


async def _cancel_after(client: Client, settings: Settings, steps: list[dict[str, Any]],
                        offset: float) -> str:
    handle = await start_task(client, settings, TaskInput(plan=plan_of(*steps)))
    await asyncio.sleep(offset)
    await handle.cancel()
    result = await asyncio.wait_for(outcome(handle), 30)
    # A task whose steps all finished before the cancel arrived may complete.
    assert result.status in (Status.CANCELLED, Status.COMPLETED), (offset, result)
    return handle.id


async def _open_workflows(client: Client, task_ids: list[str]) -> list[str]:
    still: list[str] = []
    for task_id in task_ids:
        async for wf in client.list_workflows(f"WorkflowId STARTS_WITH '{task_id}'"):
            if wf.status == WorkflowExecutionStatus.RUNNING:
                still.append(wf.id)
    return still


@pytest.mark.parametrize("shape", sorted(SHAPES))
async def test_a_cancel_at_any_moment_closes_every_workflow_and_replays(
    client: Client, worker: Settings, shape: str
) -> None:
    ids = await asyncio.gather(*(
        _cancel_after(client, worker, SHAPES[shape], offset) for offset in OFFSETS))
    for _ in range(100):
        still = await _open_workflows(client, list(ids))
        if not still:
            break
        await asyncio.sleep(0.1)
    assert still == [], f"still running 10 s after their task ended: {still}"
    histories: list[WorkflowHistory] = []
    for task_id in ids:
        async for wf in client.list_workflows(f"WorkflowId STARTS_WITH '{task_id}'"):
            histories.append(await client.get_workflow_handle(
                wf.id, run_id=wf.run_id).fetch_history())
    replayer = Replayer(workflows=[TaskWorkflow, SubtaskWorkflow],
                        data_converter=pydantic_data_converter)
    async with replayer.workflow_replay_iterator(_each(histories)) as results:
        failures = [(r.history.workflow_id, str(r.replay_failure)) async for r in results
                    if r.replay_failure is not None]
    assert failures == []


async def _each(histories: list[WorkflowHistory]) -> Any:
    for h in histories:
        yield h
