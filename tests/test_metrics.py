"""The worker's Prometheus endpoint: the Temporal SDK's metrics and BeesTown's, together."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import re
import socket
import urllib.request
from pathlib import Path

import pytest
from temporalio.client import Client

from client import connect
from models.io import TaskInput
from models.task import Status
from models.usage import Price
from runtime.store import Store
from testkit.fake_llm import FakeLLM, Scripted
from tests.conftest import make_settings, org_workers, temporal_address
from tests.helpers import outcome, plan_of, start_task
from tests.test_organization import wait_for_status
from tests.test_organization_edges import approve_all
from worker import Deps, MetricsUnavailable, build_workers, metrics_runtime

Series = dict[tuple[str, frozenset[tuple[str, str]]], float]

_LINE = re.compile(r'^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})? (\S+)$')
_LABEL = re.compile(r'([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"')


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def scrape(port: int) -> tuple[str, Series]:
    """Return the /metrics text and its samples by (name, labels)."""
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as r:
        text: str = r.read().decode()
    series: Series = {}
    for line in text.splitlines():
        if m := _LINE.match(line):
            labels = frozenset(_LABEL.findall(m.group(2) or ""))
            series[(m.group(1), labels)] = float(m.group(3))
    return text, series


def total(series: Series, name: str, **labels: str) -> float:
    """Sum the samples of `name` whose labels include `labels`."""
    want = set(labels.items())
    return sum(v for (n, ls), v in series.items() if n == name and want <= ls)


async def scrape_until(port: int, name: str, queue: str) -> tuple[str, Series]:
    """Scrape until `name` has a sample for `queue` (the SDK counts a workflow's end as the
    worker's completion goes out, which may follow the client's answer by a moment)."""
    for _ in range(50):
        text, series = await asyncio.to_thread(scrape, port)
        if total(series, name, task_queue=queue) > 0:
            return text, series
        await asyncio.sleep(0.1)
    raise AssertionError(f"no {name} for {queue} at /metrics:\n{text}")


async def test_worker_serves_sdk_and_beestown_metrics_on_its_port(
    client: Client, deps: Deps, database_url: str, llm: FakeLLM, tmp_path: Path
) -> None:
    port = free_port()
    settings = make_settings(tmp_path, database_url, llm.base_url, temporal_address(client),
                             metrics_port=port)
    metered = await connect(settings, runtime=metrics_runtime(settings))
    priced = dataclasses.replace(deps, prices={"fake-model": Price(input=1000, output=2000)})
    llm.script(Scripted("Reported.", prompt_tokens=100, completion_tokens=20))
    async with contextlib.AsyncExitStack() as stack:
        for w in build_workers(metered, settings, priced):
            await stack.enter_async_context(w)
        result = await outcome(await start_task(client, settings, TaskInput(plan=plan_of(
            {"id": "a", "type": "tool", "tool": "echo", "args": {"value": "A"}},
            {"id": "c", "type": "code", "deps": ["a"], "code": "result = inputs['a'] * 2"},
            {"id": "w", "type": "write", "deps": ["c"], "title": "Report",
             "description": "say what c gave"}))))
        assert result.status is Status.COMPLETED, result.error
        queue = settings.task_queue
        code_queue = settings.queue_for("sandbox")  # code steps have a queue of their own
        text, series = await scrape_until(port, "temporal_workflow_completed", queue)

    # The SDK's own, through the runtime's telemetry.
    assert total(series, "temporal_workflow_completed", task_queue=queue,
                 workflow_type="TaskWorkflow") == 1
    assert total(series, "temporal_activity_execution_latency_count",
                 activity_type="run_code_step", task_queue=code_queue) == 1
    assert "temporal_num_pollers" in text
    assert "temporal_sticky_cache_size" in text
    # BeesTown's, through the same meter: every step once, by status and type.
    for step_type in ("tool", "code", "write"):
        assert total(series, "beestown_steps_finished", status="COMPLETED",
                     type=step_type,
                     task_queue=code_queue if step_type == "code" else queue) == 1, step_type
    assert total(series, "beestown_steps_finished", status="FAILED") == 0
    # Tokens and cost by model: exactly what the model reported, priced.
    assert total(series, "beestown_tokens_spent", model="fake-model", kind="prompt") == 100
    assert total(series, "beestown_tokens_spent", model="fake-model", kind="completion") == 20
    assert total(series, "beestown_cost_spent_usd_count", model="fake-model") == 1
    assert total(series, "beestown_cost_spent_usd_sum", model="fake-model") == pytest.approx(
        (100 * 1000 + 20 * 2000) / 1e6)
    # The code step's sandbox session: opened, closed, none left in use.
    assert total(series, "beestown_sandbox_sessions_opened", task_queue=code_queue) == 1
    assert total(series, "beestown_sandbox_sessions_closed", task_queue=code_queue) == 1
    assert total(series, "beestown_sandbox_sessions_in_use", task_queue=code_queue) == 0


async def test_queue_waits_and_escalations_are_counted_where_they_happen(
    client: Client, deps: Deps, database_url: str, llm: FakeLLM, tmp_path: Path
) -> None:
    # Agents' slots are global to the database: start with every agent free.
    await deps.pool.execute("UPDATE assignments SET state = 'done' WHERE state <> 'done'")
    port = free_port()
    settings = make_settings(tmp_path, database_url, llm.base_url, temporal_address(client),
                             metrics_port=port)
    metered = await connect(settings, runtime=metrics_runtime(settings))
    # org_workers makes its own settings (and task queue) from these.
    async with org_workers(metered, deps, database_url, llm, tmp_path) as s:
        # The writer has capacity 1: one of a and b waits QUEUED for the other's slot.
        # Then f fails, escalates to research-lead (a person) and is cancelled open.
        h = await start_task(client, s, TaskInput(plan=plan_of(
            {"id": "a", "type": "tool", "tool": "sleep", "args": {"seconds": 1},
             "assignee": "writer"},
            {"id": "b", "type": "tool", "tool": "sleep", "args": {"seconds": 1},
             "assignee": "writer"},
            {"id": "f", "type": "tool", "tool": "fail", "args": {"message": "down"},
             "assignee": "writer", "deps": ["a", "b"]}), assignee="research-lead"))
        bot = asyncio.create_task(approve_all(client, deps, h.id))
        try:
            await wait_for_status(Store(deps.pool), f"{h.id}/f", "BLOCKED")
            await h.cancel()
            await asyncio.wait_for(outcome(h), 30)
        finally:
            bot.cancel()
        text, series = await asyncio.to_thread(scrape, port)
    waits = total(series, "beestown_queue_wait_seconds_sum", agent="writer")
    assert total(series, "beestown_queue_wait_seconds_count", agent="writer") == 1, text
    assert 0.5 < waits < 30  # it waited for a one-second sleep (and its review)
    assert total(series, "beestown_queue_wait_seconds_bucket", agent="writer", le="1") == 0
    assert total(series, "beestown_queue_wait_seconds_bucket", agent="writer", le="+Inf") == 1
    assert total(series, "beestown_escalations_opened", task_queue=s.task_queue) == 1, text
    assert total(series, "beestown_escalations_closed", status="cancelled") == 1, text


def test_metrics_port_off_by_default_and_a_taken_port_is_refused(
    tmp_path: Path, database_url: str
) -> None:
    settings = make_settings(tmp_path, database_url, "http://unused", "unused:0")
    assert settings.metrics_port == 0
    assert metrics_runtime(settings) is None
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = int(taken.getsockname()[1])
        with pytest.raises(MetricsUnavailable, match=f"127.0.0.1:{port}"):
            metrics_runtime(settings.model_copy(update={"metrics_port": port}))
