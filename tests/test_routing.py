"""Activities routed to task queues by kind, served by workers with different roles."""

from __future__ import annotations

import contextlib
import json
import uuid
from pathlib import Path

from temporalio.api.enums.v1 import EventType
from temporalio.client import Client

from models.io import TaskInput
from models.task import Status
from testkit.fake_llm import FakeLLM
from tests.conftest import make_settings, temporal_address
from tests.helpers import by_step, outcome, start_task
from worker import Deps, build_workers


async def test_llm_sandbox_and_tool_work_reach_the_workers_of_their_kind(
    client: Client, deps: Deps, database_url: str, llm: FakeLLM, tmp_path: Path
) -> None:
    queues = {"task_queue": f"main-{uuid.uuid4()}", "llm_task_queue": f"llm-{uuid.uuid4()}",
              "sandbox_task_queue": f"sb-{uuid.uuid4()}"}
    roles = ["workflows,tools", "llm", "sandbox"]
    all_settings = [make_settings(tmp_path, database_url, llm.base_url,
                                  temporal_address(client), worker_roles=r, **queues)
                    for r in roles]
    llm.script(json.dumps({"steps": [
        {"id": "t", "type": "tool", "tool": "echo", "args": {"value": 20}},
        {"id": "c", "type": "code", "deps": ["t"], "code": "print(inputs['t'] + 1)"},
    ]}))
    async with contextlib.AsyncExitStack() as stack:
        for s in all_settings:
            workers = build_workers(client, s, deps)
            assert len(workers) == 1
            await stack.enter_async_context(workers[0])
        handle = await start_task(client, all_settings[0], TaskInput(prompt="add one"))
        result = await outcome(handle)
    assert result.status is Status.COMPLETED, result.error
    assert by_step(result)["c"].output == "21"

    async def scheduled_queues(workflow_id: str) -> dict[str, str]:
        history = await client.get_workflow_handle(workflow_id).fetch_history()
        return {
            e.activity_task_scheduled_event_attributes.activity_type.name:
                e.activity_task_scheduled_event_attributes.task_queue.name
            for e in history.events
            if e.event_type == EventType.EVENT_TYPE_ACTIVITY_TASK_SCHEDULED
        }

    parent = await scheduled_queues(handle.id)
    assert parent["split_task"] == queues["llm_task_queue"]
    assert parent["begin_task"] == queues["task_queue"]
    code = await scheduled_queues(f"{handle.id}/c")
    assert code["run_code_step"] == queues["sandbox_task_queue"]
    # The workflow worker serves tools itself, so tool steps run as local activities.
    assert await scheduled_queues(f"{handle.id}/t") == {}
