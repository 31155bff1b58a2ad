"""MCP servers as tools, against real peers: mcp-server-time over stdio, our own over HTTP."""

from __future__ import annotations

import asyncio
import os
import signal
import sys
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio
from temporalio.exceptions import ApplicationError
from temporalio.testing import ActivityEnvironment

from activities.steps import StepBook
from activities.tools import ToolActivities
from models.tools import McpServerConfig, ToolCallInput
from runtime.tools.errors import BadToolArguments, ToolFailed, UnknownTool
from runtime.tools.mcp import McpHub
from runtime.tools.registry import builtin_tools
from runtime.tools.toolbox import Toolbox
from tests.mcp_http_server import ROOT, McpHttpServer
from worker import Deps

BIN = Path(sys.executable).parent
TIME_SERVER = str(BIN / "mcp-server-time")


def time_server(**overrides: Any) -> McpServerConfig:
    values: dict[str, Any] = {
        "name": "time", "transport": "stdio", "command": TIME_SERVER,
        "args": ["--local-timezone", "UTC"],
    }
    return McpServerConfig(**(values | overrides))


def own_stdio_server(**overrides: Any) -> McpServerConfig:
    values: dict[str, Any] = {
        "name": "ownio", "transport": "stdio", "command": sys.executable,
        "args": ["-m", "tests.mcp_http_server", "--stdio"],
        # `python -m` finds the tests package through PYTHONPATH: the env holds only what
        # the config gives.
        "env": {"PYTHONPATH": str(ROOT)},
    }
    return McpServerConfig(**(values | overrides))


def children(marker: str) -> list[int]:
    """Return the pids of this process's live children whose command line holds `marker`."""
    me = os.getpid()
    out = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode()
        except OSError:
            continue
        fields = stat.rsplit(")", 1)[1].split()
        if int(fields[1]) == me and fields[0] != "Z" and marker in cmdline:
            out.append(int(entry.name))
    return out


@pytest.fixture
def http_server() -> Iterator[McpHttpServer]:
    server = McpHttpServer()
    server.start()
    yield server
    server.stop()


def http_config(server: McpHttpServer, **overrides: Any) -> McpServerConfig:
    values: dict[str, Any] = {"name": "own", "transport": "http", "url": server.url}
    return McpServerConfig(**(values | overrides))


@pytest_asyncio.fixture
async def hub(http_server: McpHttpServer) -> AsyncIterator[McpHub]:
    h = McpHub([time_server(), http_config(http_server)])
    yield h
    await h.aclose()


async def activity_failure(hub: McpHub, deps: Deps, name: str) -> tuple[str | None, bool]:
    """Call tool `name` through the call_tool activity; return how it failed: the
    ApplicationError's type and whether it is non-retryable."""
    acts = ToolActivities(Toolbox(builtin_tools(), hub=hub), StepBook(deps.store))
    with pytest.raises(ApplicationError) as err:
        await ActivityEnvironment().run(
            acts.call_tool, ToolCallInput(task_id="t", call_id="c1", name=name))
    return err.value.type, err.value.non_retryable


async def test_tools_are_listed_with_schemas_under_their_server_name(hub: McpHub) -> None:
    toolbox = Toolbox(builtin_tools(), hub=hub)
    specs, problems = await toolbox.list_specs()
    by_name = {s.name: s for s in specs}
    assert problems == {}
    assert {"echo", "time.get_current_time", "time.convert_time", "own.add"} <= set(by_name)
    now = by_name["time.get_current_time"]
    assert now.description
    assert now.parameters["properties"]["timezone"]["type"] == "string"
    assert now.parameters["required"] == ["timezone"]
    assert by_name["own.add"].parameters["properties"]["a"]["type"] == "integer"
    assert set(by_name) == set(toolbox.names())


async def test_get_current_time_answers_in_the_asked_timezone(hub: McpHub) -> None:
    value = await hub.call("time.get_current_time", {"timezone": "Asia/Tokyo"})
    assert value["timezone"] == "Asia/Tokyo"
    at = datetime.fromisoformat(value["datetime"])
    assert at.utcoffset() == timedelta(hours=9)
    assert abs(at - datetime.now(UTC)) < timedelta(minutes=1)
    assert await hub.call("own.add", {"a": 2, "b": 40}) == {"result": 42}


async def test_allow_list_hides_the_other_tools() -> None:
    hub = McpHub([time_server(allow=["get_current_time"])])
    try:
        assert hub.names() == ["time.get_current_time"]  # known before any connection
        specs, _ = await hub.list_tools()
        assert [s.name for s in specs] == ["time.get_current_time"]
        with pytest.raises(UnknownTool, match="convert_time"):
            await hub.call("time.convert_time", {"source_timezone": "UTC", "time": "12:00",
                                                 "target_timezone": "UTC"})
    finally:
        await hub.aclose()


async def test_unknown_tools_and_servers_fail_permanently(hub: McpHub, deps: Deps) -> None:
    with pytest.raises(UnknownTool, match=r"offers: time\.convert_time, time\.get_current_time"):
        await hub.call("time.nope", {})
    toolbox = Toolbox(builtin_tools(), hub=hub)
    with pytest.raises(UnknownTool, match=r"known: .*time\.get_current_time"):
        await toolbox.call("nosuch.tool", {})
    assert await activity_failure(hub, deps, "time.nope") == ("UnknownTool", True)


async def test_bad_arguments_are_refused_before_the_server_sees_them(hub: McpHub) -> None:
    with pytest.raises(BadToolArguments, match="timezone: 5 is not of type 'string'"):
        await hub.call("time.get_current_time", {"timezone": 5})
    with pytest.raises(BadToolArguments, match="'timezone' is a required property"):
        await hub.call("time.get_current_time", {})
    with pytest.raises(BadToolArguments, match="b: 'x' is not of type 'integer'"):
        await hub.call("own.add", {"a": 1, "b": "x"})
    assert hub.stats("time").calls == hub.stats("own").calls == 0


async def test_an_error_result_is_a_permanent_tool_failure(hub: McpHub, deps: Deps) -> None:
    with pytest.raises(ToolFailed, match="Invalid timezone") as err:
        await hub.call("time.get_current_time", {"timezone": "Nowhere/Atlantis"})
    assert err.value.retryable is False
    with pytest.raises(ToolFailed) as err:
        await hub.call("own.fail", {"message": "no"})
    assert err.value.retryable is False
    assert await activity_failure(hub, deps, "own.fail") == ("ToolFailed", True)


async def test_one_session_and_one_process_serve_every_call(hub: McpHub) -> None:
    first = await hub.session("time")
    for tz in ("UTC", "Europe/Paris", "America/New_York"):
        assert (await hub.call("time.get_current_time", {"timezone": tz}))["timezone"] == tz
    assert await hub.session("time") is first
    assert len(children("mcp-server-time")) == 1
    assert (hub.stats("time").opens, hub.stats("time").reopens) == (1, 0)
    own = await hub.session("own")
    await hub.call("own.add", {"a": 1, "b": 1})
    await hub.call("own.add", {"a": 1, "b": 2})
    assert await hub.session("own") is own
    assert hub.stats("own").opens == 1


async def test_a_killed_stdio_server_is_reopened_and_the_call_retried(hub: McpHub) -> None:
    await hub.call("time.get_current_time", {"timezone": "UTC"})
    before = await hub.session("time")
    [pid] = children("mcp-server-time")
    os.kill(pid, signal.SIGKILL)
    value = await hub.call("time.get_current_time", {"timezone": "Europe/Paris"})
    assert value["timezone"] == "Europe/Paris"
    assert await hub.session("time") is not before
    assert children("mcp-server-time") != [pid]
    assert len(children("mcp-server-time")) == 1
    assert (hub.stats("time").opens, hub.stats("time").reopens) == (2, 1)


async def test_concurrent_calls_on_a_dead_session_share_one_reopen(hub: McpHub) -> None:
    await hub.call("time.get_current_time", {"timezone": "UTC"})
    [pid] = children("mcp-server-time")
    os.kill(pid, signal.SIGKILL)
    zones = ["UTC", "Europe/Paris", "Asia/Tokyo", "America/Lima", "Africa/Cairo"]
    values = await asyncio.gather(
        *(hub.call("time.get_current_time", {"timezone": tz}) for tz in zones)
    )
    assert [v["timezone"] for v in values] == zones
    assert len(children("mcp-server-time")) == 1
    assert hub.stats("time").opens == 2


async def test_a_stopped_http_server_is_retryable_and_reopened_when_back(
    hub: McpHub, http_server: McpHttpServer, deps: Deps
) -> None:
    first_pid = await hub.call("own.pid", {})
    http_server.stop()
    with pytest.raises(ToolFailed, match="unreachable") as err:
        await hub.call("own.pid", {})
    assert err.value.retryable is True
    assert await activity_failure(hub, deps, "own.pid") == ("ToolUnavailable", False)
    http_server.start()  # same port, new process, no session: the hub reopens
    assert await hub.call("own.pid", {}) != first_pid


async def test_a_slow_call_times_out_retryably(http_server: McpHttpServer) -> None:
    hub = McpHub([http_config(http_server, timeout_s=0.3, start_timeout_s=30)])
    try:
        with pytest.raises(ToolFailed, match=r"timed out after 0\.3 s") as err:
            await hub.call("own.sleep", {"seconds": 5})
        assert err.value.retryable is True
        assert await hub.call("own.add", {"a": 1, "b": 1}) == {"result": 2}
    finally:
        await hub.aclose()


async def test_a_server_that_cannot_start_is_unavailable() -> None:
    hub = McpHub([time_server(command="/nonexistent/mcp-server")])
    try:
        specs, problems = await hub.list_tools()
        assert specs == []
        assert "cannot open MCP server 'time'" in problems["time"]
        with pytest.raises(ToolFailed) as err:
            await hub.call("time.get_current_time", {"timezone": "UTC"})
        assert err.value.retryable is True
    finally:
        await hub.aclose()


async def test_stdio_servers_get_the_configured_environment_and_no_secrets(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("OPENAI_API_KEY", "sk-secret")
    monkeypatch.setenv("DATABASE_URL", "postgresql://secret")
    hub = McpHub([own_stdio_server(env={"PYTHONPATH": str(ROOT), "GREETING": "hi"})])
    try:
        names = set((await hub.call("ownio.env_names", {}))["result"])
    finally:
        await hub.aclose()
    # Python itself may add LC_CTYPE (locale coercion); the MCP SDK adds a few harmless
    # inherited variables. Secrets never pass.
    harmless = {"LC_CTYPE", "USER", "SHELL", "TERM", "LOGNAME"}
    assert names - harmless == {"PATH", "HOME", "PYTHONPATH", "GREETING"}
    assert not names & {"OPENAI_API_KEY", "DATABASE_URL"}


async def test_closing_the_hub_stops_its_stdio_servers() -> None:
    hub = McpHub([time_server()])
    await hub.call("time.get_current_time", {"timezone": "UTC"})
    assert len(children("mcp-server-time")) == 1
    await hub.aclose()
    assert children("mcp-server-time") == []
    with pytest.raises(ToolFailed) as err:
        await hub.call("time.get_current_time", {"timezone": "UTC"})
    assert err.value.retryable is True
