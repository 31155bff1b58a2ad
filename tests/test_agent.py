"""The agent engine against a scripted OpenAI-compatible server: tools, budgets, code."""

from __future__ import annotations

import contextlib
import dataclasses
import json
import logging
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio
from temporalio.api.enums.v1 import EventType
from temporalio.client import Client

from models.io import TaskInput
from models.task import Status
from models.usage import Price
from runtime.settings import Settings
from runtime.store import Store
from runtime.tools.toolbox import open_toolbox
from testkit.fake_llm import FakeLLM, Scripted
from tests.conftest import make_settings, temporal_address, tool_registry_for_tests
from tests.helpers import by_step, outcome, plan_of, start_task
from tests.test_mcp import TIME_SERVER
from worker import Deps, build_workers


def call(name: str, args: dict[str, Any], call_id: str = "call_1") -> dict[str, Any]:
    return {"id": call_id, "type": "function",
            "function": {"name": name, "arguments": json.dumps(args)}}


@pytest_asyncio.fixture
async def priced_worker(
    client: Client, deps: Deps, database_url: str, llm: FakeLLM, tmp_path: Path
) -> AsyncIterator[Settings]:
    """A worker that prices fake-model at $1 / $2 per 1k prompt / completion tokens."""
    settings = make_settings(tmp_path, database_url, llm.base_url, temporal_address(client))
    priced = dataclasses.replace(deps, prices={"fake-model": Price(input=1000, output=2000)})
    async with contextlib.AsyncExitStack() as stack:
        for w in build_workers(client, settings, priced):
            await stack.enter_async_context(w)
        yield settings


async def test_agent_calls_tools_then_answers_and_accounts_for_every_token(
    client: Client, priced_worker: Settings, llm: FakeLLM, deps: Deps
) -> None:
    llm.script(
        Scripted(tool_calls=[call("echo", {"value": "pong"}),
                             call("concat", {"parts": ["a", "b"]}, "call_2")],
                 prompt_tokens=100, completion_tokens=20),
        Scripted("The answer is pong ab.", prompt_tokens=150, completion_tokens=30),
    )
    result = await outcome(await start_task(client, priced_worker, TaskInput(plan=plan_of(
        {"id": "w", "type": "write", "title": "Play ping", "description": "ask echo"}))))
    assert result.status is Status.COMPLETED, result.error
    assert by_step(result)["w"].output == "The answer is pong ab."
    # The second request carries both tool results back to the model.
    second = llm.requests[1]["body"]["messages"]
    tool_msgs = {m["tool_call_id"]: m["content"] for m in second if m["role"] == "tool"}
    assert tool_msgs == {"call_1": "pong", "call_2": "ab"}
    offered = {t["function"]["name"] for t in llm.requests[0]["body"]["tools"]}
    assert {"echo", "concat", "sleep"} <= offered
    # Tokens and cost in the result are exactly what the server reported.
    m = result.metrics
    assert (m.prompt_tokens, m.completion_tokens, m.tokens_used) == (250, 50, 300)
    assert m.cost_usd == pytest.approx((250 * 1000 + 50 * 2000) / 1e6)
    rows = await deps.pool.fetch("SELECT * FROM usage WHERE task_id = $1", result.task_id)
    assert sum(r["prompt_tokens"] for r in rows) == 250
    assert len(rows) == 2
    transcript = await Store(deps.pool).get_messages(f"{result.task_id}/w")
    assert [t["role"] for t in transcript] == ["system", "user", "assistant", "tool", "tool",
                                              "assistant"]


async def test_bad_tool_calls_are_answered_with_errors_the_model_can_read(
    client: Client, worker: Settings, llm: FakeLLM
) -> None:
    llm.script(
        Scripted(tool_calls=[call("teleport", {}), call("sleep", {"seconds": "x"}, "c2"),
                             {"id": "c3", "type": "function",
                              "function": {"name": "echo", "arguments": "{not json"}}]),
        Scripted("gave up"),
    )
    result = await outcome(await start_task(client, worker, TaskInput(plan=plan_of(
        {"id": "w", "type": "search", "description": "try tools"}))))
    assert result.status is Status.COMPLETED, result.error
    msgs = {m["tool_call_id"]: m["content"] for m in llm.requests[1]["body"]["messages"]
            if m["role"] == "tool"}
    assert "teleport" in msgs["call_1"]
    assert "error" in msgs["call_1"]
    assert "seconds" in msgs["c2"]
    assert "not valid JSON" in msgs["c3"]


async def test_budget_too_low_stops_the_task_with_a_budget_error(
    client: Client, worker: Settings, llm: FakeLLM
) -> None:
    llm.default = Scripted(tool_calls=[call("echo", {"value": 1})], prompt_tokens=400,
                           completion_tokens=100)
    result = await outcome(await start_task(client, worker, TaskInput(
        token_budget=1000,
        plan=plan_of({"id": "a", "type": "write", "description": "loop forever"},
                     {"id": "b", "type": "write", "deps": ["a"]}))))
    assert result.status is Status.FAILED
    steps = by_step(result)
    assert "BudgetExceeded" in (steps["a"].error or "")
    assert "task token budget exceeded" in (steps["a"].error or "")
    assert steps["b"].status is Status.BLOCKED
    assert len(llm.requests) == 2  # the third call was never made
    assert result.metrics.tokens_used == 1000


async def test_code_written_by_the_model_is_fixed_after_its_error(
    client: Client, worker: Settings, llm: FakeLLM
) -> None:
    llm.script("```python\nprint(inputs['n'] / 0)\n```",
               "Here is the fix:\n```python\nprint(inputs['n'] * 2)\n```")
    result = await outcome(await start_task(client, worker, TaskInput(plan=plan_of(
        {"id": "n", "type": "tool", "tool": "echo", "args": {"value": 21}},
        {"id": "double", "type": "code", "deps": ["n"], "description": "double n"}))))
    assert result.status is Status.COMPLETED, result.error
    assert by_step(result)["double"].output == "42"
    feedback = llm.requests[1]["body"]["messages"][-1]["content"]
    assert "ZeroDivisionError" in feedback
    assert result.metrics.tokens_used == 36


async def test_finished_results_are_recalled_as_memories_by_later_agents(
    client: Client, worker: Settings, llm: FakeLLM
) -> None:
    llm.script("Zanzibar cloves are harvested in the dry season.")
    first = await outcome(await start_task(client, worker, TaskInput(plan=plan_of(
        {"id": "r", "type": "search", "title": "Clove harvest",
         "description": "When are Zanzibar cloves harvested?"}))))
    assert first.status is Status.COMPLETED, first.error
    llm.script("Dry season, as found before.")
    second = await outcome(await start_task(client, worker, TaskInput(plan=plan_of(
        {"id": "q", "type": "write", "title": "Brief on Zanzibar cloves",
         "description": "Write about the clove harvest"}))))
    assert second.status is Status.COMPLETED, second.error
    context = llm.requests[1]["body"]["messages"][1]["content"]
    assert "Related results from earlier work" in context
    assert "harvested in the dry season" in context


async def test_hundred_tool_calls_with_big_outputs_keep_history_small(
    client: Client, worker: Settings, llm: FakeLLM, deps: Deps
) -> None:
    turns, per_turn = 10, 10
    llm.script(*[Scripted(tool_calls=[call("big", {"size": 200_000}, f"c{t}-{i}")
                                      for i in range(per_turn)],
                          prompt_tokens=1, completion_tokens=1) for t in range(turns)])
    llm.script("done")
    handle = await start_task(client, worker, TaskInput(max_turns=turns + 1, plan=plan_of(
        {"id": "w", "type": "write", "description": "call big a hundred times"})))
    result = await outcome(handle)
    assert result.status is Status.COMPLETED, result.error
    history = await client.get_workflow_handle(f"{handle.id}/w").fetch_history()
    size = len(history.to_json())
    logging.getLogger(__name__).info("history: %d events, %d bytes", len(history.events), size)
    # 100 outputs of 200 kB (20 MB) went through; history holds previews and ids only.
    assert size < 3_000_000, size
    assert len(history.events) < 1_000, len(history.events)
    blobs = await deps.pool.fetchval("SELECT count(*) FROM blobs WHERE task_id = $1", handle.id)
    assert blobs == turns * per_turn
    # The model saw each output cut to fit its context, with a visible marker.
    last = llm.requests[-1]["body"]["messages"]
    tool_msgs = [m["content"] for m in last if m["role"] == "tool"]
    assert len(tool_msgs) == turns * per_turn
    assert all("tokens omitted" in m for m in tool_msgs)
    assert EventType.EVENT_TYPE_WORKFLOW_EXECUTION_COMPLETED in {
        e.event_type for e in history.events}


async def test_prompt_with_mcp_time_tool_and_model_written_code_completes_with_exact_usage(
    client: Client, deps: Deps, database_url: str, llm: FakeLLM, tmp_path: Path
) -> None:
    tools_file = tmp_path / "tools.yaml"
    tools_file.write_text(
        "tools:\n  - name: time\n    transport: stdio\n"
        f"    command: {TIME_SERVER}\n    args: [--local-timezone, UTC]\n")
    settings = make_settings(tmp_path, database_url, llm.base_url, temporal_address(client),
                             tools_file=tools_file)
    plan = {"steps": [
        {"id": "now", "type": "tool", "tool": "time.get_current_time",
         "args": {"timezone": "Europe/Paris"}},
        {"id": "report", "type": "code", "deps": ["now"],
         "description": "say which timezone the time is in"},
    ]}
    llm.script(Scripted(json.dumps(plan), prompt_tokens=120, completion_tokens=40),
               Scripted("```python\nprint('zone:', inputs['now']['timezone'])\n```",
                        prompt_tokens=200, completion_tokens=30))
    toolbox = await open_toolbox(tool_registry_for_tests(), tools_file)
    priced = dataclasses.replace(deps, registry=toolbox,
                                 prices={"fake-model": Price(input=3, output=15)})
    try:
        async with contextlib.AsyncExitStack() as stack:
            for w in build_workers(client, settings, priced):
                await stack.enter_async_context(w)
            result = await outcome(await start_task(client, settings, TaskInput(
                prompt="Tell me the time zone of the current time in Paris")))
    finally:
        await toolbox.aclose()
    assert result.status is Status.COMPLETED, result.error
    steps = by_step(result)
    assert steps["now"].output["timezone"] == "Europe/Paris"
    assert steps["report"].output == "zone: Europe/Paris"
    m = result.metrics
    assert (m.prompt_tokens, m.completion_tokens) == (320, 70)
    assert m.cost_usd == pytest.approx((320 * 3 + 70 * 15) / 1e6)


async def test_budget_too_low_for_the_split_stops_before_any_model_call(
    client: Client, worker: Settings, llm: FakeLLM
) -> None:
    llm.default = Scripted(json.dumps({"steps": [
        {"id": "w", "type": "write", "description": "anything"}]}))
    result = await outcome(await start_task(client, worker, TaskInput(
        prompt="do something", token_budget=50)))
    assert result.status is Status.FAILED
    assert "BudgetExceeded" in (result.error or "")
    assert llm.requests == []
