"""The PostgreSQL store: idempotent writes and refused transitions."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime

import pytest

from models.io import TaskInput
from models.plan import Plan
from models.task import InvalidTransition, Result, Status
from runtime.db import MIGRATIONS, migrate
from runtime.store import NotFound, Store
from worker import Deps

NOW = datetime(2026, 1, 1, tzinfo=UTC)


def plan() -> Plan:
    return Plan.model_validate({"steps": [
        {"id": "a", "type": "tool", "tool": "echo", "args": {"value": 1}},
        {"id": "b", "type": "tool", "tool": "echo", "deps": ["a"], "args": {"value": 2}},
    ]})


async def new_task(store: Store) -> str:
    task_id = f"st-{uuid.uuid4().hex[:10]}"
    assert await store.insert_task(task_id, TaskInput(plan=plan()), status=Status.READY,
                                   created_at=NOW)
    return task_id


async def test_migrations_are_idempotent(deps: Deps) -> None:
    assert await migrate(deps.pool) == await migrate(deps.pool)
    assert await deps.pool.fetchval("SELECT count(*) FROM beestown_schema") == len(MIGRATIONS)


async def test_repeated_writes_never_duplicate_rows(deps: Deps) -> None:
    store = Store(deps.pool)
    task_id = await new_task(store)
    assert not await store.insert_task(task_id, TaskInput(plan=plan()), status=Status.READY,
                                       created_at=NOW)
    for _ in range(3):
        await store.save_plan(task_id, plan(), started_at=NOW)
        await store.add_event("ev-1", task_id=task_id, kind="note", data={"x": 1})
        await store.record_usage("u-1", task_id=task_id, subtask=None, model="m",
                                 prompt_tokens=3, completion_tokens=4)
    assert len(await store.list_subtasks(task_id)) == 2
    assert len(await store.events(task_id)) == 1
    assert await deps.pool.fetchval("SELECT count(*) FROM usage WHERE task_id=$1", task_id) == 1
    sub = f"{task_id}/a"
    for attempt in (1, 1, 2):
        await store.start_subtask(sub, attempt=attempt, at=NOW)
    for _ in range(2):
        await store.finish_subtask(sub, status=Status.COMPLETED,
                                   result=Result(success=True, output=42), error=None, at=NOW)
    row = next(r for r in await store.list_subtasks(task_id) if r["id"] == sub)
    assert (row["status"], row["attempts"], row["result"]["output"]) == ("COMPLETED", 2, 42)
    assert await store.get_output(sub) == 42


async def test_completed_subtask_cannot_run_again(deps: Deps) -> None:
    store = Store(deps.pool)
    task_id = await new_task(store)
    await store.save_plan(task_id, plan(), started_at=NOW)
    sub = f"{task_id}/a"
    await store.start_subtask(sub, attempt=1, at=NOW)
    await store.finish_subtask(sub, status=Status.COMPLETED, result=Result(success=True),
                               error=None, at=NOW)
    with pytest.raises(InvalidTransition, match="COMPLETED -> RUNNING"):
        await store.start_subtask(sub, attempt=2, at=NOW)
    with pytest.raises(InvalidTransition, match="PENDING -> COMPLETED"):
        await store.finish_subtask(f"{task_id}/b", status=Status.COMPLETED, result=None,
                                   error=None, at=NOW)


async def test_unknown_rows_are_reported(deps: Deps) -> None:
    store = Store(deps.pool)
    with pytest.raises(NotFound):
        await store.start_subtask("nope/x", attempt=1, at=NOW)
    with pytest.raises(NotFound):
        await store.get_task("nope")
