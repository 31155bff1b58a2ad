"""How big histories grow: a task of 500 steps, and an agent step of 200 model turns.

    python bench/history.py [--steps 500] [--turns 200]

Runs both against a fresh tuned dev server and one worker (`bench.chaos_worker`, with
BEESTOWN_MAX_PLAN_STEPS and BEESTOWN_MAX_TURNS raised; the task asks for the same caps),
then prints, per workflow, its events and bytes beside Temporal's limits (51,200 events,
50 MB; the goal is under 10 % of each).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
import uuid
from pathlib import Path
from typing import Any

from temporalio.client import Client
from temporalio.contrib.pydantic import pydantic_data_converter

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.chaos_kit import WorkerProc, killable_servers, worker_env
from models.io import TaskInput, TaskResult
from models.plan import Plan
from testkit.fake_llm import FakeLLM, Scripted

EVENT_LIMIT = 51_200
BYTE_LIMIT = 50 * 2**20


def wide_plan(steps: int, width: int = 10) -> Plan:
    out = []
    for i in range(steps):
        layer = i // width
        deps = [f"s{(layer - 1) * width + (i % width)}"] if layer else []
        out.append({"id": f"s{i}", "type": "tool", "tool": "echo",
                    "args": {"value": f"output of step {i}"}, "deps": deps})
    return Plan.model_validate({"steps": out})


def long_agent(turns: int) -> Any:
    def reply(body: dict[str, Any]) -> Scripted:
        done = sum(1 for m in body.get("messages", []) if m.get("role") == "assistant")
        if done < turns - 1:
            return Scripted(tool_calls=[{"id": f"c{done}", "type": "function", "function": {
                "name": "echo", "arguments": json.dumps({"value": f"turn {done}"})}}])
        return Scripted("finished after all those turns")
    return reply


async def size(client: Client, wid: str) -> tuple[int, int]:
    hist = await client.get_workflow_handle(wid).fetch_history()
    return len(hist.events), sum(e.ByteSize() for e in hist.events)


def line(name: str, events: int, nbytes: int, took: float) -> str:
    return (f"{name:34} {events:7d} events ({100 * events / EVENT_LIMIT:5.1f} % of 51,200)  "
            f"{nbytes / 2**20:7.2f} MB ({100 * nbytes / BYTE_LIMIT:5.1f} % of 50 MB)  "
            f"in {took:.0f} s")


async def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--steps", type=int, default=500)
    ap.add_argument("--turns", type=int, default=200)
    args = ap.parse_args()
    async with killable_servers("history") as (tmp, dsn, temporal):
        llm = FakeLLM()
        llm.chaos = long_agent(args.turns)
        queue = f"hist-{uuid.uuid4().hex[:6]}"
        worker = WorkerProc(env=worker_env(
            address=temporal.address, queue=queue, database_url=dsn,
            state_dir=tmp, journal=tmp / "journal", llm_url=llm.base_url,
            BEESTOWN_MAX_PLAN_STEPS=str(max(args.steps, 50)),
            BEESTOWN_MAX_TURNS=str(args.turns)), log=tmp / "worker.log").start()
        try:
            await worker.ready()
            client = await Client.connect(temporal.address, data_converter=pydantic_data_converter)
            rows = []
            big_id = f"big-{uuid.uuid4().hex[:6]}"
            t0 = time.monotonic()
            big = await client.start_workflow(
                "TaskWorkflow", TaskInput(plan=wide_plan(args.steps), max_steps=args.steps),
                id=big_id, task_queue=queue)
            res = TaskResult.model_validate(await big.result())
            rows.append(line(f"task of {args.steps} steps ({res.status.value})",
                             *await size(client, big_id), time.monotonic() - t0))
            rows.append(line("  one of its steps", *await size(client, f"{big_id}/s0"), 0))
            agent_id = f"agent-{uuid.uuid4().hex[:6]}"
            t0 = time.monotonic()
            plan = Plan.model_validate({"steps": [
                {"id": "a", "type": "search", "description": "a long piece of work"}]})
            h = await client.start_workflow("TaskWorkflow", TaskInput(plan=plan,
                                                                      max_turns=args.turns),
                                            id=agent_id, task_queue=queue)
            res = TaskResult.model_validate(await h.result())
            rows.append(line(f"agent step of {args.turns} turns ({res.status.value})",
                             *await size(client, f"{agent_id}/a"), time.monotonic() - t0))
            rows.append(line("  its task", *await size(client, agent_id), 0))
            print("\n".join(rows))
        finally:
            for pid in worker.pids():
                import os
                import signal

                os.kill(pid, signal.SIGKILL)
            llm.close()


if __name__ == "__main__":
    asyncio.run(main())
