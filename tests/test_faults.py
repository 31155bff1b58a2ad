"""Short faults around a running task: an LLM storm, a refused request, a database blip.

Each ends with the task completed (or, for a request no retry can fix, failed at once),
no model turn answered twice, no duplicate row, and every result stored.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import re
import threading
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import asyncpg
import pytest
import pytest_asyncio
from temporalio.client import Client

from bench.chaos_kit import duplicate_rows
from models.io import TaskInput
from models.task import Status
from runtime.llm.client import LLM, retry_after
from runtime.settings import Settings
from testkit.fake_llm import FakeLLM, Scripted
from tests.conftest import make_settings, temporal_address
from tests.helpers import by_step, outcome, plan_of, start_task
from worker import Deps, build_workers

pytestmark = pytest.mark.timeout(180)

CLIENT_TIMEOUT_S = 1.0


@pytest_asyncio.fixture
async def impatient_worker(
    client: Client, deps: Deps, database_url: str, llm: FakeLLM, tmp_path: Path
) -> AsyncIterator[Settings]:
    """A worker whose LLM client gives up after CLIENT_TIMEOUT_S."""
    settings = make_settings(tmp_path, database_url, llm.base_url, temporal_address(client))
    quick = dataclasses.replace(deps, llm=LLM(base_url=llm.base_url, api_key="k",
                                              model="fake-model", timeout_s=CLIENT_TIMEOUT_S))
    async with contextlib.AsyncExitStack() as stack:
        for w in build_workers(client, settings, quick):
            await stack.enter_async_context(w)
        yield settings


def step_of(body: dict[str, Any]) -> str:
    text = "\n".join(str(m.get("content") or "") for m in body.get("messages", []))
    m = re.search(r"# Your step \(([^)]+)\)", text)
    return m.group(1) if m else "?"


class Storm:
    """Per step, a burst of faults before the server answers."""

    def __init__(self, bursts: dict[str, list[Scripted]]) -> None:
        self.bursts = {k: list(v) for k, v in bursts.items()}
        self.seen: list[tuple[str, float, int]] = []  # (step, time, fault status or 200)
        self.lock = threading.Lock()

    def __call__(self, body: dict[str, Any]) -> Scripted | None:
        step = step_of(body)
        with self.lock:
            queue = self.bursts.get(step, [])
            fault = queue.pop(0) if queue else None
            self.seen.append((step, time.monotonic(), fault.status if fault else 200))
        return fault


def test_retry_after_reads_seconds_milliseconds_and_dates() -> None:
    assert retry_after({"retry-after": "3"}) == 3.0
    assert retry_after({"retry-after-ms": "250", "retry-after": "9"}) == 0.25
    assert retry_after({"retry-after": "Wed, 21 Oct 2015 07:28:00 GMT"}) == 0.0
    assert retry_after({"retry-after": "soon"}) is None
    assert retry_after({}) is None


async def test_an_llm_storm_is_ridden_out_and_no_turn_is_answered_twice(
    client: Client, impatient_worker: Settings, llm: FakeLLM
) -> None:
    storm = Storm({
        "storm-a": [Scripted(status=429, error="slow down", headers={"Retry-After": "3"}),
                    Scripted(status=500, error="oops"), Scripted(status=503, error="busy")],
        "storm-b": [Scripted(delay_s=CLIENT_TIMEOUT_S + 1), Scripted(close=True)],
        "storm-c": [Scripted(close=True), Scripted(status=502, error="bad gateway"),
                    Scripted(status=429, error="again")],
    })
    llm.chaos = storm
    llm.default = Scripted("done")
    steps = [{"id": s, "type": "search", "title": s, "description": f"step {s}"}
             for s in ("storm-a", "storm-b", "storm-c")]
    result = await asyncio.wait_for(outcome(await start_task(
        client, impatient_worker, TaskInput(plan=plan_of(*steps)))), timeout=120)
    assert result.status is Status.COMPLETED, result.error
    assert all(not q for q in storm.bursts.values()), storm.bursts  # every fault was met
    # Each step's one model turn was answered exactly once.
    answered = [step_of(body) for body, status in llm.answered if status == 200]
    assert sorted(answered) == ["storm-a", "storm-b", "storm-c"]
    # The retry after "429, Retry-After: 3" waited the 3 s (the policy alone waits 1 s).
    a = [(t, status) for step, t, status in storm.seen if step == "storm-a"]
    assert a[0][1] == 429
    assert a[1][0] - a[0][0] >= 2.9, a


@pytest.mark.parametrize("status", [400, 401, 404])
async def test_a_refused_request_fails_the_step_at_once_with_its_reason(
    client: Client, impatient_worker: Settings, llm: FakeLLM, status: int
) -> None:
    llm.chaos = Storm({"refused": [Scripted(status=status, error="no such thing")]})
    result = await asyncio.wait_for(outcome(await start_task(
        client, impatient_worker, TaskInput(plan=plan_of(
            {"id": "refused", "type": "search", "description": "refused"})))), timeout=60)
    assert result.status is Status.FAILED
    step = by_step(result)["refused"]
    assert step.status is Status.FAILED
    assert "LLMRequestRejected" in (step.error or "") or f"({status})" in (step.error or "")
    assert f"({status})" in (step.error or ""), step.error
    assert len([r for r in llm.requests if step_of(r["body"]) == "refused"]) == 1


async def test_database_connections_dropped_mid_run_are_ridden_out(
    client: Client, worker: Settings, database_url: str, deps: Deps
) -> None:
    """Every connection to the task's database is terminated, again and again, while the
    task runs: store writes retry, the pool reconnects, nothing is lost or doubled."""
    steps = [{"id": f"s{i}", "type": "tool", "tool": "sleep", "args": {"seconds": 0.3},
              "deps": [f"s{i-1}"] if i else []} for i in range(8)]
    handle = await start_task(client, worker, TaskInput(plan=plan_of(*steps)))
    killer = await asyncpg.connect(database_url)
    dropped = 0
    try:
        await asyncio.sleep(0.5)
        for _ in range(10):
            dropped += await killer.fetchval(
                "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
                "WHERE datname = current_database() AND pid <> pg_backend_pid()")
            await asyncio.sleep(0.2)
        result = await asyncio.wait_for(outcome(handle), timeout=120)
        assert dropped > 0
        assert result.status is Status.COMPLETED, result.error
        rows = await killer.fetch("SELECT status, result FROM subtasks WHERE task_id = $1",
                                  handle.id)
        assert len(rows) == 8
        assert all(r["status"] == "COMPLETED" and r["result"] is not None for r in rows)
        assert await duplicate_rows(killer, handle.id) == {}
    finally:
        await killer.close()
    # The pool serves again.
    assert await deps.pool.fetchval("SELECT 1") == 1


async def test_mcp_servers_dying_mid_call_or_hanging_are_ridden_out(
    client: Client, deps: Deps, database_url: str, llm: FakeLLM, tmp_path: Path
) -> None:
    """One server exits in the middle of its first call, another never answers its first
    call: the dead one is reopened and asked again, the hung call times out and is
    retried; each step's work ends once."""
    import json
    import sys

    from bench.chaos_kit import ROOT, journal_ends, journal_times, repeated_work
    from runtime.tools.registry import builtin_tools
    from runtime.tools.toolbox import open_toolbox

    journal = tmp_path / "journal"
    servers = [{"name": name, "transport": "stdio", "command": sys.executable,
                "args": ["-m", "bench.chaos_mcp", "--mode", mode, "--journal", str(journal),
                         "--state", str(tmp_path / "state")],
                "env": {"PYTHONPATH": str(ROOT)}, "timeout_s": 2,
                # The call times out after 2 s; starting may take longer on a busy machine
                # (importing the MCP server SDK alone took 2.4 s under load).
                "start_timeout_s": 30}
               for name, mode in (("dying", "die"), ("hanging", "hang"))]
    (tmp_path / "tools.json").write_text(json.dumps({"tools": servers}))
    toolbox = await open_toolbox(builtin_tools(), tmp_path / "tools.json")
    try:
        settings = make_settings(tmp_path, database_url, llm.base_url,
                                 temporal_address(client))
        mine = dataclasses.replace(deps, registry=toolbox)
        async with contextlib.AsyncExitStack() as stack:
            for w in build_workers(client, settings, mine):
                await stack.enter_async_context(w)
            result = await asyncio.wait_for(outcome(await start_task(
                client, settings, TaskInput(plan=plan_of(
                    {"id": "d", "type": "tool", "tool": "dying.work",
                     "args": {"key": "d", "seconds": 0.5}},
                    {"id": "h", "type": "tool", "tool": "hanging.work",
                     "args": {"key": "h", "seconds": 0.5}})))), timeout=120)
    finally:
        await toolbox.aclose()
    assert result.status is Status.COMPLETED, result.error
    starts = {k: len(v) for k, v in journal_times(journal, "start").items()}
    assert starts == {"d": 2, "h": 2}  # each fault met once, then asked again
    assert journal_ends(journal) == {"d": 1, "h": 1}
    assert repeated_work(journal) == []
    assert by_step(result)["d"].output == {"result": "d"}
