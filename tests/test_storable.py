"""Text PostgreSQL cannot hold (NUL, lone surrogates) is stored escaped, from every source.

Before, a NUL in a tool argument, code output, error text, model reply or title made
PostgreSQL refuse the write; the write was retried (up to 30 times for the store, 3 for
a code step, re-running the user's code each time) and the task failed or hung.
"""

from __future__ import annotations

import json
from typing import Any

import pytest
from temporalio.api.enums.v1 import EventType
from temporalio.client import Client

from models.io import TaskInput
from models.task import Status
from runtime.settings import Settings
from runtime.storable import NUL_SIGN, StoreRefused, storable
from runtime.store import Store
from testkit.fake_llm import FakeLLM, Scripted
from tests.helpers import by_step, outcome, plan_of, start_task
from worker import Deps

NUL = "\x00"


async def attempts_of(client: Client, workflow_id: str, activity: str) -> list[int]:
    """Every attempt of `activity` the child workflow's history shows as started."""
    seen: dict[str, str] = {}
    attempts: list[int] = []
    async for event in client.get_workflow_handle(workflow_id).fetch_history_events():
        if event.event_type == EventType.EVENT_TYPE_ACTIVITY_TASK_SCHEDULED:
            attrs = event.activity_task_scheduled_event_attributes
            seen[str(event.event_id)] = attrs.activity_type.name
        elif event.event_type == EventType.EVENT_TYPE_ACTIVITY_TASK_STARTED:
            attrs2 = event.activity_task_started_event_attributes
            if seen.get(str(attrs2.scheduled_event_id)) == activity:
                attempts.append(attrs2.attempt)
    return attempts


async def row_of(deps: Deps, task_id: str, step_id: str) -> dict[str, Any]:
    rows = await Store(deps.pool).list_subtasks(task_id)
    return next(r for r in rows if r["step_id"] == step_id)


def test_storable_escapes_nul_and_lone_surrogates_everywhere_in_a_value() -> None:
    value = {f"k{NUL}": [f"a{NUL}b", ("\ud800x", 3)], "n": None, "b": b"\x00raw"}
    assert storable(value) == {
        f"k{NUL_SIGN}": [f"a{NUL_SIGN}b", ("\ufffdx", 3)], "n": None, "b": b"\x00raw"}
    clean = "plain é text"
    assert storable(clean) is clean


async def test_store_escapes_nul_in_text_arrays_and_json_and_refuses_other_bad_data(
    deps: Deps,
) -> None:
    pool = deps.pool
    await pool.execute(
        "INSERT INTO events (id, task_id, kind, data) VALUES ($1, $2, $3, $4)",
        f"ev{NUL}1", "t-nul", f"k{NUL}", {f"x{NUL}": [f"y{NUL}", "\udc80"]})
    row = await pool.fetchrow("SELECT * FROM events WHERE task_id = 't-nul'")
    assert row is not None
    assert row["id"] == f"ev{NUL_SIGN}1"
    assert row["kind"] == f"k{NUL_SIGN}"
    assert row["data"] == {f"x{NUL_SIGN}": [f"y{NUL_SIGN}", "\ufffd"]}
    # JSON has no NaN or infinity: jsonb refused them; they are stored as null.
    await pool.execute(
        "INSERT INTO events (id, task_id, kind, data) VALUES ('ev-nan', 't-nan', 'k', $1)",
        {"nan": float("nan"), "inf": [float("-inf"), 1.5]})
    data = await pool.fetchval("SELECT data FROM events WHERE id = 'ev-nan'")
    assert data == {"nan": None, "inf": [None, 1.5]}
    async with pool.acquire() as conn, conn.transaction():
        await conn.executemany(
            "INSERT INTO llm_outputs (id, task_id, purpose, model, raw_output, valid, errors)"
            " VALUES ($1, 't-nul', 'p', 'm', $2, true, $3)",
            [(f"o{i}", f"raw{NUL}", [f"e{NUL}"]) for i in range(2)])
    raws = await pool.fetch("SELECT raw_output, errors FROM llm_outputs WHERE task_id = 't-nul'")
    assert [(r["raw_output"], r["errors"]) for r in raws] == [
        (f"raw{NUL_SIGN}", [f"e{NUL_SIGN}"])] * 2
    # A value PostgreSQL refuses for another reason is a permanent refusal, not a retry.
    with pytest.raises(StoreRefused):
        await pool.execute("SELECT $1::int", "not a number")
    with pytest.raises(StoreRefused):
        await pool.execute("SELECT 'not a number'::int")


async def test_tool_step_with_nul_argument_completes_once_with_the_value_escaped(
    client: Client, worker: Settings, deps: Deps
) -> None:
    result = await outcome(await start_task(client, worker, TaskInput(
        title=f"nul{NUL}title", plan=plan_of(
            {"id": "t", "type": "tool", "tool": "echo", "args": {"value": f"x{NUL}y"}},
            {"id": "boom", "type": "tool", "tool": "fail",
             "args": {"message": f"bad{NUL}news"}}))))
    assert result.status is Status.FAILED  # `boom` fails by design, with its NUL error
    steps = by_step(result)
    assert steps["t"].status is Status.COMPLETED, steps["t"].error
    row = await row_of(deps, result.task_id, "t")
    assert row["result"]["output"] == f"x{NUL_SIGN}y"
    assert row["spec"]["args"] == {"value": f"x{NUL_SIGN}y"}
    assert row["attempts"] == 1
    boom = await row_of(deps, result.task_id, "boom")
    assert boom["status"] == "FAILED"
    assert f"bad{NUL_SIGN}news" in (boom["error"] or "")
    task = await Store(deps.pool).get_task(result.task_id)
    assert task["title"] == f"nul{NUL_SIGN}title"
    assert task["status"] == "FAILED"


async def test_code_step_printing_and_returning_nul_runs_its_code_exactly_once(
    client: Client, worker: Settings, deps: Deps
) -> None:
    result = await outcome(await start_task(client, worker, TaskInput(plan=plan_of(
        {"id": "printer", "type": "code", "code": "print('a\\x00b')"},
        {"id": "returner", "type": "code",
         "code": "print('side\\x00effect')\nresult = {'k\\x00': 'v\\x00w'}"},
        {"id": "raiser", "type": "code", "code": "raise ValueError('no\\x00good')"},
    ))))
    steps = by_step(result)
    assert steps["printer"].status is Status.COMPLETED, steps["printer"].error
    assert steps["returner"].status is Status.COMPLETED, steps["returner"].error
    assert steps["raiser"].status is Status.FAILED
    printer = await row_of(deps, result.task_id, "printer")
    assert printer["result"]["output"] == f"a{NUL_SIGN}b"
    assert printer["result"]["stdout"] == f"a{NUL_SIGN}b\n"
    returner = await row_of(deps, result.task_id, "returner")
    assert returner["result"]["output"] == {f"k{NUL_SIGN}": f"v{NUL_SIGN}w"}
    raiser = await row_of(deps, result.task_id, "raiser")
    assert f"no{NUL_SIGN}good" in raiser["error"]
    for step in ("printer", "returner", "raiser"):
        row = await row_of(deps, result.task_id, step)
        assert row["attempts"] == 1, step
        assert await attempts_of(client, row["id"], "run_code_step") == [1], step


async def test_model_reply_and_split_plan_with_nul_are_stored_escaped(
    client: Client, worker: Settings, llm: FakeLLM, deps: Deps
) -> None:
    plan = {"title": f"plan{NUL}", "steps": [
        {"id": "w", "type": "write", "title": f"say{NUL}it", "description": f"d{NUL}"}]}
    llm.script(Scripted(json.dumps(plan)), Scripted(f"the answer{NUL} is here"))
    result = await outcome(await start_task(client, worker, TaskInput(
        prompt=f"write{NUL} something")))
    assert result.status is Status.COMPLETED, result.error
    row = await row_of(deps, result.task_id, "w")
    assert row["result"]["output"] == f"the answer{NUL_SIGN} is here"
    assert row["title"] == f"say{NUL_SIGN}it"
    task = await Store(deps.pool).get_task(result.task_id)
    assert task["prompt"] == f"write{NUL_SIGN} something"
    assert task["plan"]["title"] == f"plan{NUL_SIGN}"
    raw = await deps.pool.fetch(
        "SELECT raw_output FROM llm_outputs WHERE task_id = $1", result.task_id)
    assert any("plan\\u0000" in r["raw_output"] for r in raw)
    messages = await Store(deps.pool).get_messages(row["id"])
    assert any(m.get("content") == f"the answer{NUL_SIGN} is here" for m in messages)


REFUSE = """
CREATE OR REPLACE FUNCTION beestown_test_refuse() RETURNS trigger AS $$
BEGIN
    IF NEW.result->>'output' = 'refuse me' THEN
        RAISE EXCEPTION 'value refused for the test' USING ERRCODE = '22023';
    END IF;
    RETURN NEW;
END $$ LANGUAGE plpgsql;
CREATE TRIGGER beestown_test_refuse BEFORE UPDATE ON subtasks
    FOR EACH ROW EXECUTE FUNCTION beestown_test_refuse();
"""


async def test_a_result_postgresql_refuses_fails_the_step_without_rerunning_the_code(
    client: Client, worker: Settings, deps: Deps
) -> None:
    # A real PostgreSQL data exception on the result write (a trigger raises it): the
    # step fails at once with the refusal, and the code that produced it ran once.
    await deps.pool.execute(REFUSE)
    try:
        result = await outcome(await start_task(client, worker, TaskInput(plan=plan_of(
            {"id": "c", "type": "code", "code": "print('refuse me')"}))))
    finally:
        await deps.pool.execute(
            "DROP TRIGGER beestown_test_refuse ON subtasks;"
            " DROP FUNCTION beestown_test_refuse()")
    assert result.status is Status.FAILED
    row = await row_of(deps, result.task_id, "c")
    assert row["status"] == "FAILED"
    assert "refused" in (row["error"] or "")
    assert await attempts_of(client, row["id"], "run_code_step") == [1]
