"""Record a new generation of the Temporal histories that tests/test_replay.py replays.

    python -m tests.record_histories tests/histories/gen3             # every shape
    python -m tests.record_histories tests/histories/gen3 -k diamond  # one shape (pytest args)

A generation is every shape recorded from one version of the workflow code; once
tests/test_replay.py replays it (`GENERATIONS`), it stands for tasks already running and
the recorder refuses to write into its folder: record a new generation instead.

Each `test_*` below runs one shape of the suite on the suite's real servers (the conftest
fixtures: a Temporal dev server, PostgreSQL, the scripted LLM; the workflow sandbox on),
checks it ended as the suite's own test says it should (and took the paths the shape is
for: `workflow.patched` branches, `step_state` reports), then writes the history of every
workflow execution it made, the TaskWorkflow and each child found by walking the
histories, to `OUTDIR/<shape>/<workflow id with "/" as "__">.json` (failures' stack
traces left out: they hold this machine's paths). A shape's folder is
replaced whole. This module is not collected by a plain `pytest` run (its name is not
`test_*.py`); given by path to pytest it writes to a temporary folder unless
BEESTOWN_RECORD_HISTORIES names one.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import shutil
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from temporalio.client import Client, WorkflowExecutionStatus, WorkflowHistory

from models.io import TaskInput
from models.review import Action, ResolveEscalation
from models.task import Priority, Status
from runtime.settings import Settings
from runtime.store import Store
from testkit.fake_llm import FakeLLM, Scripted
from tests.conftest import org_workers
from tests.helpers import by_step, outcome, plan_of, start_task
from tests.test_agent import call
from tests.test_dag import BAD_BRANCH, CANCELLABLE, DIAMOND, wait_until_running
from tests.test_decisions import until, view
from tests.test_organization import (
    BACKUP,
    delegation,
    referee,
    start_two_for_the_writer,
    wait_for_status,
)
from tests.test_organization_edges import approving_all, start_running_and_queued
from tests.test_replay import GENERATIONS, SHAPES, file_name, started_children, workflow_id_of
from worker import Deps
from workflows import policies, search
from workflows.subtask.escalation import MODEL_FAILURE_CLIMBS, MODEL_RETRY_CAP
from workflows.subtask.state import REPORT_WAITS
from workflows.subtask.work import PAST_DEADLINE_AT_ONCE

ENV = "BEESTOWN_RECORD_HISTORIES"

# What an escalation holder's model is asked (runtime/llm/prompts.py ESCALATION_SYSTEM).
TROUBLE = "A step you are responsible for is in trouble"


def refusal(out: Path) -> str | None:
    """Why the recorder must not write into `out`: a generation tests/test_replay.py replays
    is there. None when it may."""
    for g in GENERATIONS:
        if g.folder.resolve() == out.resolve():
            return (f"{out} holds generation {g.name!r}, which tests/test_replay.py replays: "
                    "it stands for tasks already running. Record a new generation into a "
                    "new folder.")
    return None


@pytest.fixture
def record_dir(tmp_path: Path) -> Path:
    explicit = os.environ.get(ENV)
    out = Path(explicit) if explicit else tmp_path / "histories"
    refused = refusal(out)
    if refused:
        pytest.fail(refused)
    return out


@pytest.fixture(autouse=True)
async def _fresh_slots(deps: Deps) -> None:
    # Agents' slots are global to the database: start each shape with every agent free.
    await deps.pool.execute("UPDATE assignments SET state = 'done' WHERE state <> 'done'")


async def closed(client: Client, workflow_id: str) -> None:
    handle = client.get_workflow_handle(workflow_id)
    for _ in range(300):
        if (await handle.describe()).status is not WorkflowExecutionStatus.RUNNING:
            return
        await asyncio.sleep(0.1)
    raise AssertionError(f"{workflow_id} is still running")


def without_stack_traces(node: Any) -> Any:
    """Failures carry stack traces with this machine's paths; replay never reads them."""
    if isinstance(node, dict):
        return {k: without_stack_traces(v) for k, v in node.items() if k != "stackTrace"}
    if isinstance(node, list):
        return [without_stack_traces(v) for v in node]
    return node


def patches_in(paths: list[Path]) -> set[str]:
    """The `workflow.patched` ids the recorded histories took."""
    taken = set()
    for p in paths:
        for e in WorkflowHistory.from_json(workflow_id_of(p), p.read_text()).events:
            marker = e.marker_recorded_event_attributes
            if marker.marker_name == "core_patch":
                taken.add(json.loads(marker.details["patch-data"].payloads[0].data)["id"])
    return taken


def step_states_in(paths: list[Path]) -> int:
    """How many `step_state` reports the recorded steps sent their task."""
    return sum(
        e.signal_external_workflow_execution_initiated_event_attributes.signal_name
        == "step_state"
        for p in paths
        for e in WorkflowHistory.from_json(workflow_id_of(p), p.read_text()).events)


async def record(client: Client, out: Path, shape: str, *task_ids: str) -> list[Path]:
    """Write the history of each task and of every workflow beneath it to out/shape."""
    assert shape in SHAPES, shape
    folder = out / shape
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    todo, seen, written = list(task_ids), set(task_ids), []
    while todo:
        wid = todo.pop(0)
        await closed(client, wid)
        history = await client.get_workflow_handle(wid).fetch_history()
        for child in started_children(history):
            if child not in seen:
                seen.add(child)
                todo.append(child)
        path = folder / file_name(wid)
        clean = without_stack_traces(json.loads(history.to_json()))
        path.write_text(json.dumps(clean, indent=1) + "\n")
        written.append(path)
    return written


# The shapes. Each reuses the scenario of the suite test named in its docstring.


async def test_diamond(client: Client, worker: Settings, record_dir: Path) -> None:
    """test_dag.test_diamond_passes_outputs_along_edges"""
    handle = await start_task(client, worker, TaskInput(plan=plan_of(*DIAMOND)),
                              task_id="hist-diamond")
    result = await outcome(handle)
    assert result.status is Status.COMPLETED, result.error
    assert by_step(result)["d"].output == "Ab+Ac"
    assert len(await record(client, record_dir, "diamond", handle.id)) == 5


async def test_tool_fallback(client: Client, worker: Settings, record_dir: Path) -> None:
    """test_fallback.test_a_fallback_that_answers_leaves_a_trace (the primary fails at once)"""
    handle = await start_task(client, worker, TaskInput(plan=plan_of(
        {"id": "fetch", "type": "tool", "tool": "fail", "args": {"message": "primary down"},
         "fallback_tool": "echo", "fallback_args": {"value": "plan B"}},
        {"id": "use", "type": "tool", "tool": "concat", "deps": ["fetch"],
         "args": {"parts": ["${fetch}", "!"]}},
    )), task_id="hist-tool-fallback")
    result = await outcome(handle)
    assert result.status is Status.COMPLETED, result.error
    assert by_step(result)["use"].output == "plan B!"
    assert len(await record(client, record_dir, "tool_fallback", handle.id)) == 3


async def test_wide_fan_out(client: Client, worker: Settings, record_dir: Path) -> None:
    """test_dag.test_wide_fan_out_runs_branches_in_parallel (24 branches and a join)"""
    steps = [{"id": f"w{i}", "type": "tool", "tool": "sleep", "args": {"seconds": 0.5}}
             for i in range(24)]
    steps.append({"id": "join", "type": "tool", "tool": "echo", "args": {"value": "done"},
                  "deps": [f"w{i}" for i in range(24)]})
    handle = await start_task(client, worker, TaskInput(plan=plan_of(*steps)),
                              task_id="hist-fan-out")
    result = await outcome(handle)
    assert result.status is Status.COMPLETED, result.error
    assert len(await record(client, record_dir, "wide_fan_out", handle.id)) == 26


async def test_failure_blocked(client: Client, worker: Settings, record_dir: Path) -> None:
    """test_dag.test_failed_step_blocks_dependents_while_other_branches_finish"""
    handle = await start_task(client, worker, TaskInput(plan=plan_of(*BAD_BRANCH)),
                              task_id="hist-failure")
    result = await outcome(handle)
    assert result.status is Status.FAILED
    steps = by_step(result)
    assert steps["bad"].status is Status.FAILED
    for s in ("after", "later", "joined"):
        assert steps[s].status is Status.BLOCKED, s
    assert steps["other2"].status is Status.COMPLETED
    await record(client, record_dir, "failure_blocked", handle.id)


async def test_cancel(
    client: Client, deps: Deps, database_url: str, llm: FakeLLM, tmp_path: Path,
    worker: Settings, record_dir: Path,
) -> None:
    """test_dag.test_child_cancelled_from_outside_blocks_its_dependents_and_ends_the_task
    and test_organization_edges.test_cancelling_a_task_frees_running_and_queued_slots"""
    one = await start_task(client, worker, TaskInput(plan=plan_of(*CANCELLABLE)),
                           task_id="hist-cancel-step")
    await wait_until_running(one, "a")
    await client.get_workflow_handle(f"{one.id}/a").cancel()
    result = await asyncio.wait_for(outcome(one), timeout=20)
    assert result.status is Status.FAILED
    assert by_step(result)["a"].status is Status.CANCELLED
    assert by_step(result)["m"].status is Status.BLOCKED

    async with org_workers(client, deps, database_url, llm, tmp_path) as s:
        two = await start_running_and_queued(client, s, deps, task_id="hist-cancel-task")
        await two.cancel()
        result = await asyncio.wait_for(outcome(two), 30)
        assert result.status is Status.CANCELLED
        written = await record(client, record_dir, "cancel", one.id, two.id)
    assert step_states_in(written) >= 1  # the queued step told its task


async def test_agent_tools(
    client: Client, worker: Settings, llm: FakeLLM, record_dir: Path
) -> None:
    """test_agent.test_agent_calls_tools_then_answers_and_accounts_for_every_token, with a
    search step beside the write step"""
    llm.script_for("ask echo", Scripted(tool_calls=[
        call("echo", {"value": "pong"}), call("concat", {"parts": ["a", "b"]}, "call_2")]),
        Scripted("The answer is pong ab."))
    llm.script_for("look it up", Scripted(tool_calls=[call("echo", {"value": "found"})]),
                   Scripted("Found it."))
    handle = await start_task(client, worker, TaskInput(plan=plan_of(
        {"id": "w", "type": "write", "title": "Play ping", "description": "ask echo"},
        {"id": "s", "type": "search", "title": "Search", "description": "look it up",
         "deps": ["w"]})), task_id="hist-agent")
    result = await outcome(handle)
    assert result.status is Status.COMPLETED, result.error
    assert by_step(result)["w"].output == "The answer is pong ab."
    assert by_step(result)["s"].output == "Found it."
    await record(client, record_dir, "agent_tools", handle.id)


@contextlib.asynccontextmanager
async def playing_people(client: Client, deps: Deps, task_id: str, *, reject_once: str = "",
                         replan: dict[str, Any] | None = None) -> AsyncIterator[list[str]]:
    log: list[str] = []
    bot = asyncio.create_task(referee(client, Store(deps.pool), task_id,
                                      reject_once=reject_once,
                                      replan=replan or {"steps": []}, log=log))
    try:
        yield log
    finally:
        bot.cancel()


async def test_review_reject_approve(
    client: Client, org_worker: Settings, llm: FakeLLM, deps: Deps, record_dir: Path
) -> None:
    """test_organization: the draft rejected once by its human reviewer, then approved"""
    llm.script_for("add the numbers", "A note with the numbers.")
    llm.script_for("draft a note", "A note.")
    handle = await start_task(client, org_worker, TaskInput(plan=plan_of(
        {"id": "note", "type": "write", "description": "draft a note", "assignee": "writer"}),
        assignee="research-lead"), task_id="hist-review")
    async with playing_people(client, deps, handle.id, reject_once="note") as log:
        result = await asyncio.wait_for(outcome(handle), timeout=60)
    assert result.status is Status.COMPLETED, (result.error, log)
    assert by_step(result)["note"].output == "A note with the numbers."
    assert log[0] == f"reject {handle.id}/note by research-lead"
    written = await record(client, record_dir, "review_reject_approve", handle.id)
    assert step_states_in(written) >= 3  # REVIEWING, RUNNING the rework, REVIEWING


async def test_escalation_replan(
    client: Client, org_worker: Settings, deps: Deps, record_dir: Path
) -> None:
    """test_organization: a failing lookup escalates to its manager, who replans it"""
    handle = await start_task(client, org_worker, TaskInput(plan=plan_of(
        {"id": "lookup", "type": "tool", "tool": "fail", "args": {"message": "source down"},
         "assignee": "searcher"},
        {"id": "use", "type": "tool", "tool": "concat", "deps": ["lookup"],
         "args": {"parts": ["got ", "${lookup}"]}, "assignee": "searcher"}),
        assignee="research-lead"), task_id="hist-escalation")
    async with playing_people(client, deps, handle.id, replan=BACKUP) as log:
        await wait_for_status(Store(deps.pool), f"{handle.id}/lookup", "BLOCKED")
        result = await asyncio.wait_for(outcome(handle), timeout=60)
    assert result.status is Status.COMPLETED, (result.error, log)
    assert f"replan {handle.id}/lookup by research-lead" in log
    assert by_step(result)["use"].output == "got facts from the backup"
    written = await record(client, record_dir, "escalation_replan", handle.id)
    assert step_states_in(written) >= 2  # BLOCKED, then RUNNING the new plan


async def test_delegation_two_levels(
    client: Client, org_worker: Settings, llm: FakeLLM, deps: Deps, record_dir: Path
) -> None:
    """test_organization.test_delegation_review_and_escalation_through_the_example_org"""
    handle = await start_task(client, org_worker, delegation(llm), task_id="hist-delegation")
    async with playing_people(client, deps, handle.id, reject_once="draft",
                              replan=BACKUP) as log:
        result = await asyncio.wait_for(outcome(handle), timeout=90)
    assert result.status is Status.COMPLETED, (result.error, log)
    assert by_step(result)["report"].output == "Report v2: the sum is 45."
    written = {workflow_id_of(p) for p in
               await record(client, record_dir, "delegation_two_levels", handle.id)}
    t = handle.id
    assert {f"{t}/analysis", f"{t}/analysis/sub1", f"{t}/analysis/sub1/crunch"} <= written
    assert REPORT_WAITS in patches_in([record_dir / "delegation_two_levels" / file_name(w)
                                       for w in written])


async def test_queued_capacity(
    client: Client, org_worker: Settings, deps: Deps, record_dir: Path
) -> None:
    """test_organization.test_work_waits_queued_until_its_agent_has_room"""
    handle = await start_two_for_the_writer(client, org_worker, Store(deps.pool),
                                            task_id="hist-queued")
    async with playing_people(client, deps, handle.id):
        result = await asyncio.wait_for(outcome(handle), timeout=30)
    assert result.status is Status.COMPLETED, result.error
    written = await record(client, record_dir, "queued_capacity", handle.id)
    assert step_states_in(written) >= 2  # QUEUED, then RUNNING


# Shapes since the first generation: the `workflow.patched` branches of today's code.


async def test_search_attributes(
    client: Client, deps: Deps, database_url: str, llm: FakeLLM, tmp_path: Path,
    record_dir: Path,
) -> None:
    """A task and its reviewed step upsert BeesTown's search attributes (the dev server has
    them registered, as worker.py ensures): status, assignee, priority, project."""
    async with org_workers(client, deps, database_url, llm, tmp_path,
                           search_attributes=True) as s:
        handle = await start_task(client, s, TaskInput(
            plan=plan_of({"id": "note", "type": "tool", "tool": "echo",
                          "args": {"value": "noted"}, "assignee": "writer"}),
            assignee="research-lead", priority=Priority.HIGH, project_id="hist-project"),
            task_id="hist-search")
        result = await approving_all(client, deps, handle, 30)
    assert result.status is Status.COMPLETED, result.error
    shown = (await handle.describe()).typed_search_attributes
    assert shown.get(search.PROJECT) == "hist-project"
    assert shown.get(search.STATUS) == Status.COMPLETED.value
    step = (await client.get_workflow_handle(f"{handle.id}/note").describe())
    assert step.typed_search_attributes.get(search.ASSIGNEE) == "writer"
    written = await record(client, record_dir, "search_attributes", handle.id)
    assert {search.PATCH, REPORT_WAITS} <= patches_in(written)


async def skipped_by_the_ceo(client: Client, handle_id: str, step: str) -> None:
    """Wait until the step's trouble has climbed to ceo (a person), who skips it."""
    sub = f"{handle_id}/{step}"

    async def held_by_ceo() -> str | None:
        shown = await view(client, sub)
        return shown.escalation_id if shown.waiting_for == "ceo" else None

    escalation = await until(held_by_ceo, f"{sub}'s trouble reaches ceo")
    await client.get_workflow_handle(sub).execute_update("resolve_escalation", ResolveEscalation(
        by="ceo", action=Action.SKIP, escalation_id=escalation))


async def test_model_retry_cap(
    client: Client, deps: Deps, database_url: str, llm: FakeLLM, tmp_path: Path,
    record_dir: Path,
) -> None:
    """test_decisions.test_a_model_that_always_retries_climbs_to_a_person_after_the_cap"""
    llm.script_for(TROUBLE, *[json.dumps({"action": "retry", "note": "again"})] * 20)
    async with org_workers(client, deps, database_url, llm, tmp_path, human=False) as s:
        handle = await start_task(client, s, TaskInput(plan=plan_of(
            {"id": "crunch", "type": "tool", "tool": "fail", "args": {"message": "no data"},
             "assignee": "data-eng"},
            {"id": "after", "type": "tool", "tool": "echo", "deps": ["crunch"],
             "args": {"value": 1}}), assignee="eng-lead"), task_id="hist-model-cap")
        await skipped_by_the_ceo(client, handle.id, "crunch")
        result = await asyncio.wait_for(outcome(handle), 30)
    assert result.status is Status.FAILED
    assert "skipped by ceo" in (by_step(result)["crunch"].error or "")
    assert by_step(result)["after"].status is Status.BLOCKED
    asked = [r for r in llm.requests if TROUBLE in json.dumps(r["body"])]
    assert len(asked) == policies.MODEL_RETRIES_PER_LEVEL + 1
    written = await record(client, record_dir, "model_retry_cap", handle.id)
    assert {MODEL_RETRY_CAP, MODEL_FAILURE_CLIMBS, REPORT_WAITS} <= patches_in(written)


async def test_model_failure_climbs(
    client: Client, deps: Deps, database_url: str, llm: FakeLLM, tmp_path: Path,
    record_dir: Path,
) -> None:
    """test_decisions.test_an_unusable_model_decision_climbs_instead_of_failing_the_task"""
    llm.script_for(TROUBLE, *["I would rather not say."] * 10)
    async with org_workers(client, deps, database_url, llm, tmp_path, human=False) as s:
        handle = await start_task(client, s, TaskInput(plan=plan_of(
            {"id": "crunch", "type": "tool", "tool": "fail", "assignee": "data-eng"}),
            assignee="eng-lead"), task_id="hist-model-unusable")
        await skipped_by_the_ceo(client, handle.id, "crunch")
        result = await asyncio.wait_for(outcome(handle), 30)
    assert result.status is Status.FAILED
    assert "skipped by ceo" in (by_step(result)["crunch"].error or "")
    asked = [r for r in llm.requests if TROUBLE in json.dumps(r["body"])]
    assert len(asked) == 1  # unusable is final for the call: no retries of it
    written = await record(client, record_dir, "model_failure_climbs", handle.id)
    assert {MODEL_FAILURE_CLIMBS, REPORT_WAITS} <= patches_in(written)


async def test_past_deadline(
    client: Client, org_worker: Settings, deps: Deps, record_dir: Path
) -> None:
    """test_decisions.test_a_naive_deadline_is_utc_and_a_past_one_escalates_at_once; the
    manager retries it (the deadline waived), then approves the work"""
    handle = await start_task(client, org_worker, TaskInput(plan=plan_of(
        {"id": "late", "type": "tool", "tool": "echo", "args": {"value": "late but done"},
         "assignee": "writer", "deadline": "2001-01-01T00:00:00"}),
        assignee="research-lead"), task_id="hist-deadline")
    sub = f"{handle.id}/late"
    await wait_for_status(Store(deps.pool), sub, "BLOCKED")
    [esc] = [e for e in await Store(deps.pool).escalations() if e["subtask_id"] == sub]
    assert esc["reason"] == "deadline"
    await client.get_workflow_handle(sub).execute_update("resolve_escalation", ResolveEscalation(
        by="research-lead", action=Action.RETRY, note="do it anyway"))
    result = await approving_all(client, deps, handle, 30)
    assert result.status is Status.COMPLETED, result.error
    assert by_step(result)["late"].output == "late but done"
    written = await record(client, record_dir, "past_deadline", handle.id)
    assert {PAST_DEADLINE_AT_ONCE, REPORT_WAITS} <= patches_in(written)


def main(argv: list[str]) -> int:
    if not argv or argv[0].startswith("-"):
        print(__doc__)
        return 2
    refused = refusal(Path(argv[0]))
    if refused:
        print(refused, file=sys.stderr)
        return 2
    env = {**os.environ, ENV: str(Path(argv[0]).resolve())}
    return subprocess.run([sys.executable, "-m", "pytest", __file__, "-q", "-p",
                           "no:cacheprovider", *argv[1:]], env=env, check=False).returncode


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
