"""An agent's slot is a lease: a workflow closed without giving it back loses it.

The writer has capacity 1 in the example org.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

from temporalio.client import Client, WorkflowHandle

from models.io import TaskInput
from runtime.settings import Settings
from runtime.store import Store
from testkit.fake_llm import FakeLLM
from tests.conftest import org_workers
from tests.helpers import plan_of, start_task
from tests.test_organization import wait_for_status
from tests.test_organization_edges import _fresh_slots, held  # noqa: F401
from worker import Deps


async def writer_busy(client: Client, deps: Deps, settings: Settings
                      ) -> WorkflowHandle[Any, Any]:
    """Start a task whose step holds the writer's only slot for two minutes."""
    handle = await start_task(client, settings, TaskInput(plan=plan_of(
        {"id": "long", "type": "tool", "tool": "sleep", "args": {"seconds": 120},
         "assignee": "writer"}), assignee="research-lead"))
    await wait_for_status(Store(deps.pool), f"{handle.id}/long", "RUNNING")
    return handle


async def test_a_terminated_step_gives_its_capacity_one_agent_back(
    client: Client, deps: Deps, database_url: str, llm: FakeLLM, tmp_path: Path
) -> None:
    async with org_workers(client, deps, database_url, llm, tmp_path) as s:
        first = await writer_busy(client, deps, s)
        assert [r["state"] for r in await held(deps, first.id)] == ["running"]
        # `temporal workflow terminate` runs no workflow code: nothing frees the slot.
        await client.get_workflow_handle(f"{first.id}/long").terminate("gone")
        await first.terminate("gone")
        second = await start_task(client, s, TaskInput(plan=plan_of(
            {"id": "note", "type": "tool", "tool": "echo", "args": {"value": "hi"},
             "assignee": "writer"}), assignee="research-lead"))
        # It gets the writer's slot at once and its result waits for review.
        await wait_for_status(Store(deps.pool), f"{second.id}/note", "REVIEWING")
        assert await held(deps, first.id) == []
        await second.terminate("done with the test")


async def test_a_slot_leaked_while_a_step_waits_is_reclaimed_when_it_asks_again(
    client: Client, deps: Deps, database_url: str, llm: FakeLLM, tmp_path: Path
) -> None:
    async with org_workers(client, deps, database_url, llm, tmp_path) as s:
        first = await writer_busy(client, deps, s)
        second = await start_task(client, s, TaskInput(plan=plan_of(
            {"id": "note", "type": "tool", "tool": "echo", "args": {"value": "hi"},
             "assignee": "writer"}), assignee="research-lead"))
        await wait_for_status(Store(deps.pool), f"{second.id}/note", "QUEUED")
        await client.get_workflow_handle(f"{first.id}/long").terminate("gone")
        # The queued step asks again within QUEUE_RECHECK (30 s) and finds the slot free.
        for _ in range(450):
            row = await deps.pool.fetchval(
                "SELECT status FROM subtasks WHERE id = $1", f"{second.id}/note")
            if row == "REVIEWING":
                break
            await asyncio.sleep(0.1)
        assert row == "REVIEWING"
        await second.terminate("done with the test")
