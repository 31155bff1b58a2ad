"""Start a BeesTown task and, with --wait, follow it to the end.

    python starter.py "Summarise the three largest files in this repo"
    python starter.py --plan examples/demo.yaml --wait
    python starter.py --plan examples/demo.yaml --wait --json
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import secrets
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import quote

from rich.console import Console
from rich.live import Live
from rich.table import Table
from temporalio.client import Client, WorkflowFailureError, WorkflowHandle
from temporalio.common import WorkflowIDReusePolicy
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.exceptions import (
    ApplicationError,
    CancelledError,
    WorkflowAlreadyStartedError,
)
from temporalio.service import RPCError

from models.io import Progress, TaskInput, TaskResult
from models.plan import InvalidPlan, load_plan_file
from models.settings import Settings
from models.task import Priority, Status
from workflows import policies
from workflows.failures import failure_message

EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2
STATUS_STYLE = {
    "COMPLETED": "green", "FAILED": "red", "BLOCKED": "yellow", "RUNNING": "cyan",
    "CANCELLED": "magenta", "REVIEWING": "blue", "QUEUED": "dim",
}


def new_task_id() -> str:
    return f"task-{datetime.now(UTC):%Y%m%d-%H%M%S}-{secrets.token_hex(3)}"


def ui_link(settings: Settings, workflow_id: str, run_id: str | None) -> str:
    base = settings.temporal_ui_url.rstrip("/")
    path = f"{base}/namespaces/{quote(settings.temporal_namespace, safe='')}/workflows/"
    path += quote(workflow_id, safe="")
    return f"{path}/{run_id}/history" if run_id else path


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="starter.py", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("prompt", nargs="?", help="the job, in plain language (split by the LLM)")
    p.add_argument("--plan", type=Path, help="run this YAML/JSON plan instead; no LLM needed")
    p.add_argument("--id", dest="task_id", help="task id (default: generated)")
    p.add_argument("--title", default="")
    p.add_argument("--priority", choices=[x.value for x in Priority], default="medium")
    p.add_argument("--wait", action="store_true", help="follow the task until it ends")
    p.add_argument("--json", action="store_true",
                   help="print the final result as one JSON object (implies --wait)")
    args = p.parse_args(argv)
    if bool(args.prompt) == bool(args.plan):
        p.error("give either a prompt or --plan FILE (not both)")
    if args.task_id and "/" in args.task_id:
        p.error("--id must not contain '/': subtask ids are '<task-id>/<step-id>'")
    return args


def progress_table(progress: Progress) -> Table:
    table = Table(title=f"{progress.task_id}  [{progress.status}]", title_justify="left")
    for col in ("step", "type", "status", "output / error"):
        table.add_column(col, overflow="fold")
    for s in progress.subtasks:
        detail = s.error or ("" if s.output is None else json.dumps(s.output)[:80])
        style = STATUS_STYLE.get(s.status.value, "")
        table.add_row(s.step_id, s.type, f"[{style}]{s.status}[/]" if style else s.status,
                      detail)
    return table


async def follow(handle: WorkflowHandle[Any, Any], console: Console, *, quiet: bool) -> TaskResult:
    """Show progress until the workflow closes; return its TaskResult (even when it failed)."""
    fut = asyncio.ensure_future(handle.result())
    live = None if quiet else Live(console=console, auto_refresh=False, transient=False)
    if live:
        live.start()
    try:
        while not fut.done():
            if live:
                try:
                    progress = await handle.query("progress", result_type=Progress)
                    live.update(progress_table(progress), refresh=True)
                except RPCError:
                    pass  # not started by a worker yet
            await asyncio.wait([fut], timeout=0.5)
        try:
            result = TaskResult.model_validate(fut.result())
        except WorkflowFailureError as e:
            result = result_of_failure(handle.id, e)
        if live:
            live.update(progress_table(Progress(task_id=result.task_id, status=result.status,
                                                subtasks=result.subtasks)), refresh=True)
        return result
    finally:
        if live:
            live.stop()
            console.print()


def result_of_failure(task_id: str, e: WorkflowFailureError) -> TaskResult:
    cause = e.cause
    if isinstance(cause, CancelledError):
        return TaskResult(task_id=task_id, status=Status.CANCELLED, error="cancelled")
    if isinstance(cause, ApplicationError) and cause.details:
        try:
            return TaskResult.model_validate(cause.details[0])
        except ValueError:
            pass
    return TaskResult(task_id=task_id, status=Status.FAILED,
                      error=failure_message(cause) if cause else str(e))


async def run(args: argparse.Namespace, settings: Settings) -> int:
    console = Console(stderr=args.json)
    plan = None
    if args.plan:
        try:
            plan = load_plan_file(args.plan, max_steps=settings.max_plan_steps)
        except InvalidPlan as e:
            console.print("[red]invalid plan:[/] " + "\n  ".join(e.errors))
            return EXIT_USAGE
    elif not settings.llm_configured:
        console.print(
            "[red]no LLM endpoint is configured.[/] Set OPENAI_BASE_URL (and OPENAI_API_KEY, "
            "BEESTOWN_MODEL) for the worker and here, e.g.\n"
            "  OPENAI_BASE_URL=http://localhost:11434/v1 OPENAI_API_KEY=x BEESTOWN_MODEL=llama3\n"
            "or run an explicit plan with no LLM at all:\n"
            "  python starter.py --plan examples/demo.yaml --wait"
        )
        return EXIT_USAGE
    task = TaskInput(prompt=args.prompt or "", plan=plan, title=args.title,
                     priority=Priority(args.priority))
    try:
        client = await Client.connect(settings.temporal_address,
                                      namespace=settings.temporal_namespace,
                                      data_converter=pydantic_data_converter)
    except RuntimeError as e:
        console.print(f"[red]cannot reach Temporal at {settings.temporal_address}:[/] {e}\n"
                      "Start it (see README) or set TEMPORAL_ADDRESS.")
        return EXIT_USAGE
    task_id = args.task_id or new_task_id()
    try:
        handle = await client.start_workflow(
            "TaskWorkflow", task, id=task_id, task_queue=settings.task_queue,
            # A task id names one run: its rows and children's ids are keyed by it.
            id_reuse_policy=WorkflowIDReusePolicy.REJECT_DUPLICATE,
            # As for subtasks: a worker killed mid-task is replaced after 3 s, not 10 s.
            task_timeout=policies.CHILD_TASK_TIMEOUT,
            static_summary=(args.title or (plan.title if plan else "") or args.prompt or "")[:200],
        )
    except WorkflowAlreadyStartedError:
        console.print(f"[red]task id {task_id!r} is already taken;[/] choose another --id")
        return EXIT_USAGE
    console.print(f"task [bold]{task_id}[/]")
    console.print(ui_link(settings, task_id, handle.result_run_id), soft_wrap=True)
    if not (args.wait or args.json):
        return EXIT_OK
    result = await follow(handle, console, quiet=args.json)
    if args.json:
        sys.stdout.write(result.model_dump_json() + "\n")
    elif result.error:
        console.print(f"[red]{result.status}[/]: {result.error}")
    else:
        console.print(f"[green]{result.status}[/]")
    return EXIT_OK if result.status is Status.COMPLETED else EXIT_FAILED


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    try:
        settings = Settings()
    except Exception as e:  # pydantic names the variable that is wrong
        raise SystemExit(f"starter: bad configuration: {e}") from e
    code = asyncio.run(run(args, settings))
    sys.stdout.flush()
    sys.stderr.flush()
    # Skip interpreter finalization: the Temporal client's native threads can race it
    # and abort the process (seen as rc 134 after a correct run).
    os._exit(code)


if __name__ == "__main__":
    main()
