"""Starting tasks from tests the way starter.py does."""

from __future__ import annotations

import uuid
from typing import Any

from temporalio.client import Client, WorkflowHandle

from cli.run import outcome as outcome  # re-exported: the tests wait with it
from models.io import TaskInput, TaskResult
from models.plan import Plan
from runtime.settings import Settings


def plan_of(*steps: dict[str, Any]) -> Plan:
    return Plan.model_validate({"steps": list(steps)})


async def start_task(
    client: Client, settings: Settings, task: TaskInput, *, task_id: str | None = None
) -> WorkflowHandle[Any, Any]:
    return await client.start_workflow(
        "TaskWorkflow", task, id=task_id or f"t-{uuid.uuid4().hex[:12]}",
        task_queue=settings.task_queue,
    )


async def run_plan(client: Client, settings: Settings, *steps: dict[str, Any]) -> TaskResult:
    handle = await start_task(client, settings, TaskInput(plan=plan_of(*steps)))
    return await outcome(handle)


def by_step(result: TaskResult) -> dict[str, Any]:
    return {s.step_id: s for s in result.subtasks}
