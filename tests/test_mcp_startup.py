"""Slow, stuck and dying MCP servers, against real stdio servers of our own.

A server that starts slowly or never answers must not hold the worker's start, must not
make a plan that names its tools invalid, and must hold up only the steps that need it.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import sys
from pathlib import Path
from typing import Any, cast

import pytest
from temporalio.client import Client

from activities.llm import LLMActivities
from models.task import Status
from models.tools import McpServerConfig
from runtime.deps import open_deps
from runtime.store import Store
from runtime.tools.errors import ToolUnavailable, UnknownTool
from runtime.tools.mcp import McpHub
from runtime.tools.registry import builtin_tools
from runtime.tools.toolbox import Toolbox
from testkit.fake_llm import FakeLLM
from tests.conftest import make_settings, temporal_address, tool_registry_for_tests
from tests.helpers import by_step, run_plan
from tests.mcp_http_server import ROOT
from tests.test_mcp import children
from worker import build_workers

SERVER = [sys.executable, "-m", "tests.mcp_http_server", "--stdio"]
SLOW_DELAY_S = 6  # the slow server sleeps this long before it serves


def server(name: str, *flags: str, **overrides: Any) -> McpServerConfig:
    values: dict[str, Any] = {
        "name": name, "transport": "stdio", "command": SERVER[0],
        "args": [*SERVER[1:], *flags], "env": {"PYTHONPATH": str(ROOT)},
    }
    return McpServerConfig(**(values | overrides))


def tools_file_of(tmp_path: Path, *servers: McpServerConfig) -> Path:
    path = tmp_path / "tools.json"
    path.write_text(json.dumps(
        {"tools": [s.model_dump(mode="json", exclude_none=True) for s in servers]}))
    return path


async def test_slow_and_stuck_servers_hold_only_the_steps_that_need_them(
    client: Client, database_url: str, llm: FakeLLM, tmp_path: Path
) -> None:
    tools_file = tools_file_of(
        tmp_path,
        server("slow", "--delay", str(SLOW_DELAY_S)),
        server("stuck", "--stuck", start_timeout_s=2),
    )
    settings = make_settings(tmp_path, database_url, llm.base_url, temporal_address(client),
                             tools_file=tools_file)
    async with open_deps(settings, registry=tool_registry_for_tests()) as deps:
        hub = deps.registry.hub
        assert hub is not None
        # The worker is ready while neither server is: it did not wait for them.
        assert not hub.up("slow")
        assert not hub.up("stuck")
        # Both start at once, in parallel, in the background.
        for _ in range(100):
            if children("--delay") and children("--stuck"):
                break
            await asyncio.sleep(0.1)
        assert len(children("--delay")) == 1
        assert len(children("--stuck")) == 1
        assert not hub.up("slow")
        async with contextlib.AsyncExitStack() as stack:
            for w in build_workers(client, settings, deps):
                await stack.enter_async_context(w)
            result = await run_plan(
                client, settings,
                {"id": "plain", "type": "tool", "tool": "echo", "args": {"value": "A"}},
                {"id": "after", "type": "tool", "tool": "concat", "deps": ["plain"],
                 "args": {"parts": ["${plain}", "B"]}},
                {"id": "slowly", "type": "tool", "tool": "slow.hello",
                 "args": {"name": "slow"}},
                {"id": "never", "type": "tool", "tool": "stuck.hello", "args": {}},
            )
        steps = by_step(result)
        rows = {r["step_id"]: r for r in await Store(deps.pool).list_subtasks(result.task_id)}
        assert hub.stats("slow").opens == 1  # the start and the step shared one open
    assert children("--stuck") == []
    assert children("--delay") == []

    # The plan was valid: every step ran; only the stuck server's step failed.
    assert result.status is Status.FAILED
    assert steps["after"].status is Status.COMPLETED
    assert steps["after"].output == "AB"
    assert steps["slowly"].status is Status.COMPLETED
    assert steps["slowly"].output == {"result": "hello slow"}
    assert steps["never"].status is Status.FAILED
    error = steps["never"].error or ""
    assert "ToolUnavailable" in error, error
    assert "MCP server 'stuck'" in error, error
    assert "unknown tool" not in (result.error or "")
    # Unrelated steps did not wait for the slow server.
    assert rows["after"]["completed_at"] < rows["slowly"]["completed_at"]
    assert rows["never"]["attempts"] > 1  # retried with backoff before failing


async def test_plan_validation_knows_configured_servers_while_they_are_down() -> None:
    hub = McpHub([
        server("stuck", "--stuck", start_timeout_s=1),
        server("picky", "--stuck", start_timeout_s=1, allow=["hello"]),
        server("own"),
    ])
    box = Toolbox(builtin_tools(), hub=hub)
    try:
        # Not up: any tool of a configured server may exist (its allow list still holds).
        assert box.knows("stuck.hello")
        assert box.knows("own.anything")
        assert box.knows("echo")
        assert box.knows("picky.hello")
        assert not box.knows("picky.add")
        assert not box.knows("nosuch.hello")
        assert not box.knows("stuck")
        assert not box.knows("x")
        assert any("'stuck' is not up yet" in line for line in box.menu())
        # A model's plan is held to the same rule as a plan file.
        split = LLMActivities(llm=cast(Any, None), tools=box)
        plan, errors = split._plan_errors(
            '{"steps": [{"id": "a", "type": "tool", "tool": "stuck.hello"}]}', 10)
        assert plan is not None
        assert errors == []
        _, errors = split._plan_errors(
            '{"steps": [{"id": "a", "type": "tool", "tool": "nosuch.hello"}]}', 10)
        assert len(errors) == 1
        assert errors[0].startswith("step 'a' names unknown tool 'nosuch.hello' (known: ")
        assert "stuck.<tool> (MCP server 'stuck' is not up yet" in errors[0]
        # Once up, a server is held to the tools it lists.
        assert await hub.call("own.hello", {}) == {"result": "hello world"}
        assert box.knows("own.hello")
        assert not box.knows("own.anything")
        with pytest.raises(ToolUnavailable, match="MCP server 'stuck'") as err:
            await hub.call("stuck.hello", {})
        assert err.value.server == "stuck"
        assert err.value.retryable
        assert box.knows("stuck.hello")  # still down, still not unknown
        # A listing asked not to wait names the servers that are not up, at once.
        specs, problems = await box.list_specs(wait=False)
        assert "own.hello" in {s.name for s in specs}
        assert "cannot open MCP server 'stuck': no answer within 1 s" in problems["stuck"]
    finally:
        await hub.aclose()
    assert children("--stuck") == []


async def test_a_server_that_dies_mid_call_is_reopened_and_the_call_retried(
    tmp_path: Path,
) -> None:
    hub = McpHub([server("own")])
    try:
        first = await hub.call("own.pid", {})
        # The server exits while it handles this call; the hub reopens and calls again.
        value = await hub.call("own.crash_once", {"marker": str(tmp_path / "crashed")})
        assert value["result"] == f"served by {(await hub.call('own.pid', {}))['result']}"
        assert (tmp_path / "crashed").read_text() == str(first["result"])
        assert (hub.stats("own").opens, hub.stats("own").reopens) == (2, 1)
        with pytest.raises(UnknownTool):
            await hub.call("own.nope", {})
    finally:
        await hub.aclose()
