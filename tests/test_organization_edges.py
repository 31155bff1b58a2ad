"""The organization at its edges: cancellation, replans, reruns and races.

Each test reproduces a defect a review found before it was fixed.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from pathlib import Path
from typing import Any

import pytest
from temporalio.client import Client, WorkflowHandle, WorkflowUpdateFailedError
from temporalio.service import RPCError

from models.io import TaskInput, TaskResult
from models.review import Action, Decision, ResolveEscalation, ReviewInput
from models.task import Status
from runtime.settings import Settings
from runtime.store import Store
from testkit.fake_llm import FakeLLM, Scripted
from tests.conftest import org_workers
from tests.helpers import by_step, outcome, plan_of, start_task
from tests.test_organization import wait_for_status
from worker import Deps


@pytest.fixture(autouse=True)
async def _fresh_slots(deps: Deps) -> None:
    # Agents' slots are global to the database: start each test with every agent free.
    await deps.pool.execute("UPDATE assignments SET state = 'done' WHERE state <> 'done'")


async def held(deps: Deps, task_id: str) -> list[dict[str, Any]]:
    return [dict(r) for r in await deps.pool.fetch(
        "SELECT subtask_id, state FROM assignments WHERE task_id = $1 AND state <> 'done'",
        task_id)]


async def approve_all(client: Client, deps: Deps, task_id: str) -> None:
    while True:
        for r in await deps.pool.fetch(
                "SELECT id, reviewer FROM subtasks WHERE id LIKE $1 AND status = 'REVIEWING'",
                f"{task_id}/%"):
            with contextlib.suppress(WorkflowUpdateFailedError, RPCError):
                await client.get_workflow_handle(r["id"]).execute_update(
                    "review", ReviewInput(reviewer_id=r["reviewer"], decision=Decision.APPROVE))
        await asyncio.sleep(0.2)


async def approving_all(client: Client, deps: Deps, h: WorkflowHandle[Any, Any],
                        seconds: float) -> TaskResult:
    """The task's outcome, every review beneath it approved as it comes."""
    bot = asyncio.create_task(approve_all(client, deps, h.id))
    try:
        return await asyncio.wait_for(outcome(h), seconds)
    finally:
        bot.cancel()


async def start_running_and_queued(client: Client, settings: Settings, deps: Deps,
                                   task_id: str | None = None) -> WorkflowHandle[Any, Any]:
    """Start a long and a short step for the writer; return once one holds the writer's
    slot running and the other waits queued for it."""
    h = await start_task(client, settings, TaskInput(plan=plan_of(
        {"id": "a", "type": "tool", "tool": "sleep", "args": {"seconds": 20},
         "assignee": "writer"},
        {"id": "b", "type": "tool", "tool": "sleep", "args": {"seconds": 1},
         "assignee": "writer"}), assignee="research-lead"), task_id=task_id)
    for _ in range(100):
        if {r["state"] for r in await held(deps, h.id)} == {"running", "queued"}:
            break
        await asyncio.sleep(0.1)
    assert {r["state"] for r in await held(deps, h.id)} == {"running", "queued"}
    return h


async def start_blocked_on_the_writer(client: Client, settings: Settings, deps: Deps
                                      ) -> tuple[WorkflowHandle[Any, Any], str]:
    """Start a step that fails for the writer; return its task and subtask id once it is
    escalated (BLOCKED)."""
    h = await start_task(client, settings, TaskInput(plan=plan_of(
        {"id": "f", "type": "tool", "tool": "fail", "args": {"message": "down"},
         "assignee": "writer"}), assignee="research-lead"))
    sub = f"{h.id}/f"
    await wait_for_status(Store(deps.pool), sub, "BLOCKED")
    return h, sub


async def test_cancelling_a_task_frees_running_and_queued_slots(
    client: Client, deps: Deps, database_url: str, llm: FakeLLM, tmp_path: Path
) -> None:
    async with org_workers(client, deps, database_url, llm, tmp_path) as s:
        h = await start_running_and_queued(client, s, deps)
        await h.cancel()
        result = await asyncio.wait_for(outcome(h), 30)
        assert result.status is Status.CANCELLED
        for _ in range(50):
            if not await held(deps, h.id):
                break
            await asyncio.sleep(0.1)
        assert await held(deps, h.id) == []


async def test_replan_after_too_many_rejections_hands_on_the_new_output(
    client: Client, deps: Deps, database_url: str, llm: FakeLLM, tmp_path: Path
) -> None:
    async with org_workers(client, deps, database_url, llm, tmp_path, review_rounds=0) as s:
        h = await start_task(client, s, TaskInput(plan=plan_of(
            {"id": "n", "type": "tool", "tool": "echo", "args": {"value": "OLD"},
             "assignee": "writer"},
            {"id": "use", "type": "tool", "tool": "concat", "deps": ["n"],
             "args": {"parts": ["got ", "${n}"]}, "assignee": "writer"}),
            assignee="research-lead"))
        sub = f"{h.id}/n"
        store = Store(deps.pool)
        await wait_for_status(store, sub, "REVIEWING")
        await client.get_workflow_handle(sub).execute_update("review", ReviewInput(
            reviewer_id="research-lead", decision=Decision.REJECT, feedback="wrong"))
        await wait_for_status(store, sub, "BLOCKED")
        await client.get_workflow_handle(sub).execute_update(
            "resolve_escalation", ResolveEscalation(
                by="research-lead", action=Action.REPLAN,
                plan={"steps": [{"id": "x", "type": "tool", "tool": "echo",
                                 "args": {"value": "NEW"}}]}))
        result = await approving_all(client, deps, h, 30)
    assert result.status is Status.COMPLETED, result.error
    assert by_step(result)["n"].output == "NEW"
    assert by_step(result)["use"].output == "got NEW"


async def test_every_round_of_rework_has_its_usage_recorded(
    client: Client, deps: Deps, database_url: str, llm: FakeLLM, tmp_path: Path
) -> None:
    llm.script_for("Result (round 2)", json.dumps({"decision": "approve"}))
    llm.script_for("review a teammate", json.dumps(
        {"decision": "reject", "feedback": "cite more sources"}))
    llm.script_for("more sources", Scripted("Found three sources.", prompt_tokens=1000))
    llm.script_for("find sources", Scripted("Found one source.", prompt_tokens=100))
    async with org_workers(client, deps, database_url, llm, tmp_path, human=False) as s:
        result = await outcome(await start_task(client, s, TaskInput(
            plan=plan_of({"id": "hunt", "type": "search", "description": "find sources",
                          "assignee": "searcher"}), assignee="research-lead")))
    assert result.status is Status.COMPLETED, result.error
    rows = await deps.pool.fetch(
        "SELECT purpose, prompt_tokens FROM usage WHERE task_id = $1", result.task_id)
    assert sorted(r["prompt_tokens"] for r in rows if r["purpose"] == "agent") == [100, 1000]
    assert result.metrics.prompt_tokens == sum(r["prompt_tokens"] for r in rows)


async def test_cancelling_a_task_closes_its_open_escalation(
    client: Client, deps: Deps, database_url: str, llm: FakeLLM, tmp_path: Path
) -> None:
    async with org_workers(client, deps, database_url, llm, tmp_path) as s:
        h, sub = await start_blocked_on_the_writer(client, s, deps)
        await h.cancel()
        result = await asyncio.wait_for(outcome(h), 30)
    assert result.status is Status.CANCELLED
    store = Store(deps.pool)
    escalations = [e for e in await store.escalations(only_open=False)
                   if e["subtask_id"] == sub]
    assert [e["status"] for e in escalations] == ["cancelled"]


async def test_tokens_of_delegated_work_count_in_the_top_task(
    client: Client, deps: Deps, database_url: str, llm: FakeLLM, tmp_path: Path
) -> None:
    llm.script_for("delegate me", Scripted(json.dumps({"steps": [
        {"id": "d", "type": "write", "description": "inner draft", "assignee": "writer",
         "skills": ["writing"]}]}), prompt_tokens=500))
    llm.script_for("inner draft", Scripted("drafted", prompt_tokens=700))
    async with org_workers(client, deps, database_url, llm, tmp_path) as s:
        h = await start_task(client, s, TaskInput(plan=plan_of(
            {"id": "m", "type": "write", "title": "delegate me", "description": "delegate me",
             "assignee": "research-lead"}), assignee="ceo"))
        result = await approving_all(client, deps, h, 40)
    assert result.status is Status.COMPLETED, result.error
    assert result.metrics.prompt_tokens == 1200


async def test_a_person_answering_while_the_model_decides_wins_and_is_not_reused(
    client: Client, deps: Deps, database_url: str, llm: FakeLLM, tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    real = llm._answer

    def slow(path: str, body: dict[str, Any]) -> Any:
        if "# Trouble" in json.dumps(body):
            time.sleep(3)  # the manager's model takes its time
        return real(path, body)

    monkeypatch.setattr(llm, "_answer", slow)
    llm.script_for("# Trouble", json.dumps({"action": "retry"}))
    async with org_workers(client, deps, database_url, llm, tmp_path, human=False) as s:
        h, sub = await start_blocked_on_the_writer(client, s, deps)
        store = Store(deps.pool)
        await client.get_workflow_handle(sub).execute_update(
            "resolve_escalation", ResolveEscalation(by="ceo", action=Action.SKIP,
                                                    note="ceo says skip"))
        result = await asyncio.wait_for(outcome(h), 20)
    assert result.status is Status.FAILED
    assert "skipped by ceo" in (by_step(result)["f"].error or "")
    decisions = [(e["decision"] or {}).get("action")
                 for e in await store.escalations(only_open=False) if e["subtask_id"] == sub]
    assert decisions == ["skip"]


async def test_reassigning_to_an_unknown_agent_is_refused_and_a_real_one_is_used(
    client: Client, deps: Deps, database_url: str, llm: FakeLLM, tmp_path: Path
) -> None:
    async with org_workers(client, deps, database_url, llm, tmp_path) as s:
        h, sub = await start_blocked_on_the_writer(client, s, deps)
        store = Store(deps.pool)
        child = client.get_workflow_handle(sub)
        with pytest.raises(WorkflowUpdateFailedError) as refused:
            await child.execute_update("resolve_escalation", ResolveEscalation(
                by="research-lead", action=Action.REASSIGN, assignee="nobody"))
        assert "not an active agent" in str(refused.value.cause)
        await child.execute_update("resolve_escalation", ResolveEscalation(
            by="research-lead", action=Action.REASSIGN, assignee="searcher"))
        # The searcher fails too; the second escalation is skipped.
        for _ in range(100):
            opened = [e for e in await store.escalations() if e["subtask_id"] == sub]
            if opened and opened[0]["id"].endswith("#2"):
                break
            await asyncio.sleep(0.1)
        await child.execute_update("resolve_escalation", ResolveEscalation(
            by="research-lead", action=Action.SKIP))
        result = await asyncio.wait_for(outcome(h), 20)
    assert result.status is Status.FAILED
    agents = [r["agent_id"] for r in await deps.pool.fetch(
        "SELECT agent_id FROM assignments WHERE task_id = $1 ORDER BY created_at", h.id)]
    assert agents == ["writer", "searcher"]
