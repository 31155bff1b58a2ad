"""A tool step served by its fallback tool says so: in its result, the events, and the tree.

And a tool error that says nothing is reported as such, naming its kind, never as a blank.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import sys
from typing import Any

import pytest
from temporalio.client import Client

from models.task import Status
from models.tools import McpServerConfig
from runtime.settings import Settings
from runtime.tools.errors import ToolFailed
from runtime.tools.mcp import McpHub
from runtime.tools.toolbox import Toolbox
from tests.conftest import running_workers, tool_registry_for_tests
from tests.helpers import by_step, run_plan
from tests.mcp_http_server import ROOT
from tests.test_cli import cli
from worker import Deps


def own_server() -> McpServerConfig:
    return McpServerConfig(
        name="own", transport="stdio", command=sys.executable,
        args=["-m", "tests.mcp_http_server", "--stdio"], env={"PYTHONPATH": str(ROOT)})


async def test_a_fallback_that_answers_leaves_a_trace(
    client: Client, worker: Settings, deps: Deps, database_url: str
) -> None:
    result = await run_plan(
        client, worker,
        {"id": "fetch", "type": "tool", "tool": "fail", "args": {"message": "primary down"},
         "fallback_tool": "echo", "fallback_args": {"value": "plan B"}},
        {"id": "use", "type": "tool", "tool": "concat", "deps": ["fetch"],
         "args": {"parts": ["${fetch}", "!"]}},
        {"id": "plain", "type": "tool", "tool": "echo", "args": {"value": 1}},
    )
    assert result.status is Status.COMPLETED, result.error
    assert by_step(result)["use"].output == "plan B!"
    task_id = result.task_id

    # The step's record.
    rows = {r["step_id"]: r for r in await deps.store.list_subtasks(task_id)}
    fell = rows["fetch"]["result"]["fallback"]
    assert fell["primary_tool"] == "fail"
    assert fell["fallback_tool"] == "echo"
    assert fell["primary_error_type"] == "ToolFailed"
    assert "ValueError: primary down" in fell["primary_error"]
    assert rows["plain"]["result"]["fallback"] is None
    # The events.
    events = [e for e in await deps.store.events(task_id) if e["kind"] == "fallback_answered"]
    assert [e["subtask_id"] for e in events] == [f"{task_id}/fetch"]
    assert events[0]["data"]["primary_error"] == fell["primary_error"]
    assert "fallback echo answered" in events[0]["data"]["text"]
    # The tree, as JSON and as text.
    (rc, out, err), (rc2, out2, err2) = await asyncio.gather(
        cli("tree", task_id, "--json", settings=worker, database_url=database_url),
        cli("tree", task_id, settings=worker, database_url=database_url),
    )
    assert rc == 0, err
    subs = {s["step_id"]: s for s in json.loads(out)["subtasks"]}
    assert subs["fetch"]["fallback"] == fell
    assert subs["plain"]["fallback"] is None
    assert rc2 == 0, err2
    text = " ".join(out2.replace("│", " ").split())  # rich wraps long lines in the tree
    assert "fail failed" in text
    assert "primary down" in text
    assert "fallback echo answered" in text


async def test_a_fallback_that_fails_too_names_both_errors(
    client: Client, worker: Settings, deps: Deps
) -> None:
    result = await run_plan(
        client, worker,
        {"id": "fetch", "type": "tool", "tool": "fail", "args": {"message": "primary down"},
         "fallback_tool": "fail", "fallback_args": {"message": "backup down"}},
    )
    assert result.status is Status.FAILED
    error = by_step(result)["fetch"].error or ""
    assert "primary down" in error
    assert "backup down" in error
    events = await deps.store.events(result.task_id)
    assert not [e for e in events if e["kind"] == "fallback_answered"]


@pytest.mark.parametrize(("how", "kind"), [
    ("result", "an MCP error result"),
    ("blank", "an MCP error result"),
    ("protocol", "MCP error -32603"),
])
async def test_an_mcp_error_with_an_empty_message_says_so(how: str, kind: str) -> None:
    hub = McpHub([own_server()])
    try:
        with pytest.raises(ToolFailed) as err:
            await hub.call("own.fail_quietly", {"how": how})
    finally:
        await hub.aclose()
    assert str(err.value) == (
        f"tool own.fail_quietly failed with an empty error message ({kind})")
    assert err.value.retryable is False


async def test_a_function_tool_error_with_an_empty_message_says_so() -> None:
    tools = tool_registry_for_tests()
    with pytest.raises(ToolFailed) as err:
        await tools.call("fail", {"message": ""})
    assert str(err.value) == "tool fail failed with an empty error message (ValueError)"


async def test_a_silent_mcp_primary_is_recorded_with_its_kind(
    client: Client, settings: Settings, deps: Deps
) -> None:
    box = Toolbox(tool_registry_for_tests(), hub=McpHub([own_server()]))
    try:
        async with running_workers(client, settings, dataclasses.replace(deps, registry=box)):
            result = await run_plan(
                client, settings,
                {"id": "ask", "type": "tool", "tool": "own.fail_quietly",
                 "args": {"how": "result"},
                 "fallback_tool": "echo", "fallback_args": {"value": "fine"}},
            )
    finally:
        await box.aclose()
    assert result.status is Status.COMPLETED, result.error
    [row] = await deps.store.list_subtasks(result.task_id)
    fell: dict[str, Any] = row["result"]["fallback"]
    assert fell["primary_tool"] == "own.fail_quietly"
    assert fell["primary_error_type"] == "ToolFailed"
    assert fell["primary_error"] == (
        "tool own.fail_quietly failed with an empty error message (an MCP error result)")
