"""What a tool call costs through Temporal, against calling the tool directly.

    python bench/tools.py [--runs 5] [--calls 20]

One process, one fresh tuned dev server, one worker. For `echo` (a function tool) and
`time.get_current_time` (mcp-server-time over stdio, one long-lived session), each run
measures, interleaved so they see the same machine:
  direct    - `await toolbox.call(...)`, `--calls` times in a row
  activity  - a tiny workflow runs the `call_tool` activity `--calls` times in a row
  local     - the same workflow with `call_tool` as a local activity
and prints ms per call (min / median of runs) and each path's ratio to direct, plus the
difference (the overhead Temporal adds per call).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import statistics
import sys
import time
import uuid
from pathlib import Path

from pydantic import BaseModel
from temporalio import workflow
from temporalio.client import Client
from temporalio.exceptions import ApplicationError
from temporalio.worker import UnsandboxedWorkflowRunner, Worker

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

with workflow.unsafe.imports_passed_through():
    from activities.tools import ToolActivities
    from models.tools import ToolCallInput
    from workflows import policies


class BenchCalls(BaseModel):
    call: ToolCallInput
    count: int
    local: bool


@workflow.defn(name="BenchToolCalls")
class BenchToolCalls:
    @workflow.run
    async def run(self, inp: BenchCalls) -> int:
        for i in range(inp.count):
            call = inp.call.model_copy(update={"call_id": f"{inp.call.call_id}-{i}"})
            if inp.local:
                result = await workflow.execute_local_activity_method(
                    ToolActivities.call_tool, call,
                    start_to_close_timeout=policies.TOOL_TIMEOUT,
                    retry_policy=policies.TOOL_RETRY,
                )
            else:
                result = await workflow.execute_activity_method(
                    ToolActivities.call_tool, call,
                    start_to_close_timeout=policies.TOOL_TIMEOUT,
                    retry_policy=policies.TOOL_RETRY,
                )
            if not result.ok:
                raise ApplicationError(result.error or "tool call failed", non_retryable=True)
        return inp.count


CASES: dict[str, tuple[str, dict[str, object]]] = {
    "echo": ("echo", {"value": {"a": 1, "b": [1, 2, 3]}}),
    "time.get_current_time": ("time.get_current_time", {"timezone": "Europe/Paris"}),
}


async def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--calls", type=int, default=20, help="calls per run and path")
    args = ap.parse_args()

    from activities.steps import StepBook
    from bench.servers import scratch_servers
    from runtime.settings import Settings
    from runtime.tools.registry import builtin_tools
    from runtime.tools.toolbox import open_toolbox
    from worker import open_deps

    per_call: dict[str, dict[str, list[float]]] = {c: {} for c in CASES}
    async with scratch_servers("bench-tools") as scratch:
        env = scratch.env
        tools_file = scratch.tmp / "tools.yaml"
        time_server = Path(sys.executable).parent / "mcp-server-time"
        tools_file.write_text(
            f"tools:\n  - {{name: time, transport: stdio, command: {time_server}, "
            f"args: [--local-timezone, UTC]}}\n"
        )
        queue = f"bench-tools-{uuid.uuid4()}"
        settings = Settings(
            temporal_address=scratch.temporal_address, task_queue=queue,
            database_url=scratch.database_url, state_dir=scratch.tmp, worker_roles="tools",
        )
        async with open_deps(settings) as deps, contextlib.AsyncExitStack() as stack:
            toolbox = await open_toolbox(builtin_tools(), tools_file)
            stack.push_async_callback(toolbox.aclose)
            acts = ToolActivities(toolbox, StepBook(deps.store))
            await stack.enter_async_context(Worker(
                env.client, task_queue=queue, workflows=[BenchToolCalls],
                activities=[acts.call_tool], workflow_runner=UnsandboxedWorkflowRunner(),
                max_concurrent_activities=200, max_concurrent_local_activities=200,
            ))

            async def direct(name: str, call_args: dict[str, object]) -> float:
                t = time.perf_counter()
                for _ in range(args.calls):
                    await toolbox.call(name, dict(call_args))
                return time.perf_counter() - t

            async def through(client: Client, name: str, call_args: dict[str, object],
                              local: bool) -> float:
                call = ToolCallInput(task_id="bench", call_id=uuid.uuid4().hex, name=name,
                                     args=dict(call_args))
                t = time.perf_counter()
                await client.execute_workflow(
                    BenchToolCalls.run, BenchCalls(call=call, count=args.calls, local=local),
                    id=f"bench-tools-{uuid.uuid4().hex[:10]}", task_queue=queue,
                )
                return time.perf_counter() - t

            for name, call_args in CASES.values():  # warm up every path
                await direct(name, call_args)
                await through(env.client, name, call_args, False)
                await through(env.client, name, call_args, True)
            for _ in range(args.runs):
                for case, (name, call_args) in CASES.items():
                    runs = {
                        "direct": await direct(name, call_args),
                        "activity": await through(env.client, name, call_args, False),
                        "local": await through(env.client, name, call_args, True),
                    }
                    for path, total in runs.items():
                        per_call[case].setdefault(path, []).append(total / args.calls * 1000)

    print(f"ms per call, {args.calls} calls per run, {args.runs} runs (min / median); "
          "ratio and overhead against direct (min / median)")
    for case, paths in per_call.items():
        d_min, d_med = min(paths["direct"]), statistics.median(paths["direct"])
        for path, values in paths.items():
            v_min, v_med = min(values), statistics.median(values)
            line = f"{case:24} {path:9} {v_min:8.3f} / {v_med:8.3f} ms"
            if path != "direct":
                line += (f"   x{v_min / d_min:7.1f} / x{v_med / d_med:7.1f}"
                         f"   +{v_min - d_min:6.2f} / +{v_med - d_med:6.2f} ms")
            print(line)


if __name__ == "__main__":
    asyncio.run(main())
