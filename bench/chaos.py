"""Faults, each beside a clean run of the same plan in the same run, and what they cost.

    python bench/chaos.py [--only kill9,sigterm,...] [--repeat N]

Prints one row per fault: completed, repeated steps (a completed step's work ran again,
counted at the tool, the sandbox or the LLM server), duplicate rows (in any table), lost
results (work that ended but whose result is not stored) and the recovery delay (the
faulted run's makespan minus the clean run's). Work that ran again because its worker was
killed after the work ended but before its result was stored (the step had not completed:
activities run at least once) is named in the note, not counted as repeated.

Servers: a tuned Temporal dev server of its own (so it can be killed and restarted with
its --db-filename), a scratch database (on the local PostgreSQL, or on a PostgreSQL
cluster of its own for the outage fault), the scripted LLM of tests/fake_llm.py.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import random
import re
import signal
import statistics
import sys
import time
import uuid
from collections.abc import Awaitable, Callable, Coroutine
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from temporalio.client import Client, WorkflowFailureError
from temporalio.contrib.pydantic import pydantic_data_converter

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.chaos_kit import (
    ROOT,
    Audit,
    PgCluster,
    TemporalDev,
    WorkerProc,
    audit,
    journal_times,
    killable_servers,
    worker_env,
)
from models.io import TaskInput, TaskResult
from models.plan import Plan
from models.task import Status
from testkit.fake_llm import FakeLLM, Scripted
from workflows import policies

STEP_S = 1.5


def code_step(task_id: str, sid: str, deps: list[str], seconds: float = STEP_S
              ) -> dict[str, Any]:
    return {"id": sid, "type": "code", "deps": deps,
            "code": f"# chaos:{task_id}/{sid}\nimport time\ntime.sleep({seconds})\n"
                    f"print({sid!r})"}


def tool_step(task_id: str, sid: str, deps: list[str], seconds: float = 0.3
              ) -> dict[str, Any]:
    return {"id": sid, "type": "tool", "tool": "work", "deps": deps,
            "args": {"key": f"{task_id}/{sid}", "seconds": seconds}}


def grid(task_id: str, layers: int = 3, width: int = 3) -> Plan:
    """`layers` x `width` code steps of STEP_S; each depends on the whole layer before."""
    steps = []
    for i in range(layers):
        for j in range(width):
            deps = [f"l{i-1}_{k}" for k in range(width)] if i else []
            steps.append(code_step(task_id, f"l{i}_{j}", deps))
    return Plan.model_validate({"steps": steps})


@dataclass
class Row:
    fault: str
    completed: str
    repeated: int
    duplicates: int
    lost: int
    clean_s: float | None
    faulted_s: float | None
    note: str = ""

    def cells(self) -> list[str]:
        delay = (f"{self.faulted_s - self.clean_s:+.2f} s"
                 if self.faulted_s is not None and self.clean_s is not None else "-")
        def fmt(v: float | None) -> str:
            return f"{v:.2f}" if v is not None else "-"

        return [self.fault, self.completed, str(self.repeated), str(self.duplicates),
                str(self.lost), fmt(self.clean_s), fmt(self.faulted_s), delay, self.note]


HEADER = ["fault", "completed", "repeated steps", "duplicate rows", "lost results",
          "clean s", "faulted s", "recovery delay", "note"]


class Bench:
    def __init__(self, tmp: Path, temporal: TemporalDev, database_url: str, llm: FakeLLM
                 ) -> None:
        self.tmp = tmp
        self.temporal = temporal
        self.database_url = database_url
        self.llm = llm
        self.client: Client | None = None
        self.workers: list[WorkerProc] = []

    async def connect(self) -> Client:
        for _ in range(200):
            try:
                self.client = await Client.connect(
                    self.temporal.address, data_converter=pydantic_data_converter)
                return self.client
            except RuntimeError:
                await asyncio.sleep(0.1)
        raise RuntimeError("Temporal never came up")

    def worker(self, queue: str, journal: Path, *, database_url: str | None = None,
               **extra: str) -> WorkerProc:
        env = worker_env(address=self.temporal.address, queue=queue,
                         database_url=database_url or self.database_url,
                         state_dir=self.tmp / "state", journal=journal,
                         llm_url=self.llm.base_url, **extra)
        w = WorkerProc(env=env, log=self.tmp / f"worker-{queue}.log").start()
        self.workers.append(w)
        return w

    async def run(self, queue: str, task_id: str, plan: Plan, *,
                  during: Callable[[float], Coroutine[Any, Any, None]] | None = None,
                  limit: float = 180) -> tuple[TaskResult | None, float]:
        """Start the task; run `during(t0)` beside it; return its result and makespan."""
        assert self.client is not None
        t0 = time.monotonic()
        handle = await self.client.start_workflow(
            "TaskWorkflow", TaskInput(plan=plan), id=task_id, task_queue=queue,
            task_timeout=policies.CHILD_TASK_TIMEOUT)  # as starter.py does
        side = asyncio.create_task(during(t0)) if during else None
        result: TaskResult | None = None
        with contextlib.suppress(TimeoutError):
            result = await asyncio.wait_for(self._result(handle), timeout=limit)
        elapsed = time.monotonic() - t0
        if side is not None:
            await side
        return result, elapsed

    async def clean_run(self, queue: str, slug: str, plan: Callable[[str], Plan]) -> float:
        """Run `plan` with no fault; return its makespan; raise if it did not complete."""
        task_id = f"clean-{slug}-{uuid.uuid4().hex[:6]}"
        result, took = await self.run(queue, task_id, plan(task_id))
        if result is None or result.status is not Status.COMPLETED:
            raise RuntimeError(f"{slug}: the clean run failed: {result and result.error}")
        return took

    async def _result(self, handle: Any) -> TaskResult:
        while True:
            try:
                return TaskResult.model_validate(await handle.result())
            except WorkflowFailureError as e:
                from cli.run import result_of_failure

                return result_of_failure(handle.id, e)
            except RuntimeError:  # the server is down: ask again
                await asyncio.sleep(0.2)
                with contextlib.suppress(RuntimeError):
                    await self.connect()
                    handle = self.client.get_workflow_handle(handle.id)  # type: ignore[union-attr]

    async def audit(self, task_id: str, result: TaskResult | None, journal: Path,
                    database_url: str | None = None) -> Audit:
        done = result is not None and result.status is Status.COMPLETED
        return await audit(database_url or self.database_url, task_id, journal, completed=done)

    async def dump_timeline(self, task_id: str, workflow_ids: list[str]) -> None:
        """Write each workflow's history (event, seconds since the task began) to the tmp dir."""
        assert self.client is not None
        lines = []
        t0 = None
        for wid in workflow_ids:
            hist = await self.client.get_workflow_handle(wid).fetch_history()
            for ev in hist.events:
                at = ev.event_time.ToDatetime().timestamp()
                t0 = t0 if t0 is not None else at
                kind = ev.WhichOneof("attributes") or ""
                lines.append(f"{at - t0:8.3f} {wid:30} {kind.replace('_event_attributes', '')}")
        (self.tmp / f"{task_id}.timeline").write_text("\n".join(lines) + "\n")

    def llm_repeats(self, task_id: str) -> int:
        """Model turns of `task_id` the LLM server answered (200) more than once."""
        seen: dict[str, int] = {}
        for body, status in self.llm.answered:
            key = turn_key(body)
            if status == 200 and key.startswith(task_id + "/"):
                seen[key] = seen.get(key, 0) + 1
        return sum(1 for n in seen.values() if n > 1)

    def stop_all(self) -> None:
        for w in self.workers:
            w.signal(signal.SIGKILL)
            w.wait(5)
        self.workers.clear()


def _started(journal: Path, prefix: str) -> set[str]:
    return {k for k in journal_times(journal, "start") if k.startswith(prefix)}


async def when_started(journal: Path, prefix: str, n: int, t0: float,
                       limit: float = 60) -> float:
    """Wait until `n` units whose key starts with `prefix` have started; return time."""
    while time.monotonic() - t0 < limit:
        if len(await asyncio.to_thread(_started, journal, prefix)) >= n:
            return time.monotonic()
        await asyncio.sleep(0.02)
    raise TimeoutError(f"{prefix}: never started {n}")


def cut_note(cut: list[str]) -> list[str]:
    """A note for work that ran again because its worker died between the end of the work
    and the write of its result (not a repeat: the step had not completed)."""
    return [f"{len(cut)} ran again, cut after its work ended and before its result was "
            f"stored: {', '.join(cut)}"] if cut else []


# -- faults ---------------------------------------------------------------------------------
async def worker_fault(b: Bench, slug: str, name: str, *, into_step: float = 0.7) -> Row:
    """Layer 2 of a 3x3 grid is `into_step` s in when the worker meets the fault:

    kill9      kill -9 of the worker process; its supervisor forks a new one at once
    kill9cold  kill -9 of the worker and its supervisor; a new process starts at once
    sigterm    SIGTERM (a deploy); a new process starts at once
    sigtermwait SIGTERM; a new process starts once the old one has exited (stop, then start)
    rolling    a new process starts; once it is ready, the old one gets SIGTERM
    """
    queue = f"q-{slug}-{uuid.uuid4().hex[:6]}"
    journal = b.tmp / f"{queue}.journal"
    first = b.worker(queue, journal)
    await first.ready()
    clean_s = await b.clean_run(queue, slug, grid)
    fault_id = f"{slug}-{uuid.uuid4().hex[:6]}"
    notes: list[str] = []
    if slug == "rolling":  # the new version is up before the old one is told to stop
        await b.worker(queue, journal).ready()

    async def fault(t0: float) -> None:
        await when_started(journal, f"{fault_id}/l1_", 3, t0)
        await asyncio.sleep(into_step)
        at = time.monotonic()
        if slug == "kill9":
            pid = first.worker_pid()
            assert pid is not None
            mark = first.log_size()
            os.kill(pid, signal.SIGKILL)
            took = await first.ready(since=mark) - (at - first.started_at)
            notes.append(f"supervisor's new worker ready in {took:.1f} s")
        elif slug in ("kill9cold", "sigterm", "sigtermwait"):
            if slug == "kill9cold":
                for pid in first.pids():
                    os.kill(pid, signal.SIGKILL)
            else:
                first.signal(signal.SIGTERM)
            if slug == "sigtermwait":
                await asyncio.to_thread(first.wait, 60)
                notes.append(f"old worker exited after {time.monotonic() - at:.1f} s")
            second = b.worker(queue, journal)
            notes.append(f"new worker ready in {await second.ready():.1f} s")
        else:
            first.signal(signal.SIGTERM)
        notes.insert(0, f"at {at - t0:.1f} s")

    result, faulted_s = await b.run(queue, fault_id, grid(fault_id), during=fault)
    a = await b.audit(fault_id, result, journal)
    notes += cut_note(a.cut)
    await b.dump_timeline(fault_id, [fault_id] + [f"{fault_id}/l{i}_{j}" for i in range(3)
                                                  for j in range(3)])
    b.stop_all()
    return Row(name, "yes" if a.completed else "NO", len(a.repeated),
               sum(a.duplicates.values()), len(a.lost), clean_s, faulted_s, "; ".join(notes))


def mixed_grid(task_id: str) -> Plan:
    """3 layers of 3: code steps, then `work` tool steps, then code steps."""
    steps = []
    for i in range(3):
        for j in range(3):
            deps = [f"l{i-1}_{k}" for k in range(3)] if i else []
            sid = f"l{i}_{j}"
            steps.append(tool_step(task_id, sid, deps, STEP_S) if i == 1
                         else code_step(task_id, sid, deps))
    return Plan.model_validate({"steps": steps})


async def clean_then_faulted(
    b: Bench, slug: str, name: str, plan: Callable[[str], Plan],
    fault: Callable[[float, str, Path], Awaitable[str]], *,
    database_url: str | None = None, env: dict[str, str] | None = None,
    clean_env: dict[str, str] | None = None, trigger: str = "l1_",
) -> Row:
    """A clean run, then the same plan with `fault(t0, task_id, journal)` once layer 1 is
    under way; the fault returns a note."""
    journal = b.tmp / f"{slug}.journal"
    q_clean, q_fault = f"q-{slug}-clean-{uuid.uuid4().hex[:4]}", f"q-{slug}-{uuid.uuid4().hex[:4]}"
    clean_w = b.worker(q_clean, journal, database_url=database_url, **(clean_env or env or {}))
    fault_w = b.worker(q_fault, journal, database_url=database_url, **(env or {}))
    await clean_w.ready()
    await fault_w.ready()
    clean_s = await b.clean_run(q_clean, slug, plan)
    clean_w.signal(signal.SIGTERM)
    fault_id = f"{slug}-{uuid.uuid4().hex[:6]}"
    notes: list[str] = []

    async def during(t0: float) -> None:
        await when_started(journal, f"{fault_id}/{trigger}", 1, t0)
        notes.append(await fault(t0, fault_id, journal))

    result, faulted_s = await b.run(q_fault, fault_id, plan(fault_id), during=during)
    a = await b.audit(fault_id, result, journal, database_url)
    repeated = len(a.repeated) + b.llm_repeats(fault_id)
    notes += cut_note(a.cut)
    b.stop_all()
    if result is not None and result.status is not Status.COMPLETED:
        notes.append(f"error: {result.error}")
    if a.duplicates:
        notes.append(f"duplicates: {a.duplicates}")
    return Row(name, "yes" if a.completed else "NO", repeated, sum(a.duplicates.values()),
               len(a.lost), clean_s, faulted_s, "; ".join(notes))


async def temporal_restart(b: Bench) -> Row:
    async def fault(t0: float, task_id: str, journal: Path) -> str:
        await asyncio.sleep(0.7)
        at = time.monotonic() - t0
        b.temporal.kill()
        await asyncio.sleep(2)
        await b.temporal.start()
        return f"server killed at {at:.1f} s, back {time.monotonic() - t0 - at:.1f} s later"

    return await clean_then_faulted(b, "temporal", "Temporal dev server kill -9 + restart",
                                    mixed_grid, fault)


async def postgres_outage(b: Bench) -> Row:
    pg = PgCluster()
    await pg.create()
    try:
        async def fault(t0: float, task_id: str, journal: Path) -> str:
            await asyncio.sleep(0.7)
            at = time.monotonic() - t0
            await asyncio.to_thread(pg.stop)
            await asyncio.sleep(10)
            await asyncio.to_thread(pg.start)
            return f"PostgreSQL down at {at:.1f} s for {time.monotonic() - t0 - at:.1f} s"

        return await clean_then_faulted(b, "postgres", "PostgreSQL down 10 s", mixed_grid,
                                        fault, database_url=pg.dsn)
    finally:
        await asyncio.to_thread(pg.destroy)


def agent_plan(task_id: str) -> Plan:
    """Two layers of 3 agent steps; each step's model calls `work` once, then answers."""
    steps = []
    for i in range(2):
        for j in range(3):
            steps.append({"id": f"l{i}_{j}", "type": "search", "title": f"l{i}_{j}",
                          "description": f"agent step l{i}_{j} of {task_id}",
                          "deps": [f"l{i-1}_{k}" for k in range(3)] if i else []})
    return Plan.model_validate({"steps": steps})


def llm_storm(b: Bench) -> Awaitable[Row]:
    rng = random.Random(11)
    faults = [Scripted(status=429, error="slow down", headers={"Retry-After": "1"}),
              Scripted(status=500, error="oops"), Scripted(status=503, error="busy"),
              Scripted(delay_s=2.5), Scripted(close=True)]
    storming = {"on": False}
    burst: dict[str, int] = {}

    def storm(body: dict[str, Any]) -> Scripted | None:
        key = turn_key(body)
        if storming["on"] and rng.random() < 0.6 and burst.get(key, 0) < 3:
            burst[key] = burst.get(key, 0) + 1
            return rng.choice(faults)
        return agent_reply(body)

    async def fault(t0: float, task_id: str, journal: Path) -> str:
        storming["on"] = True
        return "storm on from layer 1"

    b.llm.chaos = storm
    return clean_then_faulted(b, "llmstorm", "LLM storm (429+Retry-After, 5xx, timeouts, "
                              "closed connections)", agent_plan, fault,
                              env={"BEESTOWN_LLM_TIMEOUT": "2"}, trigger="l0_")


def turn_key(body: dict[str, Any]) -> str:
    """`<subtask>#<turn>` of an agent turn's request (turn = assistant messages so far)."""
    text = "\n".join(str(m.get("content") or "") for m in body.get("messages", []))
    m = re.search(r"agent step (\S+) of (\S+)", text)
    turn = sum(1 for m2 in body.get("messages", []) if m2.get("role") == "assistant")
    return f"{m.group(2)}/{m.group(1)}#{turn}" if m else "?"


def agent_reply(body: dict[str, Any]) -> Scripted:
    """Turn 0 calls `work` (journaled under the subtask id); turn 1 answers."""
    key = turn_key(body)
    sub, _, turn = key.partition("#")
    if turn == "0":
        return Scripted(tool_calls=[{"id": "c1", "type": "function", "function": {
            "name": "work", "arguments": json.dumps({"key": sub, "seconds": 0.3})}}])
    return Scripted(f"done {sub}")


def mcp_faults(b: Bench) -> Awaitable[Row]:
    def tools_file(mode_of: dict[str, str], name: str) -> str:
        servers = [{"name": srv, "transport": "stdio", "command": sys.executable,
                    "args": ["-m", "bench.chaos_mcp", "--mode", mode,
                             "--journal", str(b.tmp / "mcp.journal"),
                             "--state", str(b.tmp / f"mcp-state-{name}")],
                    "env": {"PYTHONPATH": str(ROOT)}, "timeout_s": 3,
                    # Calls time out after 3 s; a start is given 10 s, as an operator
                    # configures a server known to start slowly (with 3 s, the 4 s
                    # server is down for good: every open is stopped at 3 s).
                    "start_timeout_s": 10}
                   for srv, mode in mode_of.items()]
        path = b.tmp / f"tools-{name}.json"
        path.write_text(json.dumps({"tools": servers}))
        return str(path)

    faulty = tools_file({"dying": "die", "slow": "slow", "hanging": "hang"}, "faulty")
    # The clean run: the same servers, each failing only once per key too, but on keys
    # it has already seen (its state dir is pre-marked) - i.e. well-behaved.
    clean = tools_file({"dying": "die", "slow": "die", "hanging": "hang"}, "clean")

    def plan(task_id: str) -> Plan:
        steps = []
        for i, srv in enumerate(["dying", "slow", "hanging"] * 2):
            sid = f"l{i // 3}_{i % 3}"
            steps.append({"id": sid, "type": "tool", "tool": f"{srv}.work",
                          "args": {"key": f"{task_id}/{sid}", "seconds": 1.0},
                          "deps": [f"l0_{k}" for k in range(3)] if i >= 3 else []})
        return Plan.model_validate({"steps": steps})

    state = b.tmp / "mcp-state-clean"
    state.mkdir(exist_ok=True)
    return clean_then_faulted_mcp(b, plan, faulty, clean, state)


async def clean_then_faulted_mcp(b: Bench, plan: Callable[[str], Plan], faulty: str,
                                 clean: str, state: Path) -> Row:
    # Pre-mark every key the clean run will use, so its servers never misbehave.
    orig_plan = plan

    def clean_plan(task_id: str) -> Plan:
        p = orig_plan(task_id)
        for s in p.steps:
            for mode in ("die", "hang"):
                (state / f"{mode}-{s.args['key'].replace('/', '_')}").touch()
        return p

    journal = b.tmp / "mcp.journal"
    q_clean, q_fault = f"q-mcp-clean-{uuid.uuid4().hex[:4]}", f"q-mcp-{uuid.uuid4().hex[:4]}"
    clean_w = b.worker(q_clean, journal, BEESTOWN_TOOLS_FILE=clean)
    fault_w = b.worker(q_fault, journal, BEESTOWN_TOOLS_FILE=faulty)
    await clean_w.ready()
    await fault_w.ready()
    clean_s = await b.clean_run(q_clean, "mcp", clean_plan)
    fault_id = f"mcp-{uuid.uuid4().hex[:6]}"
    result, faulted_s = await b.run(q_fault, fault_id, orig_plan(fault_id))
    a = await b.audit(fault_id, result, journal)
    b.stop_all()
    note = "dies mid-call / 4 s to start / hangs past its 3 s timeout, first call of each key"
    if result is not None and result.status is not Status.COMPLETED:
        note += f"; error: {result.error}"
    note = "; ".join([note, *cut_note(a.cut)])
    return Row("MCP servers: dying, slow to start, hanging", "yes" if a.completed else "NO",
               len(a.repeated), sum(a.duplicates.values()), len(a.lost), clean_s, faulted_s,
               note)


def mixed30(task_id: str) -> Plan:
    """30 steps in 6 layers of 5: code (1 s), `work` tool (0.5 s) and agent steps (a
    model turn calling `work`, then an answer), each on 1-2 steps of the layer before."""
    rng = random.Random(task_id)
    steps = []
    for i in range(6):
        for j in range(5):
            sid = f"l{i}_{j}"
            deps = sorted({f"l{i-1}_{rng.randrange(5)}" for _ in range(2)}) if i else []
            kind = (i * 5 + j) % 3
            if kind == 0:
                steps.append(code_step(task_id, sid, deps, 1.0))
            elif kind == 1:
                steps.append(tool_step(task_id, sid, deps, 0.5))
            else:
                steps.append({"id": sid, "type": "search", "title": sid, "deps": deps,
                              "description": f"agent step {sid} of {task_id}"})
    return Plan.model_validate({"steps": steps})


async def ten_kills(b: Bench) -> Row:
    """Ten runs of mixed30 on two workers; in each, kill -9 one worker at a random moment
    (even runs: the worker process, its supervisor forks another; odd runs: the whole
    worker, and a new one is started)."""
    rng = random.Random(7)
    b.llm.chaos = agent_reply
    queue = f"q-ten-{uuid.uuid4().hex[:4]}"
    journal = b.tmp / "ten.journal"
    ws = [b.worker(queue, journal), b.worker(queue, journal)]
    for w in ws:
        await w.ready()
    clean_s = await b.clean_run(queue, "ten", mixed30)
    done, repeated, dups, lost, makespans, notes = 0, 0, 0, 0, [], []
    cut: list[str] = []
    for run in range(10):
        task_id = f"ten{run}-{uuid.uuid4().hex[:6]}"
        at = rng.uniform(0.5, clean_s * 0.9)

        async def fault(t0: float, run: int = run, at: float = at) -> None:
            await asyncio.sleep(at)
            victim = rng.randrange(2)
            w = ws[victim]
            if run % 2 == 0:
                pid = w.worker_pid()
                if pid is not None:
                    os.kill(pid, signal.SIGKILL)
            else:
                for pid in w.pids():
                    os.kill(pid, signal.SIGKILL)
                ws[victim] = b.worker(queue, journal)
            notes.append(f"{at:.1f}")

        result, took = await b.run(queue, task_id, mixed30(task_id), during=fault)
        a = await b.audit(task_id, result, journal)
        done += a.completed
        repeated += len(a.repeated) + b.llm_repeats(task_id)
        cut += a.cut
        dups = max(dups, sum(a.duplicates.values()))
        lost += len(a.lost)
        makespans.append(took)
        for w in ws:
            with contextlib.suppress(TimeoutError, RuntimeError):
                await w.ready(limit=60)
    b.stop_all()
    return Row("10 x kill -9 of one of 2 workers, 30 mixed steps", f"{done}/10", repeated,
               dups, lost, clean_s, statistics.median(makespans),
               "; ".join([f"kills at {', '.join(notes)} s; faulted s = median; max "
                          f"{max(makespans):.1f} s", *cut_note(cut)]))


async def heartbeat_cost(b: Bench) -> str:
    """Heartbeat RPCs reaching the server per running step, per kind: 4 code steps of
    12 s, then 4 agent steps whose one model call takes 12 s."""
    queue = f"q-hb-{uuid.uuid4().hex[:4]}"
    journal = b.tmp / "hb.journal"
    await b.worker(queue, journal).ready()
    out = []
    slow = {"on": True}

    def slow_model(body: dict[str, Any]) -> Scripted:
        return Scripted("slow answer", delay_s=12) if slow["on"] else Scripted("x")

    b.llm.chaos = slow_model
    for kind in ("code", "agent"):
        task_id = f"hb-{kind}-{uuid.uuid4().hex[:4]}"
        if kind == "code":
            steps = [code_step(task_id, f"s{i}", [], 12) for i in range(4)]
        else:
            steps = [{"id": f"s{i}", "type": "search", "description": f"agent step s{i}"}
                     for i in range(4)]
        before = b.temporal.requests("RecordActivityTaskHeartbeat")
        _, took = await b.run(queue, task_id, Plan.model_validate({"steps": steps}))
        beats = b.temporal.requests("RecordActivityTaskHeartbeat") - before
        out.append(f"{kind}: {beats:.0f} heartbeats for 4 steps over {took:.1f} s = "
                   f"{beats / 4 / took:.2f} per running step per second")
    b.stop_all()
    return "; ".join(out)


FAULTS: dict[str, Callable[[Bench], Awaitable[Row]]] = {
    "kill9": lambda b: worker_fault(b, "kill9", "worker kill -9 (supervised)"),
    "kill9cold": lambda b: worker_fault(b, "kill9cold", "worker kill -9, cold restart"),
    "sigterm": lambda b: worker_fault(b, "sigterm", "worker SIGTERM, then new worker"),
    "sigtermwait": lambda b: worker_fault(b, "sigtermwait",
                                          "worker SIGTERM, exit, then new worker"),
    "rolling": lambda b: worker_fault(b, "rolling", "deploy: new worker, SIGTERM old"),
    "temporal": temporal_restart,
    "postgres": postgres_outage,
    "llm": llm_storm,
    "mcp": mcp_faults,
    "tenkills": ten_kills,
}


def print_table(rows: list[Row]) -> None:
    cells = [HEADER] + [r.cells() for r in rows]
    widths = [max(len(c[i]) for c in cells) for i in range(len(HEADER))]
    for c in cells:
        print(" | ".join(v.ljust(w) for v, w in zip(c, widths, strict=True)).rstrip())


async def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--only", default=",".join(FAULTS))
    ap.add_argument("--repeat", type=int, default=1)
    ap.add_argument("--heartbeat-cost", action="store_true",
                    help="only measure heartbeats reaching the server per running step")
    args = ap.parse_args()
    rows: list[Row] = []
    async with killable_servers("chaos") as (tmp, dsn, temporal):
        llm = FakeLLM()
        b = Bench(tmp, temporal, dsn, llm)
        await b.connect()
        try:
            if args.heartbeat_cost:
                print(await heartbeat_cost(b))
                return
            for _ in range(args.repeat):
                for name in args.only.split(","):
                    rows.append(await FAULTS[name](b))
                    print_table(rows[-1:])
        finally:
            b.stop_all()
            llm.close()
    print()
    print_table(rows)
    print(f"(logs under {tmp})")


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    asyncio.run(main())
