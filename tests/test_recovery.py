"""A worker killed or stopped mid-run: the task completes, and no finished step runs again.

Each test runs real worker processes (`python -m bench.chaos_worker`: worker.py plus a
journal of the work, written outside the sandbox) against the suite's servers. Timing is
bench/chaos.py's business; these only assert the outcome.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import asyncpg
import pytest
from temporalio import activity
from temporalio.client import Client
from temporalio.service import RPCError
from temporalio.worker import Worker

from bench.chaos_kit import (
    WorkerProc,
    duplicate_rows,
    journal_ends,
    journal_times,
    lost_results,
    repeated_work,
    worker_env,
)
from hosting.lifecycle import run_until_stopped
from models.io import TaskInput
from models.task import Status
from runtime.settings import Settings
from tests.conftest import temporal_address
from tests.helpers import outcome, plan_of, start_task

pytestmark = pytest.mark.timeout(180)


def grid(task_id: str, *, layers: int = 2, width: int = 2, seconds: float = 1.0
         ) -> list[dict[str, Any]]:
    steps = []
    for i in range(layers):
        for j in range(width):
            sid = f"l{i}_{j}"
            steps.append({
                "id": sid, "type": "code",
                "deps": [f"l{i-1}_{k}" for k in range(width)] if i else [],
                "code": f"# chaos:{task_id}/{sid}\nimport time\ntime.sleep({seconds})\n"
                        f"print({sid!r})"})
    return steps


@pytest.fixture
def spawn(client: Client, settings: Settings, database_url: str,
          tmp_path: Path) -> Iterator[Any]:
    procs: list[WorkerProc] = []

    def start(**extra: str) -> WorkerProc:
        env = worker_env(address=temporal_address(client), queue=settings.task_queue,
                         database_url=database_url, state_dir=tmp_path,
                         journal=tmp_path / "journal", **extra)
        w = WorkerProc(env=env, log=tmp_path / "worker.log").start()
        procs.append(w)
        return w

    yield start
    for w in procs:
        for pid in w.pids():
            os.kill(pid, signal.SIGKILL)
        w.wait(10)


async def started(journal: Path, prefix: str, n: int) -> None:
    for _ in range(1500):
        keys = await asyncio.to_thread(journal_times, journal, "start")
        if len([k for k in keys if k.startswith(prefix)]) >= n:
            return
        await asyncio.sleep(0.02)
    raise AssertionError(f"{prefix}: {n} units never started")


async def run_with_fault(client: Client, settings: Settings, database_url: str,
                         tmp_path: Path, spawn: Any, fault: str) -> None:
    journal = tmp_path / "journal"
    first = spawn()
    await first.ready()
    task_id = f"rec-{fault}-{os.urandom(3).hex()}"
    handle = await start_task(client, settings, TaskInput(plan=plan_of(*grid(task_id))),
                              task_id=task_id)
    await started(journal, f"{task_id}/l1_", 2)
    await asyncio.sleep(0.4)
    if fault == "kill9":  # the worker process; its supervisor forks another
        pid = first.worker_pid()
        assert pid is not None
        assert pid != first.proc.pid
        os.kill(pid, signal.SIGKILL)
    elif fault == "kill9cold":  # everything; a new process is started from scratch
        for pid in first.pids():
            os.kill(pid, signal.SIGKILL)
        spawn()
    else:  # a deploy: the old one is told to stop, a new one starts
        first.signal(signal.SIGTERM)
        spawn()
    result = await asyncio.wait_for(outcome(handle), timeout=120)
    assert result.status is Status.COMPLETED, result.error
    if fault == "sigterm":
        assert first.wait(20) == 0, "the stopped worker did not exit cleanly"
    ends = journal_ends(journal)
    # Every step's work ended at least once (the killed ones ran again), none twice.
    assert {k for k in ends if k.startswith(task_id)} == {
        f"{task_id}/l{i}_{j}" for i in range(2) for j in range(2)}
    assert repeated_work(journal) == []
    conn = await asyncpg.connect(database_url)
    try:
        assert await duplicate_rows(conn, task_id) == {}
        assert await lost_results(conn, task_id, set(ends)) == []
    finally:
        await conn.close()


@pytest.mark.parametrize("fault", ["kill9", "kill9cold", "sigterm"])
async def test_worker_fault_mid_run_completes_without_repeats(
    client: Client, settings: Settings, database_url: str, tmp_path: Path, spawn: Any,
    fault: str,
) -> None:
    await run_with_fault(client, settings, database_url, tmp_path, spawn, fault)


# 4 s: longer than a code step's 3 s heartbeat timeout, so it holds only if the stopping
# worker still heartbeats during its grace.
@pytest.mark.parametrize("seconds", [1.5, 4.0])
async def test_sigterm_lets_a_running_step_finish_within_the_grace(
    client: Client, settings: Settings, database_url: str, tmp_path: Path, spawn: Any,
    seconds: float,
) -> None:
    """A deploy: the stopped worker finishes the step it was running (one attempt, its
    work done once, by that worker) while a new worker takes the rest of the task."""
    journal = tmp_path / "journal"
    first = spawn()
    await first.ready()
    task_id = f"rec-grace-{os.urandom(3).hex()}"
    steps: list[dict[str, Any]] = [{"id": "a", "type": "code",
              "code": f"# chaos:{task_id}/a\nimport time\ntime.sleep({seconds})\nprint(1)"},
             {"id": "b", "type": "code", "deps": ["a"],
              "code": f"# chaos:{task_id}/b\nprint(2)"}]
    handle = await start_task(client, settings, TaskInput(plan=plan_of(*steps)),
                              task_id=task_id)
    await started(journal, f"{task_id}/a", 1)
    runner = first.worker_pid()
    first.signal(signal.SIGTERM)
    spawn()
    result = await asyncio.wait_for(outcome(handle), timeout=60)
    assert result.status is Status.COMPLETED, result.error
    assert await asyncio.to_thread(first.wait, 30) == 0
    history = await client.get_workflow_handle(f"{task_id}/a").fetch_history()
    attempts = [e.activity_task_started_event_attributes.attempt for e in history.events
                if e.HasField("activity_task_started_event_attributes")]
    assert attempts == [1], attempts
    ends = [ln.split() for ln in journal.read_text().splitlines()
            if ln.split()[2:] == ["end", f"{task_id}/a"]]
    assert [int(e[1]) for e in ends] == [runner], ends
    assert repeated_work(journal) == []


async def test_sigterm_during_a_tool_step_run_as_a_local_activity(
    client: Client, settings: Settings, database_url: str, tmp_path: Path, spawn: Any,
) -> None:
    """An all-roles worker runs tool steps as local activities (inside a workflow task):
    stopped during one, the task still completes and the tool's work ends once."""
    journal = tmp_path / "journal"
    first = spawn()
    await first.ready()
    task_id = f"rec-local-{os.urandom(3).hex()}"
    steps: list[dict[str, Any]] = [
        {"id": "a", "type": "tool", "tool": "work",
         "args": {"key": f"{task_id}/a", "seconds": 1.5}},
        {"id": "b", "type": "code", "deps": ["a"],
         "code": f"# chaos:{task_id}/b\nprint(2)"}]
    handle = await start_task(client, settings, TaskInput(plan=plan_of(*steps)),
                              task_id=task_id)
    await started(journal, f"{task_id}/a", 1)
    first.signal(signal.SIGTERM)
    spawn()
    result = await asyncio.wait_for(outcome(handle), timeout=60)
    assert result.status is Status.COMPLETED, result.error
    assert await asyncio.to_thread(first.wait, 30) == 0
    assert journal_ends(journal)[f"{task_id}/a"] == 1
    assert repeated_work(journal) == []
    history = await client.get_workflow_handle(f"{task_id}/a").fetch_history()
    assert any(e.marker_recorded_event_attributes.marker_name == "core_local_activity"
               for e in history.events if e.HasField("marker_recorded_event_attributes"))


@pytest.mark.parametrize("ends", ["grace over", "second signal"])
async def test_sigterm_hands_steps_still_running_after_the_grace_back_at_once(
    client: Client, settings: Settings, database_url: str, tmp_path: Path, spawn: Any,
    ends: str,
) -> None:
    """A step still running when the grace ends (after 0.5 s, or at a second SIGTERM
    within a grace of 60 s) goes back to Temporal as the worker stops, not after a
    timeout: the attempt fails as `WorkerShutdown`, and the other worker runs it again."""
    journal = tmp_path / "journal"
    grace = "0.5" if ends == "grace over" else "60"
    workers = [spawn(BEESTOWN_SHUTDOWN_GRACE=grace), spawn(BEESTOWN_SHUTDOWN_GRACE=grace)]
    for w in workers:
        await w.ready()
    task_id = f"rec-hand-{os.urandom(3).hex()}"
    steps = [{"id": "long", "type": "code",
              "code": f"# chaos:{task_id}/long\nimport time\ntime.sleep(5)\nprint(1)"}]
    handle = await start_task(client, settings, TaskInput(plan=plan_of(*steps)),
                              task_id=task_id)
    await started(journal, f"{task_id}/long", 1)
    child = client.get_workflow_handle(f"{task_id}/long")
    pending = (await child.describe()).raw_description.pending_activities
    pid = int(pending[0].last_worker_identity.partition("@")[0])
    [runner] = [w for w in workers if pid in w.pids()]
    runner.signal(signal.SIGTERM)
    if ends == "second signal":
        await asyncio.sleep(0.5)
        runner.signal(signal.SIGTERM)
    # Well before the 5 s step would end (or the 60 s grace): it was handed back.
    assert await asyncio.to_thread(runner.wait, 4) == 0
    result = await asyncio.wait_for(outcome(handle), timeout=60)
    assert result.status is Status.COMPLETED, result.error
    history = await child.fetch_history()
    [last] = [e.activity_task_started_event_attributes for e in history.events
              if e.HasField("activity_task_started_event_attributes")]
    assert last.attempt == 2
    assert last.last_failure.application_failure_info.type == "WorkerShutdown", (
        last.last_failure)
    assert repeated_work(journal) == []


async def test_a_model_call_on_a_worker_that_vanished_is_retried_after_its_heartbeat_timeout(
    client: Client, settings: Settings, database_url: str, tmp_path: Path, llm: Any,
) -> None:
    """No restart on this host to take the work back: the worker heartbeats for the
    waiting model call, so its death is noticed by the heartbeat timeout (not after the
    call's five-minute start-to-close timeout) and the other worker asks again."""
    from temporalio.api.enums.v1 import TimeoutType

    from testkit.fake_llm import Scripted

    first_call = {"seen": False}

    def slow_first(body: dict[str, Any]) -> Scripted:
        if not first_call["seen"]:
            first_call["seen"] = True
            return Scripted("too late", delay_s=60)
        return Scripted("the answer")

    llm.chaos = slow_first
    workers = []
    for _ in range(2):
        env = worker_env(address=temporal_address(client), queue=settings.task_queue,
                         database_url=database_url, state_dir=tmp_path,
                         journal=tmp_path / "journal", llm_url=llm.base_url,
                         BEESTOWN_TAKE_BACK="false")  # as if the dead one were elsewhere
        workers.append(WorkerProc(env=env, log=tmp_path / "worker.log").start())
    try:
        for w in workers:
            await w.ready()
        task_id = f"rec-hb-{os.urandom(3).hex()}"
        handle = await start_task(client, settings, TaskInput(plan=plan_of(
            {"id": "a", "type": "search", "description": "think"})), task_id=task_id)
        child = client.get_workflow_handle(f"{task_id}/a")
        identity = ""
        for _ in range(600):
            with contextlib.suppress(RPCError):
                pending = (await child.describe()).raw_description.pending_activities
                if pending and pending[0].last_worker_identity and first_call["seen"]:
                    identity = pending[0].last_worker_identity
                    break
            await asyncio.sleep(0.05)
        pid = int(identity.partition("@")[0])
        [victim] = [w for w in workers if pid in w.pids()]
        for p in victim.pids():
            os.kill(p, signal.SIGKILL)
        result = await asyncio.wait_for(outcome(handle), timeout=120)
        assert result.status is Status.COMPLETED, result.error
        history = await child.fetch_history()
        started = [e.activity_task_started_event_attributes for e in history.events
                   if e.HasField("activity_task_started_event_attributes")]
        assert started[-1].attempt == 2
        assert started[-1].last_failure.timeout_failure_info.timeout_type == (
            TimeoutType.TIMEOUT_TYPE_HEARTBEAT), started[-1].last_failure
    finally:
        for w in workers:
            for p in w.pids():
                os.kill(p, signal.SIGKILL)
            w.wait(10)


@activity.defn
async def _nothing() -> None:
    """An activity, so the Worker below has something to serve."""


async def test_a_worker_stopped_as_it_starts_still_exits(client: Client) -> None:
    """A stop that comes while the workers are still validating their namespace (right
    after "worker ready") shuts them down: it used to skip them, and the process waited
    for ever."""
    worker = Worker(client, task_queue=f"stop-at-start-{os.urandom(3).hex()}",
                    activities=[_nothing])
    stop = asyncio.Event()
    stop.set()
    await asyncio.wait_for(run_until_stopped([worker], stop), timeout=30)
    assert worker.is_shutdown


def test_an_unreaped_worker_counts_as_dead() -> None:
    """A worker killed together with its supervisor is a zombie until someone reaps it:
    its work must be taken back already (it used to wait for the reaping)."""
    import socket
    import subprocess
    import time

    from hosting.lifecycle import _dead_here, worker_identity

    me = worker_identity()
    host = socket.gethostname()
    live = subprocess.Popen(["sleep", "30"])
    gone = subprocess.Popen(["true"])
    try:
        for _ in range(200):  # exited, not reaped: a zombie
            if Path(f"/proc/{gone.pid}/stat").read_text().rpartition(")")[2].split()[0] == "Z":
                break
            time.sleep(0.01)
        assert _dead_here(f"{gone.pid}@{host}/0", me)
        assert not _dead_here(f"{live.pid}@{host}/0", me)
        assert not _dead_here(f"{gone.pid}@elsewhere/0", me)
    finally:
        live.kill()
        live.wait()
        gone.wait()
    assert _dead_here(f"{gone.pid}@{host}/0", me)
