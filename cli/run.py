"""`beestown run` (and `python starter.py`): start a task and, with --wait, follow it.

    beestown run "Summarise the three largest files in this repo"
    beestown run --plan examples/demo.yaml --wait
    beestown run --plan examples/demo.yaml --wait --json

`outcome` is the one way to wait for a task's TaskResult, whether its workflow completed,
failed or was cancelled: `follow`, `beestown cancel --wait` and the tests use it.
"""

from __future__ import annotations

import argparse
import asyncio
import difflib
import secrets
import sys
from datetime import UTC, datetime
from typing import Any
from urllib.parse import quote

from pydantic import ValidationError
from rich.console import Console
from rich.markup import escape
from temporalio.client import WorkflowFailureError, WorkflowHandle
from temporalio.common import WorkflowIDReusePolicy
from temporalio.exceptions import (
    ApplicationError,
    CancelledError,
    WorkflowAlreadyStartedError,
)

from cli.follow import follow as follow_task
from cli.output import styled
from cli.session import EXIT_FAILED, EXIT_OK, BadUsage, Session
from models.io import TaskInput, TaskResult
from models.payload import PayloadTooLarge, check_payload
from models.plan import InvalidPlan, Plan
from models.task import Priority, Status, StepType
from runtime.documents import describe, load_plan
from runtime.settings import Settings
from runtime.tools.registry import builtin_tools
from runtime.tools.toolbox import references
from workflows import policies
from workflows.failures import failure_message

NO_LLM = (
    "no LLM endpoint is configured. Set OPENAI_BASE_URL (and OPENAI_API_KEY, "
    "BEESTOWN_MODEL) for the worker and here, e.g.\n"
    "  OPENAI_BASE_URL=http://localhost:11434/v1 OPENAI_API_KEY=x BEESTOWN_MODEL=llama3\n"
    "or run an explicit plan with no LLM at all:\n"
    "  beestown run --plan examples/demo.yaml --wait"
)


def new_task_id() -> str:
    return f"task-{datetime.now(UTC):%Y%m%d-%H%M%S}-{secrets.token_hex(3)}"


def ui_link(settings: Settings, workflow_id: str, run_id: str | None) -> str:
    """Return the Temporal Web UI page of a workflow (its run's history when known)."""
    base = settings.temporal_ui_url.rstrip("/")
    path = f"{base}/namespaces/{quote(settings.temporal_namespace, safe='')}/workflows/"
    path += quote(workflow_id, safe="")
    return f"{path}/{run_id}/history" if run_id else path


def task_details(task: TaskInput) -> str:
    """What the Web UI shows of a task beside its summary (markdown)."""
    lines = [f"**{task.title or 'task'}**", "", f"- priority: {task.priority.value}"]
    if task.project_id:
        lines.append(f"- project: {task.project_id}")
    if task.plan is not None:
        lines.append("- plan: " + ", ".join(f"{s.id} ({s.type.value})"
                                            for s in task.plan.steps)[:1000])
    if task.prompt:
        lines += ["", task.prompt[:1000]]
    return "\n".join(lines)


def plan_problems(plan: Plan, tools: list[str]) -> list[str]:
    """What would make the plan fail at once, found before it starts: a tool nobody has
    (MCP tools, `server.tool`, are left to the worker, which lists them) and a "${step}"
    argument naming a step the step does not depend on; each with a "did you mean"."""
    ids = [s.id for s in plan.steps]
    problems = []
    for s in plan.steps:
        if s.type is StepType.TOOL and s.tool and "." not in s.tool and s.tool not in tools:
            problems.append(f"step {s.id!r} names unknown tool {s.tool!r}"
                            + _did_you_mean(s.tool, tools, f" (known: {', '.join(tools)})"))
        for ref in references(s.args):
            if ref in s.deps:
                continue
            if ref in ids:
                problems.append(f"step {s.id!r} uses ${{{ref}}} but does not depend on "
                                f"{ref!r}: add it to its deps")
            else:
                problems.append(f"step {s.id!r} uses ${{{ref}}}, which is not a step"
                                + _did_you_mean(ref, list(s.deps) or ids, ""))
    return problems


def _did_you_mean(word: str, choices: list[str], otherwise: str) -> str:
    close = difflib.get_close_matches(word, choices, n=1)
    return f"; did you mean {close[0]!r}?" if close else otherwise


def check_args(parser: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    """Refuse (exit 2) what argparse alone cannot: a prompt and a plan, a '/' in --id."""
    if bool(args.prompt) == bool(args.plan):
        parser.error("give either a prompt or --plan FILE (not both)")
    if args.task_id and "/" in args.task_id:
        parser.error("--id must not contain '/': subtask ids are '<task-id>/<step-id>'")


# -- waiting for a task ------------------------------------------------------------------------
def result_of_failure(task_id: str, e: WorkflowFailureError) -> TaskResult:
    """Return the TaskResult a failed or cancelled task workflow carries (or one made up)."""
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


async def outcome(handle: WorkflowHandle[Any, Any]) -> TaskResult:
    """Return the task's result once its workflow closes, whether it completed or failed."""
    try:
        return TaskResult.model_validate(await handle.result())
    except WorkflowFailureError as e:
        return result_of_failure(handle.id, e)


async def follow(handle: WorkflowHandle[Any, Any], console: Console, *, quiet: bool,
                 address: str = "") -> TaskResult:
    """Show progress until the workflow closes; return its TaskResult (even when it failed).

    `quiet`: show nothing (for --json). See `cli.follow` for what is shown."""
    closed = asyncio.ensure_future(outcome(handle))
    try:
        if quiet:
            return await closed
        return await follow_task(handle, console, address=address, closed=closed)
    finally:
        closed.cancel()  # a no-op unless something above raised


# -- the command -------------------------------------------------------------------------------
async def cmd_run(args: argparse.Namespace, s: Session) -> int:
    settings = s.settings
    console = s.err if args.json else s.out  # with --json, stdout holds the result only
    plan = None
    if args.plan:
        try:
            plan = load_plan(args.plan, max_steps=settings.max_plan_steps)
        except InvalidPlan as e:
            raise BadUsage("invalid plan: " + "\n  ".join(e.errors)) from e
        problems = plan_problems(plan, builtin_tools().names())
        if problems:
            raise BadUsage(f"invalid plan {args.plan}:\n  " + "\n  ".join(problems))
    elif not settings.llm_configured:
        raise BadUsage(NO_LLM)
    title = args.title or (plan.title if plan else "")
    try:
        task = TaskInput(prompt=args.prompt or "", plan=plan, title=title,
                         priority=Priority(args.priority), project_id=args.project,
                         related_files=args.related_files, related_agents=args.related_agents,
                         parent_task=args.parent)
        check_payload(task, what="the task (its prompt and plan)")
    except ValidationError as e:
        raise BadUsage(describe(e)) from e
    except PayloadTooLarge as e:
        raise BadUsage(f"task too large: {e}") from e
    client = await s.client()
    task_id = args.task_id or new_task_id()
    try:
        handle = await client.start_workflow(
            "TaskWorkflow", task, id=task_id, task_queue=settings.task_queue,
            # A task id names one run: its rows and children's ids are keyed by it.
            id_reuse_policy=WorkflowIDReusePolicy.REJECT_DUPLICATE,
            # As for subtasks: a worker killed mid-task is replaced after 3 s, not 10 s.
            task_timeout=policies.CHILD_TASK_TIMEOUT,
            static_summary=(title or args.prompt or "")[:200],
            static_details=task_details(task),
        )
    except WorkflowAlreadyStartedError as e:
        raise BadUsage(f"task id {task_id!r} is already taken; choose another --id") from e
    console.print(f"task [bold]{escape(task_id)}[/]")
    console.print(ui_link(settings, task_id, handle.result_run_id), soft_wrap=True,
                  markup=False)
    if not (args.wait or args.json):
        return EXIT_OK
    result = await follow(handle, console, quiet=args.json, address=settings.temporal_address)
    if args.json:
        sys.stdout.write(result.model_dump_json() + "\n")
    else:
        console.print(styled(result.status.value)
                      + (f": {escape(result.error)}" if result.error else ""))
    return EXIT_OK if result.status is Status.COMPLETED else EXIT_FAILED
