"""Code steps on the real sandbox, through real Temporal workflows."""

from __future__ import annotations

import asyncio
import contextlib
import subprocess
from pathlib import Path

import pytest
from temporalio.client import Client, WorkflowFailureError

from models.io import Progress, TaskInput
from models.task import Status
from runtime.settings import Settings
from runtime.store import Store
from testkit.fake_llm import FakeLLM
from tests.conftest import make_settings, temporal_address
from tests.helpers import by_step, outcome, plan_of, run_plan, start_task
from worker import Deps, build_workers

SANDBOX_UID_FLOOR = 2_000_000


def sandbox_processes() -> list[str]:
    out = subprocess.run(["ps", "-eo", "uid=,pid=,args="], capture_output=True, text=True,
                         check=True).stdout
    return [line for line in out.splitlines()
            if line.split() and int(line.split()[0]) >= SANDBOX_UID_FLOOR]


async def test_code_steps_read_inputs_and_hand_on_stdout_or_result(
    client: Client, worker: Settings
) -> None:
    result = await run_plan(
        client, worker,
        {"id": "nums", "type": "code", "code": "result = {'xs': [3, 1, 2]}"},
        {"id": "word", "type": "tool", "tool": "echo", "args": {"value": "héllo"}},
        {"id": "use", "type": "code", "deps": ["nums", "word"],
         "code": "print(sorted(inputs['nums']['xs']), inputs['word'].upper())"},
    )
    assert result.status is Status.COMPLETED, result.error
    steps = by_step(result)
    assert steps["nums"].output == {"xs": [3, 1, 2]}
    assert steps["use"].output == "[1, 2, 3] HÉLLO"


async def test_user_exception_fails_the_step_once_without_retry(
    client: Client, worker: Settings, deps: Deps
) -> None:
    result = await run_plan(
        client, worker,
        {"id": "boom", "type": "code", "code": "print('before')\n1/0"},
        {"id": "after", "type": "code", "deps": ["boom"], "code": "print(1)"},
    )
    assert result.status is Status.FAILED
    steps = by_step(result)
    assert "ZeroDivisionError" in (steps["boom"].error or "")
    assert steps["after"].status is Status.BLOCKED
    row = next(r for r in await Store(deps.pool).list_subtasks(result.task_id)
               if r["step_id"] == "boom")
    assert row["attempts"] == 1
    assert row["result"]["stdout"] == "before\n"
    assert "ZeroDivisionError" in row["result"]["stderr"]


async def test_dataframe_across_two_cells_and_chart_come_back_as_artifacts(
    client: Client, worker: Settings, deps: Deps
) -> None:
    cells = [
        "import pandas as pd\ndf = pd.DataFrame({'x': [1, 2, 3], 'y': [2, 4, 9]})",
        "import matplotlib.pyplot as plt\n"
        "ax = df.plot(x='x', y='y')\n"
        "plt.savefig('chart.png')\n"
        "print(int(df['y'].sum()))",
    ]
    result = await run_plan(client, worker, {"id": "chart", "type": "code", "code": cells})
    assert result.status is Status.COMPLETED, result.error
    assert by_step(result)["chart"].output == "15"
    row = (await Store(deps.pool).list_subtasks(result.task_id))[0]
    artifacts = {a["name"]: a for a in row["result"]["artifacts"]}
    assert "chart.png" in artifacts
    png = await Store(deps.pool).get_blob(artifacts["chart.png"]["id"])
    assert png.startswith(b"\x89PNG")
    assert artifacts["chart.png"]["mime"] == "image/png"
    # The open figure is also returned as a rich PNG result, like a notebook shows it.
    assert any(name.endswith(".png") and name != "chart.png" for name in artifacts)


async def test_cancelled_task_closes_its_sandbox_and_records_cancelled(
    client: Client, worker: Settings, deps: Deps
) -> None:
    handle = await start_task(client, worker, TaskInput(plan=plan_of(
        {"id": "forever", "type": "code", "code": "import time\nprint('go', flush=True)\n"
                                                    "time.sleep(600)"},
        {"id": "next", "type": "code", "deps": ["forever"], "code": "print(1)"},
    )))
    for _ in range(100):
        p = await handle.query("progress", result_type=Progress)
        if p.counts.get("RUNNING") and sandbox_processes():
            break
        await asyncio.sleep(0.1)
    assert sandbox_processes(), "the code never started"
    await handle.cancel()
    with pytest.raises(WorkflowFailureError):
        await handle.result()
    for _ in range(50):
        if not sandbox_processes():
            break
        await asyncio.sleep(0.1)
    assert sandbox_processes() == []
    rows = {r["step_id"]: r["status"] for r in
            await Store(deps.pool).list_subtasks(handle.id)}
    assert rows == {"forever": "CANCELLED", "next": "CANCELLED"}
    assert (await Store(deps.pool).get_task(handle.id))["status"] == "CANCELLED"


async def test_worker_whose_sandbox_failed_refuses_code_steps_clearly(
    client: Client, deps: Deps, database_url: str, llm: FakeLLM, tmp_path: Path
) -> None:
    settings = make_settings(tmp_path, database_url, llm.base_url, temporal_address(client))
    broken = Deps(pool=deps.pool, store=deps.store, registry=deps.registry, llm=deps.llm,
                  sandbox=None, sandbox_problem="bwrap: no permission to create namespaces")
    async with contextlib.AsyncExitStack() as stack:  # code steps have a queue of their own
        for w in build_workers(client, settings, broken):
            await stack.enter_async_context(w)
        result = await outcome(await start_task(client, settings, TaskInput(plan=plan_of(
            {"id": "c", "type": "code", "code": "print(1)"}))))
    assert result.status is Status.FAILED
    error = by_step(result)["c"].error or ""
    assert "SandboxUnavailable" in error
    assert "no permission to create namespaces" in error
