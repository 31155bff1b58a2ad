"""The organization end to end: delegation down the chart, review rounds, escalation, replan.

Everything is real (Temporal dev server, PostgreSQL, sandbox, MCP-less tools) except the
LLM, which is scripted at its HTTP boundary. Reviews and escalation decisions are sent as
Temporal updates, as a person would from the CLI or the Web UI.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from temporalio.client import Client, WorkflowHandle, WorkflowUpdateFailedError
from temporalio.service import RPCError

from models.io import TaskInput
from models.review import Action, Decision, ResolveEscalation, ReviewInput
from models.task import Status
from runtime.documents import load_org
from runtime.org_store import OrgStore
from runtime.settings import Settings
from runtime.store import Store
from testkit.fake_llm import FakeLLM, Scripted
from tests.conftest import ROOT, make_settings, temporal_address
from tests.helpers import by_step, outcome, plan_of, start_task
from tests.test_cli import cli
from worker import Deps, build_workers


def plan(*steps: dict[str, Any]) -> str:
    return json.dumps({"steps": list(steps)})


async def referee(client: Client, store: Store, task_id: str, *,
                  reject_once: str, replan: dict[str, Any], log: list[str]) -> None:
    """Play every human: approve reviews (reject `reject_once` the first time), and answer
    escalations with `replan`."""
    rejected = False
    while True:
        rows = await store.pool.fetch(
            "SELECT id, reviewer FROM subtasks WHERE id LIKE $1 AND status = 'REVIEWING'",
            f"{task_id}/%")
        for r in rows:
            step = r["id"].rsplit("/", 1)[-1]
            reject = step == reject_once and not rejected
            verdict = ReviewInput(
                reviewer_id=r["reviewer"],
                decision=Decision.REJECT if reject else Decision.APPROVE,
                feedback="add the numbers" if reject else "")
            with contextlib.suppress(WorkflowUpdateFailedError, RPCError):
                await client.get_workflow_handle(r["id"]).execute_update("review", verdict)
                rejected = rejected or reject
                log.append(f"{verdict.decision.value} {r['id']} by {r['reviewer']}")
        for e in await store.escalations():
            if not e["subtask_id"].startswith(task_id + "/"):
                continue
            decision = ResolveEscalation(by=e["holder"], action=Action.REPLAN, plan=replan,
                                         note="use the backup source")
            with contextlib.suppress(WorkflowUpdateFailedError, RPCError):
                await client.get_workflow_handle(e["subtask_id"]).execute_update(
                    "resolve_escalation", decision)
                log.append(f"replan {e['subtask_id']} by {e['holder']}")
        await asyncio.sleep(0.2)


# What the manager answers an escalation with: find the facts elsewhere.
BACKUP = {"steps": [{"id": "backup", "type": "tool", "tool": "echo",
                     "args": {"value": "facts from the backup"}}]}


def delegation(llm: FakeLLM) -> TaskInput:
    """Script the model for a task split down the example org two levels deep: the numbers
    to eng-lead then data-eng, the facts to research-lead then a lookup that fails, the
    report drafted by the writer (and reworked after "add the numbers"). Return the task."""
    llm.script_for("Compare the numbers with the facts", Scripted(plan(
        {"id": "analysis", "type": "write", "title": "Crunch the numbers",
         "description": "numbers work", "skills": ["python", "data"],
         "assignee": "eng-lead"},
        {"id": "facts", "type": "search", "title": "Gather facts", "description": "facts work",
         "skills": ["search"], "assignee": "research-lead"},
        {"id": "report", "type": "write", "title": "Write the report",
         "description": "report work", "deps": ["analysis", "facts"],
         "skills": ["writing"], "assignee": "research-lead"})))
    llm.script_for("numbers work", Scripted(plan(
        {"id": "crunch", "type": "code", "code": "print(sum(range(10)))",
         "skills": ["data"], "assignee": "data-eng"})))
    llm.script_for("facts work", Scripted(plan(
        {"id": "lookup", "type": "tool", "tool": "fail", "args": {"message": "source down"},
         "skills": ["search"], "assignee": "searcher"})))
    llm.script_for("report work", Scripted(plan(
        {"id": "draft", "type": "write", "description": "draft it", "skills": ["writing"],
         "assignee": "writer"})))
    llm.script_for("add the numbers", "Report v2: the sum is 45.")
    llm.script_for("draft it", "Report v1.")
    return TaskInput(prompt="Compare the numbers with the facts and report", creator="alice")


async def test_delegation_review_and_escalation_through_the_example_org(
    client: Client, org_worker: Settings, llm: FakeLLM, deps: Deps, database_url: str
) -> None:
    store = Store(deps.pool)
    handle = await start_task(client, org_worker, delegation(llm))
    log: list[str] = []
    bot = asyncio.create_task(referee(client, store, handle.id, reject_once="draft",
                                      replan=BACKUP, log=log))
    try:
        result = await asyncio.wait_for(outcome(handle), timeout=90)
    finally:
        bot.cancel()
    assert result.status is Status.COMPLETED, (result.error, log)
    t = handle.id
    steps = by_step(result)
    assert steps["report"].output == "Report v2: the sum is 45."

    # Delegation two levels deep: the root's step went to a manager, whose own split
    # gave the work to a worker.
    rows = {r["id"]: r for r in await deps.pool.fetch(
        "SELECT id, status, assignee, reviewer FROM subtasks WHERE id LIKE $1", f"{t}/%")}
    assert rows[f"{t}/analysis"]["assignee"] == "eng-lead"
    assert rows[f"{t}/analysis/sub1/crunch"]["assignee"] == "data-eng"
    assert rows[f"{t}/analysis/sub1/crunch"]["reviewer"] == "eng-lead"
    assert rows[f"{t}/report/sub1/draft"]["assignee"] == "writer"
    nested = await deps.pool.fetch(
        "SELECT id, parent_subtask, assignee FROM tasks WHERE id LIKE $1", f"{t}/%")
    assert {r["id"]: r["parent_subtask"] for r in nested}[f"{t}/analysis/sub1"] == \
        f"{t}/analysis"
    assert all(r["status"] == "COMPLETED" for r in rows.values()), rows

    # A reviewer rejected the draft once and approved the rework.
    assert f"reject {t}/report/sub1/draft by research-lead" in log
    events = await store.events(t)  # events of the top task only
    assert events is not None
    draft_events = [e["kind"] for e in await deps.pool.fetch(
        "SELECT kind FROM events WHERE subtask_id = $1 ORDER BY created_at",
        f"{t}/report/sub1/draft")]
    assert draft_events.count("review_reject") == 1
    assert draft_events.count("review_approve") == 1

    # The failing lookup escalated to its manager, was replanned, and completed.
    escalations = await store.escalations(only_open=False)
    mine = [e for e in escalations if e["subtask_id"] == f"{t}/facts/sub1/lookup"]
    assert len(mine) == 1
    assert mine[0]["holder"] == "research-lead"
    assert mine[0]["status"] == "resolved"
    assert mine[0]["decision"]["action"] == "replan"
    assert rows[f"{t}/facts/sub1/lookup"]["status"] == "COMPLETED"
    assert await store.get_output(f"{t}/facts/sub1/lookup") == "facts from the backup"

    # The research manager sees everything beneath it, and the reports sent to it.
    rc, out, err = await cli("beneath", "research-lead", "--all", "--json",
                             settings=org_worker, database_url=database_url)
    assert rc == 0, err
    view = json.loads(out)
    team_work = {w["id"]: w["assignee"] for w in view["work"] if w["id"].startswith(t)}
    assert team_work[f"{t}/report/sub1/draft"] == "writer"
    assert team_work[f"{t}/facts/sub1/lookup"] == "searcher"
    assert any(r["subtask_id"] == f"{t}/report/sub1/draft" for r in view["reports"])


async def wait_for_status(store: Store, sub_id: str, status: str) -> None:
    for _ in range(200):
        row = await store.pool.fetchrow("SELECT status FROM subtasks WHERE id = $1", sub_id)
        if row and row["status"] == status:
            return
        await asyncio.sleep(0.1)
    raise AssertionError(f"{sub_id} never reached {status}")


async def test_review_by_anyone_but_the_assigned_reviewer_is_refused_before_history(
    client: Client, org_worker: Settings, llm: FakeLLM, deps: Deps
) -> None:
    llm.script_for("draft a note", "A note.")
    handle = await start_task(client, org_worker, TaskInput(plan=plan_of(
        {"id": "note", "type": "write", "description": "draft a note", "assignee": "writer"}),
        assignee="research-lead"))
    sub = f"{handle.id}/note"
    await wait_for_status(Store(deps.pool), sub, "REVIEWING")
    child = client.get_workflow_handle(sub)
    with pytest.raises(WorkflowUpdateFailedError) as refused:
        await child.execute_update("review", ReviewInput(
            reviewer_id="ceo", decision=Decision.APPROVE))
    assert "only research-lead may review" in str(refused.value.cause)
    with pytest.raises(WorkflowUpdateFailedError):
        await child.execute_update("review", {"reviewer_id": "research-lead",
                                              "decision": "maybe"})
    history = await child.fetch_history()
    assert not any(e.workflow_execution_update_accepted_event_attributes.accepted_request_message_id
                   for e in history.events)
    await child.execute_update("review", ReviewInput(
        reviewer_id="research-lead", decision=Decision.APPROVE))
    result = await outcome(handle)
    assert result.status is Status.COMPLETED, result.error


async def test_manager_with_llm_policy_reviews_with_its_model(
    client: Client, deps: Deps, database_url: str, llm: FakeLLM, tmp_path: Path
) -> None:
    await OrgStore(deps.pool).save_org(load_org(ROOT / "examples" / "org.yaml"))
    settings = make_settings(tmp_path, database_url, llm.base_url, temporal_address(client),
                             org_enabled=True)
    llm.script_for("Result (round 2)", json.dumps({"decision": "approve"}))
    llm.script_for("review a teammate", json.dumps(
        {"decision": "reject", "feedback": "cite more sources"}))
    llm.script_for("more sources", "Found three sources.")
    llm.script_for("find sources", "Found one source.")
    async with contextlib.AsyncExitStack() as stack:
        for w in build_workers(client, settings, deps):
            await stack.enter_async_context(w)
        result = await outcome(await start_task(client, settings, TaskInput(
            plan=plan_of({"id": "hunt", "type": "search", "description": "find sources",
                                "assignee": "searcher"}),
            assignee="research-lead")))
    assert result.status is Status.COMPLETED, result.error
    assert by_step(result)["hunt"].output == "Found three sources."
    kinds = [r["kind"] for r in await deps.pool.fetch(
        "SELECT kind FROM events WHERE subtask_id = $1 ORDER BY created_at",
        f"{result.task_id}/hunt")]
    assert kinds.count("review_reject") == 1
    assert kinds.count("review_approve") == 1


async def start_two_for_the_writer(client: Client, settings: Settings, store: Store,
                                   task_id: str | None = None) -> WorkflowHandle[Any, Any]:
    """Start two one-second steps for the writer; return once one waits queued for it."""
    handle = await start_task(client, settings, TaskInput(plan=plan_of(
        {"id": "a", "type": "tool", "tool": "sleep", "args": {"seconds": 1},
         "assignee": "writer"},
        {"id": "b", "type": "tool", "tool": "sleep", "args": {"seconds": 1},
         "assignee": "writer"}), assignee="research-lead"), task_id=task_id)
    seen_queued = False
    for _ in range(100):
        rows = await store.pool.fetch(
            "SELECT status, waiting_for FROM subtasks WHERE task_id = $1", handle.id)
        if any(r["status"] == "QUEUED" and "writer" in (r["waiting_for"] or "") for r in rows):
            seen_queued = True
            break
        await asyncio.sleep(0.05)
    assert seen_queued
    return handle


async def test_work_waits_queued_until_its_agent_has_room(
    client: Client, org_worker: Settings, llm: FakeLLM, deps: Deps
) -> None:
    # The writer has capacity 1: two notes for the writer run one after the other.
    store = Store(deps.pool)
    handle = await start_two_for_the_writer(client, org_worker, store)
    # Reviews by research-lead (human) are approved as they come.
    bot = asyncio.create_task(referee(client, store, handle.id, reject_once="",
                                      replan={"steps": []}, log=[]))
    try:
        result = await asyncio.wait_for(outcome(handle), timeout=30)
    finally:
        bot.cancel()
    assert result.status is Status.COMPLETED, result.error
    spans = await store.pool.fetch(
        "SELECT started_at, finished_at FROM assignments WHERE task_id = $1 "
        "AND agent_id = 'writer' ORDER BY started_at", handle.id)
    assert len(spans) == 2
    assert spans[0]["finished_at"] <= spans[1]["started_at"]  # never two at once


async def test_step_past_its_deadline_escalates_and_the_manager_skips_it(
    client: Client, org_worker: Settings, deps: Deps
) -> None:
    soon = (datetime.now(UTC) + timedelta(seconds=2)).isoformat()
    handle = await start_task(client, org_worker, TaskInput(plan=plan_of(
        {"id": "slow", "type": "tool", "tool": "sleep", "args": {"seconds": 60},
         "assignee": "writer", "deadline": soon},
        {"id": "after", "type": "tool", "tool": "echo", "deps": ["slow"],
         "args": {"value": 1}}), assignee="research-lead"))
    sub = f"{handle.id}/slow"
    store = Store(deps.pool)
    await wait_for_status(store, sub, "BLOCKED")
    [esc] = [e for e in await store.escalations() if e["subtask_id"] == sub]
    assert esc["reason"] == "deadline"
    assert esc["holder"] == "research-lead"
    waiting = await store.pool.fetchval("SELECT waiting_for FROM subtasks WHERE id = $1", sub)
    assert "research-lead" in waiting
    await client.get_workflow_handle(sub).execute_update("resolve_escalation", ResolveEscalation(
        by="research-lead", action=Action.SKIP, note="too late to matter"))
    result = await asyncio.wait_for(outcome(handle), timeout=20)
    assert result.status is Status.FAILED
    steps = by_step(result)
    assert "skipped by research-lead" in (steps["slow"].error or "")
    assert steps["after"].status is Status.BLOCKED
    # The skipped step gave its slot back.
    free = await store.pool.fetchval(
        "SELECT count(*) FROM assignments WHERE task_id = $1 AND state = 'running'", handle.id)
    assert free == 0
