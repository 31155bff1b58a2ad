"""Faults, each beside a clean run of the same plan in the same run, and what they cost.

    python bench/chaos.py [--only kill9,sigterm,...] [--repeat N]

Prints one row per fault: completed, repeated steps (a completed step's work ran again,
counted at the tool, the sandbox or the LLM server), duplicate rows (in any table), lost
results (work that ended but whose result is not stored) and the recovery delay (the
faulted run's makespan minus the clean run's).

Servers: a tuned Temporal dev server of its own (so it can be killed and restarted with
its --db-filename), a scratch database (on the local PostgreSQL, or on a PostgreSQL
cluster of its own for the outage fault), the scripted LLM of tests/fake_llm.py.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import signal
import sys
import tempfile
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import asyncpg
from temporalio.client import Client, WorkflowFailureError
from temporalio.contrib.pydantic import pydantic_data_converter

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.chaos_kit import (
    Audit,
    TemporalDev,
    WorkerProc,
    duplicate_rows,
    journal_ends,
    lost_results,
    repeated_work,
    worker_env,
)
from models.io import TaskInput, TaskResult
from models.plan import Plan
from models.task import Status
from tests.conftest import _admin_dsn, _with_database
from tests.fake_llm import FakeLLM

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
        fmt = (lambda v: f"{v:.2f}" if v is not None else "-")
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
                  during: Callable[[float], Awaitable[None]] | None = None,
                  timeout: float = 180) -> tuple[TaskResult | None, float]:
        """Start the task; run `during(t0)` beside it; return its result and makespan."""
        assert self.client is not None
        t0 = time.monotonic()
        handle = await self.client.start_workflow(
            "TaskWorkflow", TaskInput(plan=plan), id=task_id, task_queue=queue)
        side = asyncio.create_task(during(t0)) if during else None
        result: TaskResult | None = None
        try:
            result = await asyncio.wait_for(self._result(handle), timeout=timeout)
        except TimeoutError:
            pass
        elapsed = time.monotonic() - t0
        if side is not None:
            await side
        return result, elapsed

    async def _result(self, handle: Any) -> TaskResult:
        while True:
            try:
                return TaskResult.model_validate(await handle.result())
            except WorkflowFailureError as e:
                from starter import result_of_failure

                return result_of_failure(handle.id, e)
            except RuntimeError:  # the server is down: ask again
                await asyncio.sleep(0.2)
                with contextlib.suppress(RuntimeError):
                    await self.connect()
                    handle = self.client.get_workflow_handle(handle.id)  # type: ignore[union-attr]

    async def audit(self, task_id: str, result: TaskResult | None, journal: Path,
                    database_url: str | None = None) -> Audit:
        done = result is not None and result.status is Status.COMPLETED
        conn = await asyncpg.connect(database_url or self.database_url)
        try:
            dups = await duplicate_rows(conn)
            produced = {k for k in journal_ends(journal) if k.startswith(task_id + "/")}
            lost = await lost_results(conn, task_id, produced)
        finally:
            await conn.close()
        return Audit(completed=done, repeated=[k for k in repeated_work(journal)
                                               if k.startswith(task_id + "/")],
                     duplicates=dups, lost=lost)

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

    def stop_all(self) -> None:
        for w in self.workers:
            w.signal(signal.SIGKILL)
            w.wait(5)
        self.workers.clear()


async def when_started(journal: Path, prefix: str, n: int, t0: float,
                       timeout: float = 60) -> float:
    """Wait until `n` units whose key starts with `prefix` have started; return time."""
    while time.monotonic() - t0 < timeout:
        if journal.exists():
            starts = {ln.split()[3] for ln in journal.read_text().splitlines()
                      if ln.split()[2:3] == ["start"] and ln.split()[3].startswith(prefix)}
            if len(starts) >= n:
                return time.monotonic()
        await asyncio.sleep(0.02)
    raise TimeoutError(f"{prefix}: never started {n}")


# -- faults ---------------------------------------------------------------------------------
async def worker_fault(b: Bench, slug: str, name: str, *, into_step: float = 0.7) -> Row:
    """Layer 2 of a 3x3 grid is `into_step` s in when the worker meets the fault:

    kill9      kill -9 of the worker process; its supervisor forks a new one at once
    kill9cold  kill -9 of the worker and its supervisor; a new process starts at once
    sigterm    SIGTERM (a deploy); a new process starts at once
    rolling    a new process starts; once it is ready, the old one gets SIGTERM
    """
    queue = f"q-{slug}-{uuid.uuid4().hex[:6]}"
    journal = b.tmp / f"{queue}.journal"
    first = b.worker(queue, journal)
    await first.ready()
    clean_id = f"clean-{slug}-{uuid.uuid4().hex[:6]}"
    clean, clean_s = await b.run(queue, clean_id, grid(clean_id))
    if clean is None or clean.status is not Status.COMPLETED:
        raise RuntimeError(f"the clean run failed: {clean}")
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
        elif slug in ("kill9cold", "sigterm"):
            if slug == "kill9cold":
                for pid in first.pids():
                    os.kill(pid, signal.SIGKILL)
            else:
                first.signal(signal.SIGTERM)
            second = b.worker(queue, journal)
            notes.append(f"new worker ready in {await second.ready():.1f} s")
        else:
            first.signal(signal.SIGTERM)
        notes.insert(0, f"at {at - t0:.1f} s")

    result, faulted_s = await b.run(queue, fault_id, grid(fault_id), during=fault)
    a = await b.audit(fault_id, result, journal)
    await b.dump_timeline(fault_id, [fault_id] + [f"{fault_id}/l{i}_{j}" for i in range(3)
                                                  for j in range(3)])
    b.stop_all()
    return Row(name, "yes" if a.completed else "NO", len(a.repeated),
               sum(a.duplicates.values()), len(a.lost), clean_s, faulted_s, "; ".join(notes))


FAULTS: dict[str, Callable[[Bench], Awaitable[Row]]] = {
    "kill9": lambda b: worker_fault(b, "kill9", "worker kill -9 (supervised)"),
    "kill9cold": lambda b: worker_fault(b, "kill9cold", "worker kill -9, cold restart"),
    "sigterm": lambda b: worker_fault(b, "sigterm", "worker SIGTERM, then new worker"),
    "rolling": lambda b: worker_fault(b, "rolling", "deploy: new worker, SIGTERM old"),
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
    args = ap.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="chaos-"))
    admin = await _admin_dsn(tmp)
    dbname = f"beestown_chaos_{uuid.uuid4().hex[:8]}"
    conn = await asyncpg.connect(admin)
    await conn.execute(f'CREATE DATABASE "{dbname}"')
    await conn.close()
    temporal = TemporalDev(tmp)
    await temporal.start()
    llm = FakeLLM()
    b = Bench(tmp, temporal, _with_database(admin, dbname), llm)
    await b.connect()
    rows: list[Row] = []
    try:
        for _ in range(args.repeat):
            for name in args.only.split(","):
                rows.append(await FAULTS[name](b))
                print_table(rows[-1:])
    finally:
        b.stop_all()
        temporal.stop()
        llm.close()
        conn = await asyncpg.connect(admin)
        await conn.execute(f'DROP DATABASE IF EXISTS "{dbname}" WITH (FORCE)')
        await conn.close()
    print()
    print_table(rows)
    print(f"(logs under {tmp})")


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    asyncio.run(main())
