"""Decisions by people and models: signals beside updates, stale decisions, loops, deadlines.

Reviewers and managers decide with the `review` / `resolve_escalation` updates (an answer
back) or signals of the same name (durable while no worker runs, sendable from the
`temporal` CLI and the Web UI). A decision answers one review round or one escalation.
"""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import pytest
from temporalio.client import Client, WorkflowHandle, WorkflowUpdateFailedError
from temporalio.service import RPCError

from models.io import SubtaskView, TaskInput
from models.review import Action, Decision, ResolveEscalation, ReviewInput
from models.task import Status
from runtime.settings import Settings
from runtime.store import Store
from testkit.fake_llm import FakeLLM
from tests.conftest import org_workers
from tests.helpers import by_step, outcome, plan_of, start_task
from tests.test_organization import wait_for_status
from tests.test_organization_edges import _fresh_slots  # noqa: F401
from worker import Deps
from workflows import policies

DRAFT = {"id": "draft", "type": "tool", "tool": "echo", "args": {"value": "v"},
         "assignee": "writer"}


async def draft_in_review(client: Client, deps: Deps, settings: Settings
                          ) -> tuple[WorkflowHandle[Any, Any], str]:
    """Start a task whose one step waits for research-lead's review; return it and the step."""
    h = await start_task(client, settings, TaskInput(plan=plan_of(DRAFT),
                                                     assignee="research-lead"))
    sub = f"{h.id}/draft"
    await wait_for_status(Store(deps.pool), sub, "REVIEWING")
    return h, sub


async def view(client: Client, sub: str) -> SubtaskView:
    shown: SubtaskView = await client.get_workflow_handle(sub).query(
        "progress", result_type=SubtaskView)
    return shown


async def until(check: Any, what: str, within: float = 30.0) -> Any:
    """Poll `check()` until it returns something truthy; fail naming `what`."""
    loop = asyncio.get_running_loop()
    end = loop.time() + within
    while loop.time() < end:
        try:
            got = await check()
        except RPCError:  # the workflow asked about has not started yet
            got = None
        if got:
            return got
        await asyncio.sleep(0.1)
    raise AssertionError(f"never happened: {what}")


async def events(deps: Deps, sub: str, kind: str) -> list[dict[str, Any]]:
    rows = await deps.pool.fetch(
        "SELECT data FROM events WHERE subtask_id = $1 AND kind = $2 ORDER BY created_at",
        sub, kind)
    return [json.loads(r["data"]) if isinstance(r["data"], str) else dict(r["data"])
            for r in rows]


async def history_has_update(handle: WorkflowHandle[Any, Any]) -> bool:
    async for e in handle.fetch_history_events():
        if e.HasField("workflow_execution_update_accepted_event_attributes"):
            return True
    return False


async def test_review_signal_approves_and_bad_signals_are_refused_and_recorded(
    client: Client, deps: Deps, org_worker: Settings
) -> None:
    h, sub = await draft_in_review(client, deps, org_worker)
    child = client.get_workflow_handle(sub)
    shown = await view(client, sub)
    assert shown.status is Status.REVIEWING
    assert shown.waiting_for == "research-lead"
    assert shown.review_round == 1
    # Wrong reviewer, malformed payload, stale round: each changes nothing.
    await child.signal("review", {"reviewer_id": "ceo", "decision": "approve"})
    await child.signal("review", {"reviewer_id": "research-lead", "decision": "maybe"})
    await child.signal("review", {"reviewer_id": "research-lead", "decision": "approve",
                                  "round": 7})
    refusals = await until(
        lambda: _refusals(client, sub, 3), "three refusals in the step's query")
    assert "only research-lead may review" in refusals[0]
    assert "malformed verdict" in refusals[1]
    assert "decision" in refusals[1]
    assert "round 7" in refusals[2]
    assert "stale" in refusals[2]
    assert (await view(client, sub)).status is Status.REVIEWING
    recorded = await until(lambda: events(deps, sub, "signal_refused"),
                           "refusals in the events table")
    assert recorded[0]["signal"] == "review"
    # A good signal is applied, and the task completes.
    await child.signal("review", {"reviewer_id": "research-lead", "decision": "approve",
                                  "round": 1})
    result = await asyncio.wait_for(outcome(h), 30)
    assert result.status is Status.COMPLETED
    assert not await history_has_update(child)
    assert len(await events(deps, sub, "signal_refused")) == 3


async def _refusals(client: Client, sub: str, n: int) -> list[str] | None:
    got = (await view(client, sub)).refusals
    return got if len(got) >= n else None


async def test_a_review_signal_sent_while_no_worker_runs_is_applied_when_one_starts(
    client: Client, deps: Deps, database_url: str, llm: FakeLLM, tmp_path: Path
) -> None:
    async with org_workers(client, deps, database_url, llm, tmp_path) as s:
        h, sub = await draft_in_review(client, deps, s)
    # Every worker is gone (a deploy): the signal is still recorded by Temporal.
    await client.get_workflow_handle(sub).signal(
        "review", {"reviewer_id": "research-lead", "decision": "approve"})
    async with org_workers(client, deps, database_url, llm, tmp_path,
                           task_queue=s.task_queue):
        result = await asyncio.wait_for(outcome(h), 30)
    assert result.status is Status.COMPLETED


async def test_a_rejection_sent_twice_is_applied_once_and_the_second_is_stale(
    client: Client, deps: Deps, org_worker: Settings
) -> None:
    h, sub = await draft_in_review(client, deps, org_worker)
    child = client.get_workflow_handle(sub)
    reject = ReviewInput(reviewer_id="research-lead", decision=Decision.REJECT,
                         feedback="add the date", round=1)
    ack = await child.execute_update("review", reject)
    assert ack["round"] == 1
    # The rework's review (round 2) opens; the same rejection again is stale.
    await until(lambda: _round(client, sub, 2), "review round 2 open")
    with pytest.raises(WorkflowUpdateFailedError) as stale_update:
        await child.execute_update("review", reject)
    assert "no longer open" in str(stale_update.value.cause)
    await child.signal("review", reject.model_dump(mode="json"))
    await until(lambda: _refusals(client, sub, 1), "the stale signal refused")
    await child.execute_update("review", ReviewInput(
        reviewer_id="research-lead", decision=Decision.APPROVE, round=2))
    result = await asyncio.wait_for(outcome(h), 30)
    assert result.status is Status.COMPLETED
    # Two rounds of work, not three.
    assert [e["round"] for e in await events(deps, sub, "review_requested")] == [1, 2]


async def _round(client: Client, sub: str, n: int) -> bool:
    return (await view(client, sub)).review_round == n


async def test_a_model_that_always_retries_climbs_to_a_person_after_the_cap(
    client: Client, deps: Deps, database_url: str, llm: FakeLLM, tmp_path: Path
) -> None:
    # The example org: data-eng reports to eng-lead (decides by model), under ceo (a person).
    trouble = "A step you are responsible for is in trouble"
    llm.script_for(trouble, *[json.dumps({"action": "retry", "note": "again"})] * 20)
    async with org_workers(client, deps, database_url, llm, tmp_path, human=False) as s:
        h = await start_task(client, s, TaskInput(plan=plan_of(
            {"id": "crunch", "type": "tool", "tool": "fail", "args": {"message": "no data"},
             "assignee": "data-eng"},
            {"id": "after", "type": "tool", "tool": "echo", "deps": ["crunch"],
             "args": {"value": 1}}), assignee="eng-lead"))
        sub = f"{h.id}/crunch"
        shown = await until(lambda: _held_by(client, sub, "ceo"), "the trouble reaches ceo")
        assert shown.status is Status.BLOCKED
        assert shown.escalation_id
        asked = [r for r in llm.requests if trouble in json.dumps(r["body"])]
        assert len(asked) == policies.MODEL_RETRIES_PER_LEVEL + 1
        await client.get_workflow_handle(sub).signal("resolve_escalation", {
            "by": "ceo", "action": "skip", "escalation_id": shown.escalation_id})
        result = await asyncio.wait_for(outcome(h), 30)
    steps = by_step(result)
    assert result.status is Status.FAILED
    assert "skipped by ceo" in (steps["crunch"].error or "")
    assert steps["after"].status is Status.BLOCKED


async def _held_by(client: Client, sub: str, who: str) -> SubtaskView | None:
    shown = await view(client, sub)
    return shown if shown.waiting_for == who else None


async def test_an_unusable_model_decision_climbs_instead_of_failing_the_task(
    client: Client, deps: Deps, database_url: str, llm: FakeLLM, tmp_path: Path
) -> None:
    trouble = "A step you are responsible for is in trouble"
    llm.script_for(trouble, *["I would rather not say."] * 10)
    async with org_workers(client, deps, database_url, llm, tmp_path, human=False) as s:
        h = await start_task(client, s, TaskInput(plan=plan_of(
            {"id": "crunch", "type": "tool", "tool": "fail", "assignee": "data-eng"}),
            assignee="eng-lead"))
        sub = f"{h.id}/crunch"
        shown = await until(lambda: _held_by(client, sub, "ceo"), "the trouble reaches ceo",
                            within=90)
        stale = ResolveEscalation(by="ceo", action=Action.SKIP, escalation_id=f"{sub}#99")
        with pytest.raises(WorkflowUpdateFailedError) as refused:
            await client.get_workflow_handle(sub).execute_update("resolve_escalation", stale)
        assert "no longer open" in str(refused.value.cause)
        await client.get_workflow_handle(sub).execute_update(
            "resolve_escalation", ResolveEscalation(by="ceo", action=Action.SKIP,
                                                    escalation_id=shown.escalation_id))
        result = await asyncio.wait_for(outcome(h), 30)
    assert "skipped by ceo" in (by_step(result)["crunch"].error or "")


async def test_a_naive_deadline_is_utc_and_a_past_one_escalates_at_once(
    client: Client, deps: Deps, database_url: str, llm: FakeLLM, tmp_path: Path,
    worker: Settings,
) -> None:
    far = plan_of({"id": "x", "type": "tool", "tool": "echo", "args": {"value": 1},
                   "deadline": "2099-01-01T00:00:00"})
    assert far.steps[0].deadline is not None
    assert far.steps[0].deadline.utcoffset() is not None
    ok = await start_task(client, worker, TaskInput(plan=far))
    assert (await asyncio.wait_for(outcome(ok), 30)).status is Status.COMPLETED
    async with org_workers(client, deps, database_url, llm, tmp_path) as s:
        h = await start_task(client, s, TaskInput(plan=plan_of(
            {"id": "late", "type": "tool", "tool": "sleep", "args": {"seconds": 30},
             "assignee": "writer", "deadline": "2001-01-01T00:00:00"}),
            assignee="research-lead"))
        sub = f"{h.id}/late"
        await wait_for_status(Store(deps.pool), sub, "BLOCKED")
        [esc] = [e for e in await Store(deps.pool).escalations() if e["subtask_id"] == sub]
        assert esc["reason"] == "deadline"
        assert "2001-01-01 00:00:00 UTC" in esc["error"]
        await client.get_workflow_handle(sub).execute_update(
            "resolve_escalation", ResolveEscalation(by="research-lead", action=Action.SKIP))
        result = await asyncio.wait_for(outcome(h), 30)
    assert result.status is Status.FAILED
