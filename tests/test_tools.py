"""Tools: the config file, the Toolbox facade, the call_tool / list_tools activities, and a
plan whose tool step is an MCP tool, end to end on the real Temporal dev server."""

from __future__ import annotations

import dataclasses
import json
import sys
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import pytest_asyncio
from temporalio.client import Client
from temporalio.exceptions import ApplicationError
from temporalio.testing import ActivityEnvironment

from activities.steps import StepBook
from activities.tools import ToolActivities
from models.io import INLINE_OUTPUT_LIMIT
from models.task import Status
from models.tools import (
    InvalidToolsConfig,
    ListToolsInput,
    McpServerConfig,
    ToolCallInput,
    call_blob_id,
)
from runtime.documents import load_tools_config, parse_tools_config
from runtime.settings import Settings
from runtime.store import NotFound
from runtime.tools.errors import BadToolArguments, ToolFailed, UnknownTool
from runtime.tools.mcp import McpHub
from runtime.tools.registry import ToolRegistry, builtin_tools
from runtime.tools.toolbox import Toolbox, open_toolbox
from tests.conftest import running_workers
from tests.helpers import by_step, run_plan
from worker import Deps

TIME_SERVER = str(Path(sys.executable).parent / "mcp-server-time")


def registry() -> ToolRegistry:
    tools = builtin_tools()

    @tools.tool
    def big(size: int) -> str:
        """Return `size` characters, a different letter every 1000."""
        return "".join(chr(ord("a") + (i // 1000) % 26) for i in range(size))

    @tools.tool
    def flaky() -> None:
        """Fail as if the network were down."""
        raise ConnectionError("network down")

    return tools


def write_tools_file(tmp_path: Path, text: str, suffix: str = ".yaml") -> Path:
    path = tmp_path / f"tools{suffix}"
    path.write_text(text)
    return path


TIME_YAML = f"""
tools:
  - name: time
    transport: stdio
    command: {TIME_SERVER}
    args: [--local-timezone, UTC]
    allow: [get_current_time]
    timeout_s: 20
"""


@pytest_asyncio.fixture
async def toolbox(tmp_path: Path) -> AsyncIterator[Toolbox]:
    box = await open_toolbox(registry(), write_tools_file(tmp_path, TIME_YAML), wait=True)
    yield box
    await box.aclose()


# -- configuration ---------------------------------------------------------------------
def test_tools_file_loads_from_yaml_and_json(tmp_path: Path) -> None:
    config = load_tools_config(write_tools_file(tmp_path, TIME_YAML))
    [time] = config.tools
    assert (time.name, time.transport, time.allow, time.timeout_s) == (
        "time", "stdio", ["get_current_time"], 20)
    as_json = json.dumps({"tools": [{"name": "web", "transport": "http",
                                     "url": "http://127.0.0.1:9/mcp"}]})
    [web] = load_tools_config(write_tools_file(tmp_path, as_json, ".json")).tools
    assert (web.url, web.allow, web.env) == ("http://127.0.0.1:9/mcp", None, {})
    assert parse_tools_config(None).tools == []


def test_a_bad_tools_file_names_every_bad_entry(tmp_path: Path) -> None:
    path = write_tools_file(tmp_path, """
tools:
  - {name: time, transport: stdio, command: mcp-server-time}
  - {name: web, transport: http}
  - {name: git, transport: stdio}
  - {name: x.y, transport: stdio, command: a}
  - {name: mem, transport: smoke-signals, command: a}
  - {name: fs, transport: stdio, command: a, colour: red}
  - {name: env, transport: stdio, command: a, env: {"BAD-NAME": "1"}}
""")
    with pytest.raises(InvalidToolsConfig) as err:
        load_tools_config(path)
    text = "\n".join(err.value.errors)
    assert f"{path}: tools[1] ('web') an http server needs an http:// or https:// url" in text
    assert "tools[2] ('git') a stdio server needs a command" in text
    assert "tools[3] ('x.y') name: String should match pattern" in text
    assert "tools[4] ('mem') transport: Input should be 'stdio' or 'http'" in text
    assert "tools[5] ('fs') colour: Extra inputs are not permitted" in text
    assert "tools[6] ('env') env names must be identifiers: BAD-NAME" in text
    assert "tools[0]" not in text
    with pytest.raises(InvalidToolsConfig, match="'time' is used more than once"):
        parse_tools_config({"tools": [
            {"name": "time", "transport": "stdio", "command": "a"},
            {"name": "time", "transport": "stdio", "command": "b"},
        ]})
    with pytest.raises(InvalidToolsConfig, match="cannot read tools file"):
        load_tools_config(tmp_path / "missing.yaml")


def test_function_tools_cannot_enter_a_server_name_space() -> None:
    tools = builtin_tools()
    tools.tool(lambda: 1, name="time.now")
    hub = McpHub([McpServerConfig(name="time", transport="stdio", command="x")])
    with pytest.raises(ValueError, match=r"time\.now clash"):
        Toolbox(tools, hub=hub)


# -- the facade ------------------------------------------------------------------------
async def test_toolbox_lists_and_calls_function_and_mcp_tools(toolbox: Toolbox) -> None:
    assert toolbox.names() == ["big", "concat", "echo", "flaky", "sleep",
                               "time.get_current_time"]
    specs = {s.name: s for s in toolbox.specs()}
    assert specs["echo"].description == "Return `value` unchanged."
    assert specs["concat"].parameters["required"] == ["parts"]
    assert specs["time.get_current_time"].parameters["required"] == ["timezone"]
    assert await toolbox.call("concat", {"parts": ["a", 1]}) == "a1"
    assert (await toolbox.call("time.get_current_time", {"timezone": "UTC"}))["timezone"] == "UTC"
    with pytest.raises(BadToolArguments, match="parts"):
        await toolbox.call("concat", {})
    with pytest.raises(UnknownTool, match="known: big, concat"):
        await toolbox.call("nope", {})
    with pytest.raises(ToolFailed) as err:
        await toolbox.call("flaky", {})
    assert err.value.retryable is True


# -- the activities --------------------------------------------------------------------
def acts(toolbox: ToolRegistry, deps: Deps, **kwargs: int) -> ToolActivities:
    return ToolActivities(toolbox, StepBook(deps.store), **kwargs)


async def test_a_small_output_travels_inline(toolbox: Toolbox, deps: Deps) -> None:
    env = ActivityEnvironment()
    result = await env.run(acts(toolbox, deps).call_tool, ToolCallInput(
        task_id="t", subtask_id="t/a", call_id="1", name="time.get_current_time",
        args={"timezone": "Europe/Paris"}))
    assert result.ok
    assert not result.truncated
    assert result.ref is None
    assert result.preview["timezone"] == "Europe/Paris"


async def test_a_big_output_is_stored_once_and_previewed(toolbox: Toolbox, deps: Deps) -> None:
    task_id = f"tt-{uuid.uuid4().hex[:8]}"
    inp = ToolCallInput(task_id=task_id, subtask_id=f"{task_id}/s", call_id="c7", name="big",
                        args={"size": 50_000})
    activity = acts(toolbox, deps).call_tool
    first = await ActivityEnvironment().run(activity, inp)
    again = await ActivityEnvironment().run(activity, inp)  # a retry of the same call
    assert first == again
    assert first.ok
    assert first.truncated
    assert first.ref == call_blob_id(task_id, f"{task_id}/s", "c7") == f"{task_id}/s/calls/c7"
    full = json.loads(await deps.store.get_blob(first.ref))
    assert full == await toolbox.call("big", {"size": 50_000})
    assert isinstance(first.preview, str)
    assert len(first.preview) < INLINE_OUTPUT_LIMIT + 100
    assert first.preview.startswith('"aaaa')
    assert first.preview.endswith('xxxx"')
    assert "characters omitted" in first.preview
    rows = await deps.pool.fetchval("SELECT count(*) FROM blobs WHERE task_id = $1", task_id)
    assert rows == 1
    with pytest.raises(NotFound):
        await deps.store.get_blob(call_blob_id(task_id, f"{task_id}/s", "other"))


async def test_permanent_errors_can_come_back_as_results(toolbox: Toolbox, deps: Deps) -> None:
    activity = acts(toolbox, deps).call_tool
    env = ActivityEnvironment()
    bad = await env.run(activity, ToolCallInput(
        task_id="t", call_id="1", name="time.get_current_time", args={"timezone": 3},
        return_errors=True))
    assert (bad.ok, bad.error_type) == (False, "BadToolArguments")
    assert "timezone" in (bad.error or "")
    with pytest.raises(ApplicationError) as err:  # retryable errors still raise
        await env.run(activity, ToolCallInput(task_id="t", call_id="2", name="flaky",
                                              return_errors=True))
    assert (err.value.type, err.value.non_retryable) == ("ToolUnavailable", False)
    with pytest.raises(ApplicationError) as err:
        await env.run(activity, ToolCallInput(task_id="t", call_id="3", name="nope"))
    assert (err.value.type, err.value.non_retryable) == ("UnknownTool", True)


async def test_list_tools_names_unreachable_servers(deps: Deps) -> None:
    box = Toolbox(registry(), hub=McpHub([
        McpServerConfig(name="time", transport="stdio", command=TIME_SERVER),
        McpServerConfig(name="gone", transport="http", url="http://127.0.0.1:9/mcp"),
    ]))
    try:
        listed = await ActivityEnvironment().run(acts(box, deps).list_tools, ListToolsInput())
    finally:
        await box.aclose()
    names = [t.name for t in listed.tools]
    assert {"echo", "time.get_current_time", "time.convert_time"} <= set(names)
    assert list(listed.problems) == ["gone"]
    assert "cannot open MCP server 'gone'" in listed.problems["gone"]


# -- end to end ------------------------------------------------------------------------
async def test_a_plan_with_an_mcp_tool_step_completes(
    client: Client, settings: Settings, deps: Deps, tmp_path: Path
) -> None:
    box = await open_toolbox(deps.registry, write_tools_file(tmp_path, TIME_YAML))
    try:
        async with running_workers(client, settings, dataclasses.replace(deps, registry=box)):
            result = await run_plan(
                client, settings,
                {"id": "now", "type": "tool", "tool": "time.get_current_time",
                 "args": {"timezone": "Asia/Kolkata"}},
                {"id": "copy", "type": "tool", "tool": "echo", "deps": ["now"],
                 "args": {"value": "${now}"}},
            )
            bad = await run_plan(
                client, settings,
                {"id": "later", "type": "tool", "tool": "time.get_current_time",
                 "args": {"timezone": 7}},
            )
    finally:
        await box.aclose()
    assert result.status is Status.COMPLETED, result.error
    steps = by_step(result)
    assert steps["now"].output["timezone"] == "Asia/Kolkata"
    assert steps["copy"].output == steps["now"].output
    assert bad.status is Status.FAILED
    assert "BadToolArguments" in (by_step(bad)["later"].error or "")
