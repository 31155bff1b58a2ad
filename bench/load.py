"""Many tasks at once: throughput, latency, history size, memory and connections.

    python bench/load.py [--tasks 50,100,200] [--steps 10] [--step-s 0.1]

Each task is a plan of `--steps` tool steps (the built-in `sleep`, `--step-s` each) in
layers of two, every step depending on both steps of the layer before. All tasks of a
round are submitted at once. Each round runs twice against the same fresh Temporal dev
server and scratch database: with one all-roles worker process (`python worker.py`), and
with workers split by role (BEESTOWN_WORKER_ROLES: `workflows`, `sandbox,tools`, `llm`,
each its own process and task queue). Per round it prints: tasks/s and steps/s (all tasks
over the time from the first submit to the last completion), p50/p99 task latency (submit
to completion, per task), the biggest task history (events, bytes), the workers' summed
RSS at start and at end (MB), and the most PostgreSQL connections seen at once.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import statistics
import subprocess
import sys
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import asyncpg
from temporalio.client import Client
from temporalio.contrib.pydantic import pydantic_data_converter

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.chaos_kit import ROOT, children, killable_servers, rss_bytes
from models.io import TaskInput, TaskResult
from models.plan import Plan
from models.task import Status


def plan(steps: int, step_s: float) -> Plan:
    out: list[dict[str, Any]] = []
    for i in range(steps):
        layer = i // 2
        deps = [f"s{j}" for j in range(2 * (layer - 1), 2 * layer)] if layer else []
        out.append({"id": f"s{i}", "type": "tool", "tool": "sleep",
                    "args": {"seconds": step_s}, "deps": [d for d in deps if d != f"s{i}"]})
    return Plan.model_validate({"steps": out})


@dataclass
class Figures:
    setup: str
    tasks: int
    completed: int
    makespan_s: float
    p50_s: float
    p99_s: float
    events: int
    history_bytes: int
    rss_start_mb: float
    rss_end_mb: float
    pg_peak: int

    def cells(self, steps: int) -> list[str]:
        return [self.setup, str(self.tasks), f"{self.completed}/{self.tasks}",
                f"{self.tasks / self.makespan_s:.1f}",
                f"{self.tasks * steps / self.makespan_s:.0f}", f"{self.p50_s:.2f}",
                f"{self.p99_s:.2f}", f"{self.events} / {self.history_bytes / 1024:.0f} KiB",
                f"{self.rss_start_mb:.0f} -> {self.rss_end_mb:.0f}", str(self.pg_peak)]


HEADER = ["workers", "tasks", "completed", "tasks/s", "steps/s", "p50 s", "p99 s",
          "biggest history (events / size)", "worker RSS MB start -> end", "PG conns peak"]


class Workers:
    def __init__(self, tmp: Path, address: str, database_url: str, split: bool) -> None:
        self.procs: list[subprocess.Popen[bytes]] = []
        self.queue = f"load-{uuid.uuid4().hex[:6]}"
        self.split = split
        self.tmp = tmp
        base = {k: v for k, v in os.environ.items()
                if not k.startswith(("OPENAI", "E2B", "BEESTOWN", "DATABASE_URL", "TEMPORAL"))}
        base.update({"TEMPORAL_ADDRESS": address, "BEESTOWN_TASK_QUEUE": self.queue,
                     "DATABASE_URL": database_url, "BEESTOWN_STATE_DIR": str(tmp),
                     "BEESTOWN_SANDBOX": "local"})
        if split:
            base.update({"BEESTOWN_LLM_TASK_QUEUE": self.queue + "-llm",
                         "BEESTOWN_SANDBOX_TASK_QUEUE": self.queue + "-sandbox",
                         "BEESTOWN_TOOL_TASK_QUEUE": self.queue + "-tools"})
        self.envs = ([dict(base, BEESTOWN_WORKER_ROLES=r)
                      for r in ("workflows", "sandbox,tools", "llm")] if split else [base])

    def spawn(self) -> None:
        for i, env in enumerate(self.envs):
            log = self.tmp / f"{self.queue}-{i}.log"
            self.procs.append(subprocess.Popen([sys.executable, "worker.py"], cwd=ROOT, env=env,
                                               stdout=log.open("ab"), stderr=subprocess.STDOUT))

    async def start(self) -> None:
        self.spawn()
        for i, p in enumerate(self.procs):
            log = self.tmp / f"{self.queue}-{i}.log"
            for _ in range(1200):
                if "worker ready" in log.read_text(errors="replace"):
                    break
                if p.poll() is not None:
                    raise RuntimeError(log.read_text()[-3000:])
                await asyncio.sleep(0.05)

    def rss_mb(self) -> float:
        total = 0
        for p in self.procs:
            todo = [p.pid]
            while todo:
                pid = todo.pop()
                total += rss_bytes(pid)
                todo += children(pid)
        return total / 2**20

    def stop(self) -> None:
        for p in self.procs:
            p.terminate()
        for p in self.procs:
            try:
                p.wait(timeout=20)
            except subprocess.TimeoutExpired:
                p.kill()


async def pg_watch(dsn: str, stop: asyncio.Event) -> int:
    conn = await asyncpg.connect(dsn)
    peak = 0
    try:
        while not stop.is_set():
            n = await conn.fetchval("SELECT count(*) FROM pg_stat_activity "
                                    "WHERE datname = current_database()")
            peak = max(peak, int(n) - 1)  # not this watcher
            await asyncio.sleep(0.2)
    finally:
        await conn.close()
    return peak


async def history_size(client: Client, wid: str) -> tuple[int, int]:
    hist = await client.get_workflow_handle(wid).fetch_history()
    return len(hist.events), sum(e.ByteSize() for e in hist.events)


async def one_round(client: Client, tmp: Path, address: str, dsn: str, *, split: bool,
                    tasks: int, steps: int, step_s: float) -> Figures:
    workers = Workers(tmp, address, dsn, split)
    try:
        return await _measure(client, workers, dsn, split=split, tasks=tasks, steps=steps,
                              step_s=step_s)
    finally:
        workers.stop()


async def _measure(client: Client, workers: Workers, dsn: str, *, split: bool, tasks: int,
                   steps: int, step_s: float) -> Figures:
    await workers.start()
    await asyncio.sleep(1)
    rss_start = workers.rss_mb()
    stop = asyncio.Event()
    watcher = asyncio.create_task(pg_watch(dsn, stop))
    the_plan = plan(steps, step_s)
    ids = [f"load-{uuid.uuid4().hex[:10]}" for _ in range(tasks)]

    async def one(task_id: str) -> tuple[float, bool]:
        t0 = time.monotonic()
        handle = await client.start_workflow("TaskWorkflow", TaskInput(plan=the_plan),
                                             id=task_id, task_queue=workers.queue)
        try:
            res = TaskResult.model_validate(await handle.result())
            ok = res.status is Status.COMPLETED
        except Exception:
            ok = False
        return time.monotonic() - t0, ok

    t0 = time.monotonic()
    results = await asyncio.gather(*(one(t) for t in ids))
    makespan = time.monotonic() - t0
    rss_end = workers.rss_mb()
    stop.set()
    peak = await watcher
    sizes = await asyncio.gather(*(history_size(client, t) for t in ids))
    lat = sorted(r[0] for r in results)
    biggest = max(sizes, key=lambda s: s[1])
    return Figures("split by role (3)" if split else "one, all roles", tasks,
                   sum(1 for r in results if r[1]), makespan, statistics.median(lat),
                   lat[min(len(lat) - 1, int(0.99 * len(lat)))], biggest[0], biggest[1],
                   rss_start, rss_end, peak)


async def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--tasks", default="50,100,200")
    ap.add_argument("--steps", type=int, default=10)
    ap.add_argument("--step-s", type=float, default=0.1)
    args = ap.parse_args()
    rows: list[Figures] = []
    async with killable_servers("load") as (tmp, dsn, temporal):
        client = await Client.connect(temporal.address, data_converter=pydantic_data_converter)
        for n in [int(x) for x in args.tasks.split(",")]:
            for split in (False, True):
                rows.append(await one_round(client, tmp, temporal.address, dsn, split=split,
                                            tasks=n, steps=args.steps, step_s=args.step_s))
                print(" | ".join(rows[-1].cells(args.steps)), flush=True)
    cells = [HEADER] + [r.cells(args.steps) for r in rows]
    widths = [max(len(c[i]) for c in cells) for i in range(len(HEADER))]
    print()
    for c in cells:
        print(" | ".join(v.ljust(w) for v, w in zip(c, widths, strict=True)).rstrip())
    print(f"({args.steps} steps of {args.step_s} s per task, in layers of two; logs: {tmp})")


if __name__ == "__main__":
    # SIGTERM ends the run like Ctrl-C does: servers, workers and the database are cleaned up.
    signal.signal(signal.SIGTERM, signal.default_int_handler)
    asyncio.run(main())
