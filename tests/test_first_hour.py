"""The first hour, as a new user lives it: everything through the CLI, as subprocesses.

A worker is started before any org chart exists; the demo plan runs; the walk-through's
chart is loaded (the running worker picks it up); its plan runs with `--wait`, which
prints the exact commands for each person it waits on; those commands are run as printed:
a review rejected then approved, an escalation resolved with a new plan.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import shlex
import signal
import sys
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import pytest_asyncio
from temporalio.client import Client

from models.io import Progress, TaskInput
from models.review import Decision, ReviewInput
from models.task import Status
from runtime.documents import load_org, load_plan
from runtime.org_store import OrgStore
from runtime.settings import Settings
from testkit.fake_llm import FakeLLM
from testkit.servers import scratch_database
from tests.conftest import make_settings, temporal_address
from tests.helpers import outcome, plan_of, start_task
from worker import Deps, build_workers, open_deps
from workflows.search import KEYS

ROOT = Path(__file__).resolve().parent.parent
WALK = ROOT / "examples" / "org-walkthrough"


@pytest_asyncio.fixture
async def own_database(database_url: str) -> AsyncIterator[str]:
    """A database of its own: the walk loads its chart, which no other test expects."""
    async with scratch_database(database_url, "beestown_walk") as dsn:
        yield dsn


def _env(client: Client, queue: str, dsn: str, state: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OPENAI", "BEESTOWN"))}
    env.update({"TEMPORAL_ADDRESS": temporal_address(client), "BEESTOWN_TASK_QUEUE": queue,
                "DATABASE_URL": dsn, "BEESTOWN_STATE_DIR": str(state),
                "BEESTOWN_SANDBOX": "local", "BEESTOWN_WORKFLOW_SANDBOX": "1"})
    return env


async def _cli(env: dict[str, str], *args: str) -> tuple[int, str, str]:
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "cli", *args, cwd=ROOT, env=env,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    out, err = await asyncio.wait_for(proc.communicate(), timeout=120)
    return proc.returncode or 0, out.decode(), err.decode()


@contextlib.asynccontextmanager
async def _worker(env: dict[str, str], log: Path) -> AsyncIterator[None]:
    with log.open("w") as sink:
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "worker.py", cwd=ROOT, env=env, stdout=sink, stderr=sink)
    try:
        for _ in range(600):
            text = await asyncio.to_thread(log.read_text)
            if "worker ready" in text:
                break
            assert proc.returncode is None, text
            await asyncio.sleep(0.1)
        else:
            raise AssertionError("the worker never got ready:\n" + text)
        yield
    finally:
        proc.send_signal(signal.SIGTERM)
        await asyncio.wait_for(proc.wait(), timeout=30)


async def test_the_walk_from_the_demo_through_the_organization(
    client: Client, own_database: str, tmp_path: Path
) -> None:
    env = _env(client, f"walk-{uuid.uuid4()}", own_database, tmp_path)
    log = tmp_path / "worker.log"
    async with _worker(env, log):
        assert "no org chart stored" in await asyncio.to_thread(log.read_text)
        # 1. The demo's plan, before any org chart exists.
        rc, out, err = await _cli(env, "run", "--plan", "examples/demo.yaml", "--wait")
        assert rc == 0, out + err
        # 2. The chart, loaded while the worker runs: it applies to the next task.
        rc, out, err = await _cli(env, "org", "load", str(WALK / "org.yaml"))
        assert rc == 0, out + err
        assert "tasks started from now on use it" in out
        # 3. The walk-through's plan, followed with --wait (no terminal: one line a change).
        task_id = f"walk-{uuid.uuid4().hex[:8]}"
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "cli", "run", "--plan", str(WALK / "plan.yaml"),
            "--id", task_id, "--wait", cwd=ROOT, env=env,
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
        assert proc.stdout is not None
        seen: list[str] = []
        done: list[str] = []
        rejected = False
        try:
            while True:
                raw = await asyncio.wait_for(proc.stdout.readline(), timeout=120)
                if not raw:
                    break
                line = raw.decode().rstrip("\n")
                seen.append(line)
                command = line.strip()
                if not command.startswith("beestown "):
                    continue
                argv = shlex.split(command)[1:]
                if argv[0] == "review" and "--reject" in argv and not rejected:
                    argv[argv.index("--feedback") + 1] = "add the returns too"
                elif argv[0] == "review" and "--approve" in argv and rejected:
                    pass
                elif argv[0] == "resolve":
                    at = argv.index("--action")
                    argv[at + 1:at + 2] = ["replan", "--plan", str(WALK / "backup.yaml")]
                else:
                    continue
                rc, out, err = await _cli(env, *argv)
                assert rc == 0, f"{argv}: {out}{err}"
                assert "Traceback" not in out + err
                done.append(f"{argv[0]} {' '.join(a for a in argv if a.startswith('--a'))}")
                rejected = rejected or "--reject" in argv
            rc = await asyncio.wait_for(proc.wait(), timeout=30)
        finally:
            if proc.returncode is None:
                proc.kill()
        stderr = (await proc.stderr.read()).decode() if proc.stderr else ""
        text = "\n".join(seen)
        assert rc == 0, text + stderr
        assert "Traceback" not in text + stderr
        # The waits were shown as they were, each with whom it waits for.
        assert "numbers REVIEWING by lead, round 1" in text, text
        assert "numbers REVIEWING by lead, round 2" in text, text
        assert "sources BLOCKED waiting for boss" in text, text
        assert [d.split()[0] for d in done].count("review") == 2, done
        assert [d.split()[0] for d in done].count("resolve") == 1, done

        # What people look at afterwards says the same.
        rc, out, err = await _cli(env, "tree", task_id, "--json")
        assert rc == 0, err
        tree = json.loads(out)
        assert tree["status"] == "COMPLETED"
        subs = {s["step_id"]: s for s in tree["subtasks"]}
        assert subs["numbers"]["assignee"] == "analyst"  # named by the plan
        assert subs["report"]["assignee"] == "writer"  # chosen by skill
        assert [t["id"] for t in subs["sources"]["tasks"]] == [f"{task_id}/sources/replan1"]
        rc, out, err = await _cli(env, "escalations", "--all", "--json")
        assert rc == 0, err
        [esc] = [e for e in json.loads(out) if e["task_id"] == task_id]
        assert esc["id"] == f"{task_id}/sources#1"
        assert esc["status"] == "resolved"
        rc, out, err = await _cli(env, "run", "--plan", str(WALK / "plan.yaml"), "--json",
                                  "--id", task_id)
        assert rc == 2
        assert "already taken" in err


async def test_wait_says_when_no_worker_serves_the_queue(
    client: Client, database_url: str, tmp_path: Path
) -> None:
    queue = f"nobody-{uuid.uuid4()}"
    env = _env(client, queue, database_url, tmp_path)
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "cli", "run", "--plan", "examples/demo.yaml", "--wait",
        cwd=ROOT, env=env, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    assert proc.stdout is not None
    try:
        lines: list[str] = []
        while True:
            raw = await asyncio.wait_for(proc.stdout.readline(), timeout=60)
            assert raw, "\n".join(lines)
            lines.append(raw.decode())
            if "no worker" in raw.decode():
                break
        assert f"task queue {queue!r}" in lines[-1]
        assert "python worker.py" in lines[-1]
    finally:
        proc.kill()
        await proc.wait()


@pytest_asyncio.fixture
async def walk_worker(client: Client, own_database: str, llm: FakeLLM, tmp_path: Path
                      ) -> AsyncIterator[tuple[Settings, Deps]]:
    """A worker on its own database with the walk-through's chart, roomier for 50 steps."""
    chart = (WALK / "org.yaml").read_text().replace("capacity: 1", "capacity: 60")
    (tmp_path / "org.yaml").write_text(chart)
    settings = make_settings(tmp_path, own_database, llm.base_url, temporal_address(client),
                             org_enabled=True)
    async with open_deps(settings) as deps, contextlib.AsyncExitStack() as stack:
        await OrgStore(deps.pool).save_org(load_org(tmp_path / "org.yaml"))
        for w in build_workers(client, settings, deps, search_attributes=True):
            await stack.enter_async_context(w)
        yield settings, deps


async def test_a_review_sent_the_moment_the_store_says_reviewing_is_accepted_50_times(
    client: Client, walk_worker: tuple[Settings, Deps]
) -> None:
    settings, deps = walk_worker
    steps = [{"id": f"n{i}", "type": "tool", "tool": "echo", "args": {"value": i},
              "assignee": "analyst"} for i in range(50)]
    handle = await start_task(client, settings, TaskInput(plan=plan_of(*steps)))
    approved: set[str] = set()
    closed = asyncio.ensure_future(outcome(handle))
    while not closed.done() and len(approved) < 50:
        rows = await deps.pool.fetch(
            "SELECT id FROM subtasks WHERE task_id = $1 AND status = 'REVIEWING'", handle.id)
        for r in rows:
            if r["id"] in approved:
                continue
            # At once, on the store's word: the workflow must already wait for it.
            await client.get_workflow_handle(r["id"]).execute_update(
                "review", ReviewInput(reviewer_id="lead", decision=Decision.APPROVE))
            approved.add(r["id"])
        await asyncio.sleep(0.01)
    result = await asyncio.wait_for(closed, timeout=120)
    assert result.status is Status.COMPLETED, result.error
    assert len(approved) == 50


async def test_the_task_progress_shows_whom_a_step_waits_for_and_the_web_ui_can_filter(
    client: Client, walk_worker: tuple[Settings, Deps]
) -> None:
    settings, deps = walk_worker
    plan = load_plan(WALK / "plan.yaml", max_steps=50)
    handle = await start_task(client, settings, TaskInput(plan=plan, title=plan.title,
                                                          project_id="first-hour"))
    views: dict[str, object] = {}
    for _ in range(600):
        progress = await handle.query("progress", result_type=Progress)
        views = {v.step_id: v for v in progress.subtasks}
        states = {k: v.status for k, v in views.items()}  # type: ignore[attr-defined]
        if states.get("numbers") is Status.REVIEWING and states.get("sources") is Status.BLOCKED:
            break
        await asyncio.sleep(0.1)
    numbers, sources = views["numbers"], views["sources"]
    assert (numbers.waiting_for, numbers.review_round, numbers.needs_person) == (  # type: ignore[attr-defined]
        "lead", 1, True)
    assert (sources.waiting_for, sources.escalation_id, sources.needs_person) == (  # type: ignore[attr-defined]
        "boss", f"{handle.id}/sources#1", True)
    assert progress.counts == {"REVIEWING": 1, "BLOCKED": 1, "PENDING": 1}
    # The store agrees once the step's own write lands: a step tells its task it waits,
    # then records it (a store never announces a state its workflow is not in yet).
    statuses: dict[str, str] = {}
    for _ in range(100):
        statuses = {r["step_id"]: r["status"] for r in await deps.pool.fetch(
            "SELECT step_id, status FROM subtasks WHERE task_id = $1", handle.id)}
        if statuses.get("sources") == "BLOCKED":
            break
        await asyncio.sleep(0.1)
    assert statuses["numbers"] == "REVIEWING"
    assert statuses["sources"] == "BLOCKED"
    # The Web UI's list can filter by BeesTown's search attributes.
    query = (f"{KEYS[0].name}='REVIEWING' AND {KEYS[1].name}='analyst' "
             f"AND WorkflowId='{handle.id}/numbers'")
    found: list[str] = []
    for _ in range(100):
        found = [w.id async for w in client.list_workflows(query)]
        if found:
            break
        await asyncio.sleep(0.2)
    assert found == [f"{handle.id}/numbers"]
    tasks = [w.id async for w in client.list_workflows(
        f"{KEYS[3].name}='first-hour' AND WorkflowId='{handle.id}'")]
    assert tasks == [handle.id]
    desc = await client.get_workflow_handle(f"{handle.id}/numbers").describe()
    assert "Count the quarter's orders" in (await desc.static_summary() or "")
    assert "reviewer" in (await desc.static_details() or "")
    await handle.cancel()
    assert (await outcome(handle)).status is Status.CANCELLED
