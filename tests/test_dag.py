"""The parent/child workflows on a real Temporal dev server and real PostgreSQL."""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

import pytest
from temporalio.client import Client, WorkflowFailureError, WorkflowHandle
from temporalio.service import RPCError, RPCStatusCode

from models.io import Progress, TaskInput
from models.task import Status
from runtime.settings import Settings
from runtime.store import Store
from tests.helpers import by_step, outcome, plan_of, run_plan, start_task
from worker import Deps

# Plans that tests/record_histories.py records as well.
DIAMOND: tuple[dict[str, Any], ...] = (
    {"id": "a", "type": "tool", "tool": "echo", "args": {"value": "A"}},
    {"id": "b", "type": "tool", "tool": "concat", "deps": ["a"],
     "args": {"parts": ["${a}", "b"]}},
    {"id": "c", "type": "tool", "tool": "concat", "deps": ["a"],
     "args": {"parts": ["${a}", "c"]}},
    {"id": "d", "type": "tool", "tool": "concat", "deps": ["b", "c"],
     "args": {"parts": ["${b}", "+", "${c}"]}},
)
# A failing step with dependents (direct, further down, and joined with a branch that works).
BAD_BRANCH: tuple[dict[str, Any], ...] = (
    {"id": "bad", "type": "tool", "tool": "fail", "args": {"message": "no luck"}},
    {"id": "after", "type": "tool", "tool": "echo", "deps": ["bad"], "args": {"value": 1}},
    {"id": "later", "type": "tool", "tool": "echo", "deps": ["after"],
     "args": {"value": 2}},
    {"id": "joined", "type": "tool", "tool": "echo", "deps": ["bad", "other"],
     "args": {"value": 3}},
    {"id": "other", "type": "tool", "tool": "sleep", "args": {"seconds": 0.5}},
    {"id": "other2", "type": "tool", "tool": "echo", "deps": ["other"],
     "args": {"value": 4}},
)
# A long step "a" (to be cancelled) with a dependent, a join with "x", and "x" itself.
CANCELLABLE: tuple[dict[str, Any], ...] = (
    {"id": "a", "type": "tool", "tool": "sleep", "args": {"seconds": 30}},
    {"id": "b", "type": "tool", "tool": "echo", "deps": ["a"], "args": {"value": 1}},
    {"id": "m", "type": "tool", "tool": "echo", "deps": ["a", "x"], "args": {"value": 2}},
    {"id": "x", "type": "tool", "tool": "echo", "args": {"value": 3}},
)


async def wait_until_running(handle: WorkflowHandle[Any, Any], step_id: str) -> None:
    for _ in range(100):
        p = await handle.query("progress", result_type=Progress)
        if {s.step_id: s.status for s in p.subtasks}.get(step_id) is Status.RUNNING:
            return
        await asyncio.sleep(0.05)


async def test_diamond_passes_outputs_along_edges(
    client: Client, worker: Settings, deps: Deps
) -> None:
    result = await run_plan(client, worker, *DIAMOND)
    assert result.status is Status.COMPLETED, result.error
    steps = by_step(result)
    assert steps["d"].output == "Ab+Ac"
    rows = await Store(deps.pool).list_subtasks(result.task_id)
    assert {r["id"]: r["status"] for r in rows} == {
        f"{result.task_id}/{s}": "COMPLETED" for s in "abcd"
    }
    assert all(r["result"]["success"] for r in rows)
    task = await Store(deps.pool).get_task(result.task_id)
    assert task["status"] == "COMPLETED"
    assert task["result"]["subtasks"][3]["output"] == "Ab+Ac"


async def test_chain_released_by_signals_keeps_every_output(
    client: Client, worker: Settings
) -> None:
    steps = [{"id": "s0", "type": "tool", "tool": "echo", "args": {"value": "0"}}]
    for i in range(1, 8):
        steps.append({"id": f"s{i}", "type": "tool", "tool": "concat", "deps": [f"s{i-1}"],
                      "args": {"parts": [f"${{s{i-1}}}", str(i)]}})
    result = await run_plan(client, worker, *steps)
    assert result.status is Status.COMPLETED, result.error
    assert by_step(result)["s7"].output == "01234567"


async def test_wide_fan_out_runs_branches_in_parallel(
    client: Client, worker: Settings, deps: Deps
) -> None:
    steps = [{"id": f"w{i}", "type": "tool", "tool": "sleep", "args": {"seconds": 1}}
             for i in range(30)]
    steps.append({"id": "join", "type": "tool", "tool": "echo", "args": {"value": "done"},
                  "deps": [f"w{i}" for i in range(30)]})
    result = await run_plan(client, worker, *steps)
    assert result.status is Status.COMPLETED, result.error
    # Parallel, not in sequence: at some moment several branches ran at once (how fast is
    # a figure for bench/dag.py, not a test).
    rows = [r for r in await Store(deps.pool).list_subtasks(result.task_id)
            if r["step_id"] != "join"]
    at_once = max(sum(o["started_at"] <= r["started_at"] < o["completed_at"] for o in rows)
                  for r in rows)
    assert at_once >= 2, [(r["started_at"], r["completed_at"]) for r in rows]


async def test_failed_step_blocks_dependents_while_other_branches_finish(
    client: Client, worker: Settings, deps: Deps
) -> None:
    result = await run_plan(client, worker, *BAD_BRANCH)
    assert result.status is Status.FAILED
    steps = by_step(result)
    assert steps["bad"].status is Status.FAILED
    assert "no luck" in (steps["bad"].error or "")
    for s in ("after", "later", "joined"):
        assert steps[s].status is Status.BLOCKED, s
    assert steps["other2"].status is Status.COMPLETED
    assert result.error
    assert "bad" in result.error
    assert "blocked: " in result.error
    assert "after" in result.error
    assert "later" in result.error
    rows = {r["step_id"]: r for r in await Store(deps.pool).list_subtasks(result.task_id)}
    assert rows["bad"]["status"] == "FAILED"
    assert "no luck" in rows["bad"]["error"]
    assert rows["later"]["status"] == "BLOCKED"
    assert rows["other2"]["status"] == "COMPLETED"
    assert (await Store(deps.pool).get_task(result.task_id))["status"] == "FAILED"


async def test_progress_is_queryable_while_running(client: Client, worker: Settings) -> None:
    handle = await start_task(client, worker, TaskInput(plan=plan_of(
        {"id": "quick", "type": "tool", "tool": "echo", "args": {"value": 1}},
        {"id": "slow", "type": "tool", "tool": "sleep", "args": {"seconds": 3}},
        {"id": "last", "type": "tool", "tool": "echo", "deps": ["slow", "quick"],
         "args": {"value": 2}},
    )))
    seen: Progress | None = None
    for _ in range(50):
        p = await handle.query("progress", result_type=Progress)
        if p.counts.get("COMPLETED") == 1 and p.counts.get("RUNNING") == 1:
            seen = p
            break
        await asyncio.sleep(0.1)
    assert seen is not None, "never saw one step done and one running"
    assert seen.status is Status.RUNNING
    assert {s.step_id: s.status for s in seen.subtasks}["last"] is Status.PENDING
    assert (await outcome(handle)).status is Status.COMPLETED


async def test_plan_with_unknown_tool_fails_the_task_naming_it(
    client: Client, worker: Settings
) -> None:
    result = await run_plan(client, worker,
                            {"id": "a", "type": "tool", "tool": "teleport", "args": {}})
    assert result.status is Status.FAILED
    assert result.error
    assert "unknown tool 'teleport'" in result.error


async def test_bad_tool_arguments_fail_the_step_without_retrying(
    client: Client, worker: Settings
) -> None:
    result = await run_plan(client, worker,
                            {"id": "a", "type": "tool", "tool": "sleep",
                             "args": {"seconds": "soon"}})
    assert result.status is Status.FAILED
    assert "seconds" in (by_step(result)["a"].error or "")


async def test_large_output_travels_as_a_preview_and_reaches_dependents_whole(
    client: Client, worker: Settings, deps: Deps
) -> None:
    result = await run_plan(
        client, worker,
        {"id": "big", "type": "tool", "tool": "big", "args": {"size": 200_000}},
        {"id": "len", "type": "tool", "tool": "concat", "deps": ["big"],
         "args": {"parts": ["${big}"]}},
    )
    assert result.status is Status.COMPLETED, result.error
    steps = by_step(result)
    assert steps["big"].truncated
    assert "characters omitted" in steps["big"].output
    assert len(await Store(deps.pool).get_output(f"{result.task_id}/len")) == 200_000


async def test_child_cancelled_from_outside_blocks_its_dependents_and_ends_the_task(
    client: Client, worker: Settings
) -> None:
    handle = await start_task(client, worker, TaskInput(plan=plan_of(*CANCELLABLE)))
    await wait_until_running(handle, "a")
    await client.get_workflow_handle(f"{handle.id}/a").cancel()
    result = await asyncio.wait_for(outcome(handle), timeout=20)
    assert result.status is Status.FAILED
    steps = by_step(result)
    assert steps["a"].status is Status.CANCELLED
    assert steps["b"].status is Status.BLOCKED
    assert steps["m"].status is Status.BLOCKED
    assert steps["x"].status is Status.COMPLETED
    assert result.error
    assert "cancelled: a" in result.error


async def test_reusing_a_task_id_is_refused_and_keeps_the_first_run(
    client: Client, worker: Settings, deps: Deps
) -> None:
    plan = TaskInput(plan=plan_of({"id": "a", "type": "tool", "tool": "echo",
                                   "args": {"value": "first"}}))
    first = await outcome(await start_task(client, worker, plan, task_id="reused-id-1"))
    assert first.status is Status.COMPLETED
    again = TaskInput(plan=plan_of({"id": "a", "type": "tool", "tool": "echo",
                                    "args": {"value": "second"}}))
    second = await outcome(await start_task(client, worker, again, task_id="reused-id-1"))
    assert second.status is Status.FAILED
    assert second.error
    assert "already used" in second.error
    assert await Store(deps.pool).get_output("reused-id-1/a") == "first"


async def test_forged_dependency_signal_is_ignored(client: Client, worker: Settings) -> None:
    handle = await start_task(client, worker, TaskInput(plan=plan_of(
        {"id": "a", "type": "tool", "tool": "sleep", "args": {"seconds": 1}},
        {"id": "b", "type": "tool", "tool": "concat", "deps": ["a"],
         "args": {"parts": ["got ", "${a}"]}},
    )))
    forged = {"output": {"step_id": "a", "subtask_id": "elsewhere/a", "output": "EVIL"}}
    for _ in range(300):  # until b exists (started once a has started; later when loaded)
        try:
            await client.get_workflow_handle(f"{handle.id}/b").signal("dependency_done", forged)
            break
        except RPCError as e:
            if e.status is not RPCStatusCode.NOT_FOUND:
                raise
            await asyncio.sleep(0.1)
    result = await outcome(handle)
    assert result.status is Status.COMPLETED, result.error
    assert by_step(result)["b"].output == "got 1.0"  # sleep returns the seconds waited


async def test_invalid_workflow_input_fails_the_workflow_naming_the_field(
    client: Client, worker: Settings
) -> None:
    handle = await client.start_workflow(
        "TaskWorkflow", {"plan": {"steps": [{"id": "a b", "type": "tool", "tool": "echo"}]}},
        id=f"bad-input-{uuid.uuid4().hex[:8]}", task_queue=worker.task_queue,
    )
    with pytest.raises(WorkflowFailureError) as info:
        await asyncio.wait_for(handle.result(), timeout=20)
    assert "id" in str(info.value.cause)
    assert "pattern" in str(info.value.cause)
