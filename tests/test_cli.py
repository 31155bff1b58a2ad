"""`beestown` as an operator runs it: listings in JSON, the org chart, cancel, refused updates."""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path

import pytest
import pytest_asyncio
from temporalio.client import Client

from cli import dispatch
from cli.session import EXIT_USAGE, BadUsage, CliError, Refused, Session
from models.io import TaskInput
from models.task import Status
from runtime.settings import Settings
from testkit.servers import scratch_database
from tests.helpers import plan_of, run_plan, start_task
from worker import Deps

ROOT = Path(__file__).resolve().parent.parent
ORG_AGENTS = {"ceo", "eng-lead", "research-lead", "data-eng", "tools-eng", "searcher", "writer"}


async def cli(*args: str, settings: Settings | None = None,
              database_url: str | None = None) -> tuple[int, str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OPENAI", "BEESTOWN"))}
    if settings is not None:
        env.update({"TEMPORAL_ADDRESS": settings.temporal_address,
                    "BEESTOWN_TASK_QUEUE": settings.task_queue})
    if database_url is not None:
        env["DATABASE_URL"] = database_url
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "cli", *args, cwd=ROOT, env=env,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(proc.communicate(), timeout=60)
    return proc.returncode or 0, out.decode(), err.decode()


async def test_org_load_then_show_lists_the_chart_with_loads(database_url: str) -> None:
    rc, out, err = await cli("org", "load", "examples/org.yaml", database_url=database_url)
    assert rc == 0, err
    assert "root ceo" in out
    rc, out, err = await cli("org", "show", "--json", database_url=database_url)
    assert rc == 0, err
    chart = json.loads(out)
    assert chart["root"] == "ceo"
    agents = {a["id"]: a for a in chart["agents"]}
    assert set(agents) >= ORG_AGENTS
    assert set(agents["eng-lead"]["reports"]) == {"data-eng", "tools-eng"}
    assert agents["data-eng"]["capacity"] == 2
    assert "python" in agents["data-eng"]["all_skills"]  # the department's skills too
    assert agents["writer"]["review_policy"] == "human"
    assert all(isinstance(agents[a]["load"], int) for a in ORG_AGENTS)
    rc, out, err = await cli("org", "show", database_url=database_url)
    assert rc == 0, err
    assert "eng-lead" in out
    assert "load" in out


async def test_org_load_refuses_a_broken_chart(database_url: str, tmp_path: Path) -> None:
    bad = tmp_path / "org.yaml"
    bad.write_text("agents:\n- {id: a, reports_to: b}\n")
    rc, out, err = await cli("org", "load", str(bad), database_url=database_url)
    assert rc == 2
    assert "unknown manager 'b'" in out + err


async def test_tasks_and_tree_show_a_finished_task_and_what_is_nested_in_it(
    worker: Settings, client: Client, deps: Deps, database_url: str
) -> None:
    result = await run_plan(
        client, worker,
        {"id": "a", "type": "tool", "tool": "echo", "args": {"value": 1}},
        {"id": "b", "type": "tool", "tool": "echo", "args": {"value": 2}, "deps": ["a"]},
    )
    assert result.status.value == "COMPLETED"
    task_id = result.task_id
    # A nested task under subtask a, as a delegating manager would start it (rows only).
    nested = f"{task_id}/a/sub1"
    await deps.store.insert_task(
        nested, TaskInput(plan=plan_of({"id": "x", "type": "write"}), title="deeper",
                          parent_subtask=f"{task_id}/a", assignee="eng-lead", depth=1),
        status=Status.PENDING, created_at=datetime.now(UTC))
    await deps.store.save_plan(nested, plan_of({"id": "x", "type": "write"}),
                                started_at=datetime.now(UTC))
    await deps.store.record_usage(f"u-{uuid.uuid4()}", task_id=nested, subtask=f"{nested}/x",
                                  model="m", prompt_tokens=30, completion_tokens=12)

    (rc, out, err), (rc2, out2, err2), (rc3, out3, err3) = await asyncio.gather(
        cli("tasks", "--json", "--limit", "500", database_url=database_url),
        cli("tree", task_id, "--json", settings=worker, database_url=database_url),
        cli("tree", task_id, settings=worker, database_url=database_url),
    )
    assert rc == 0, err
    rows = {r["id"]: r for r in json.loads(out)}
    assert rows[task_id]["status"] == "COMPLETED"
    assert rows[task_id]["subtasks"] == 2
    assert rows[nested]["parent_subtask"] == f"{task_id}/a"

    assert rc2 == 0, err2
    tree = json.loads(out2)
    assert tree["id"] == task_id
    subs = {s["step_id"]: s for s in tree["subtasks"]}
    assert {k: v["status"] for k, v in subs.items()} == {"a": "COMPLETED", "b": "COMPLETED"}
    assert subs["b"]["dependencies"] == ["a"]
    [deeper] = subs["a"]["tasks"]
    assert deeper["id"] == nested
    assert deeper["assignee"] == "eng-lead"
    assert [s["step_id"] for s in deeper["subtasks"]] == ["x"]
    assert deeper["subtasks"][0]["tokens"] == 42
    assert subs["a"]["total_tokens"] == 42
    assert tree["total_tokens"] == 42

    assert rc3 == 0, err3
    assert "sub1" in out3
    assert "42 tokens" in out3


async def test_review_of_a_subtask_not_waiting_is_refused_and_cancel_ends_the_task(
    worker: Settings, client: Client, database_url: str
) -> None:
    handle = await start_task(client, worker, TaskInput(plan=plan_of(
        {"id": "nap", "type": "tool", "tool": "sleep", "args": {"seconds": 300}})))
    sub = f"{handle.id}/nap"
    for _ in range(100):  # until the child runs
        progress = await handle.query("progress")
        if any(s["status"] == "RUNNING" for s in progress["subtasks"]):
            break
        await asyncio.sleep(0.1)

    (rc, out, err), (rc2, out2, err2) = await asyncio.gather(
        cli("review", sub, "--reviewer", "eng-lead", "--approve",
            settings=worker, database_url=database_url),
        cli("tree", handle.id, "--json", settings=worker, database_url=database_url),
    )
    assert rc == 1, out + err
    assert f"{sub} is not waiting for a review" in err
    assert rc2 == 0, err2
    [nap] = json.loads(out2)["subtasks"]
    assert nap["live"]["status"] == "RUNNING"  # asked the running workflow

    rc, out, err = await cli("cancel", handle.id, "--wait", "--json",
                             settings=worker, database_url=database_url)
    assert rc == 0, out + err
    # CANCELLED, not COMPLETED: the 30 s sleep was interrupted, not waited out.
    assert json.loads(out)["status"] == "CANCELLED"
    desc = await handle.describe()
    assert desc.status is not None
    assert desc.status.name == "CANCELED"
    # The review update never entered the subtask's history.
    events = [e async for e in client.get_workflow_handle(sub).fetch_history_events()]
    assert not any(e.HasField("workflow_execution_update_accepted_event_attributes")
                   for e in events)


async def test_escalations_and_refusals_without_an_open_escalation(
    settings: Settings, database_url: str
) -> None:
    (rc, out, err), (rc2, out2, err2), (rc3, _, err3), (rc4, _, err4) = await asyncio.gather(
        cli("escalations", "--json", database_url=database_url),
        cli("resolve", "no-such-task/a", "--by", "ceo", "--action", "retry",
            settings=settings, database_url=database_url),
        cli("tree", "no-such-task", database_url=database_url),
        cli("resolve", "x/a", "--by", "ceo", "--action", "reassign",
            database_url=database_url),
    )
    assert rc == 0, err
    assert isinstance(json.loads(out), list)
    assert rc2 == 1, out2 + err2
    assert "no-such-task/a" in err2
    assert rc3 == 1
    assert "no task 'no-such-task'" in err3
    assert rc4 == 2
    assert "--assignee" in err4


async def test_help_shows_the_plain_temporal_commands() -> None:
    rc, out, _ = await cli("--help")
    assert rc == 0
    assert "temporal workflow update execute -w T/a --name review" in out
    assert "temporal workflow cancel -w T" in out



@pytest_asyncio.fixture
async def empty_database_url(database_url: str) -> AsyncIterator[str]:
    """A database of its own, into which no org chart was ever loaded."""
    async with scratch_database(database_url, "beestown_empty") as dsn:
        yield dsn


async def test_beneath_without_an_org_chart_says_so_and_exits_2(
    empty_database_url: str,
) -> None:
    rc, out, err = await cli("beneath", "ceo", database_url=empty_database_url)
    assert rc == 2, out + err
    assert err.strip() == "no org chart loaded: beestown org load FILE"


async def test_a_cli_error_prints_its_sentence_and_exits_with_its_code(
    capsys: pytest.CaptureFixture[str],
) -> None:
    async def refuses(args: argparse.Namespace, s: Session) -> int:
        raise CliError("no such thing here", EXIT_USAGE)

    code = await dispatch(argparse.Namespace(func=refuses), Settings())
    assert code == EXIT_USAGE
    assert capsys.readouterr().err.strip() == "no such thing here"
    assert str(CliError("why", 7)) == "why"
    assert (CliError("why").code, Refused("why").code, BadUsage("why").code) == (1, 1, 2)
