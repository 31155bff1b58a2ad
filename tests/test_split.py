"""Splitting a prompt with a (scripted, HTTP-level) OpenAI-compatible server."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from temporalio.client import Client

from models.io import TaskInput, TaskResult
from models.task import Status
from runtime.settings import Settings
from runtime.store import Store
from testkit.fake_llm import FakeLLM, Scripted
from tests.conftest import make_settings, temporal_address
from tests.helpers import by_step, outcome, start_task
from worker import Deps, build_workers

GOOD_PLAN = {"title": "greet", "steps": [
    {"id": "hello", "type": "tool", "tool": "echo", "args": {"value": "hello"}},
    {"id": "world", "type": "tool", "tool": "concat", "deps": ["hello"],
     "args": {"parts": ["${hello}", " world"]}},
]}


async def split(
    client: Client, settings: Settings, prompt: str = "greet the world"
) -> TaskResult:
    return await outcome(await start_task(client, settings, TaskInput(prompt=prompt)))


async def test_plan_in_prose_and_fences_runs_to_completion(
    client: Client, worker: Settings, llm: FakeLLM, deps: Deps
) -> None:
    llm.script("Here you go:\n```json\n" + json.dumps(GOOD_PLAN) + "\n```\nEnjoy!")
    result = await split(client, worker)
    assert result.status is Status.COMPLETED, result.error
    assert by_step(result)["world"].output == "hello world"
    body = llm.requests[0]["body"]
    assert body["model"] == "fake-model"
    assert body["response_format"]["type"] == "json_schema"
    assert result.metrics.prompt_tokens == 11
    assert result.metrics.completion_tokens == 7
    usage = await deps.pool.fetch("SELECT * FROM usage WHERE task_id = $1", result.task_id)
    assert [(u["prompt_tokens"], u["completion_tokens"]) for u in usage] == [(11, 7)]


async def test_cyclic_plan_is_repaired_in_one_round_trip(
    client: Client, worker: Settings, llm: FakeLLM
) -> None:
    cyclic = {"steps": [
        {"id": "a", "type": "tool", "tool": "echo", "deps": ["b"], "args": {"value": 1}},
        {"id": "b", "type": "tool", "tool": "echo", "deps": ["a"], "args": {"value": 2}},
    ]}
    llm.script(json.dumps(cyclic), json.dumps(GOOD_PLAN))
    result = await split(client, worker)
    assert result.status is Status.COMPLETED, result.error
    assert len(llm.requests) == 2
    repair = llm.requests[1]["body"]["messages"][-1]["content"]
    assert "dependency cycle" in repair


@pytest.mark.parametrize(("bad", "expected"), [
    ({"steps": [{"id": "a", "type": "write", "deps": ["a"]}]}, "depends on itself"),
    ({"steps": [{"id": "a", "type": "write", "deps": ["zz"]}]}, "unknown step 'zz'"),
    ({"steps": [{"id": "a", "type": "write"}, {"id": "a", "type": "write"}]},
     "used more than once"),
    ({"steps": [{"id": f"s{i}", "type": "write"} for i in range(60)]}, "more than the cap"),
    ({"steps": [{"id": "a", "type": "tool", "tool": "nope"}]}, "unknown tool 'nope'"),
    ("no json here at all", "no JSON"),
])
async def test_plan_still_invalid_after_repair_fails_the_task_and_keeps_the_output(
    client: Client, worker: Settings, llm: FakeLLM, deps: Deps, bad: object, expected: str
) -> None:
    text = bad if isinstance(bad, str) else json.dumps(bad)
    llm.script(text, text)
    result = await split(client, worker)
    assert result.status is Status.FAILED
    assert result.error
    assert "InvalidPlan" in result.error
    assert expected in result.error
    assert len(llm.requests) == 2  # one repair round trip, not retried by Temporal
    rows = await deps.pool.fetch(
        "SELECT raw_output, valid FROM llm_outputs WHERE task_id = $1", result.task_id)
    assert [r["raw_output"] for r in rows] == [text, text]
    assert not any(r["valid"] for r in rows)
    assert (await Store(deps.pool).get_task(result.task_id))["status"] == "FAILED"


async def test_server_refusing_json_schema_falls_back_to_json_object(
    client: Client, worker: Settings, llm: FakeLLM
) -> None:
    llm.refuse_json_schema = True
    llm.script(json.dumps(GOOD_PLAN))
    result = await split(client, worker)
    assert result.status is Status.COMPLETED, result.error
    formats = [r["body"].get("response_format", {}).get("type") for r in llm.requests]
    assert formats == ["json_schema", "json_object"]


async def test_transient_server_errors_are_retried_by_temporal(
    client: Client, worker: Settings, llm: FakeLLM
) -> None:
    llm.script(Scripted(status=503, error="overloaded"), json.dumps(GOOD_PLAN))
    result = await split(client, worker)
    assert result.status is Status.COMPLETED, result.error
    assert len(llm.requests) == 2


async def test_rejected_request_fails_without_retry(
    client: Client, worker: Settings, llm: FakeLLM
) -> None:
    llm.script(Scripted(status=401, error="bad key"))
    result = await split(client, worker)
    assert result.status is Status.FAILED
    assert result.error
    assert "LLMRequestRejected" in result.error
    assert "401" in result.error
    assert len(llm.requests) == 1


async def test_worker_without_llm_says_how_to_configure_one(
    client: Client, deps: Deps, database_url: str, tmp_path: Path, llm: FakeLLM
) -> None:
    settings = make_settings(tmp_path, database_url, llm.base_url, temporal_address(client))
    no_llm = Deps(pool=deps.pool, store=deps.store, registry=deps.registry, llm=None,
                  sandbox=deps.sandbox, sandbox_problem=deps.sandbox_problem)
    async with build_workers(client, settings, no_llm)[0]:
        result = await split(client, settings)
    assert result.status is Status.FAILED
    assert result.error
    assert "OPENAI_BASE_URL" in result.error
    assert "--plan" in result.error
    assert llm.requests == []
