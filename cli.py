"""Operate BeesTown from a shell: tasks and their trees, reviews, escalations, the org chart.

    beestown run --plan examples/demo.yaml --wait     # start a task (same as starter.py)
    beestown tasks                                    # recent tasks, newest first
    beestown tree TASK_ID                             # subtasks, nested tasks, tokens
    beestown review TASK_ID/STEP --reviewer eng-lead --approve
    beestown escalations                              # open escalations
    beestown resolve TASK_ID/STEP --by ceo --action retry
    beestown cancel TASK_ID --wait
    beestown org load examples/org.yaml && beestown org show

Settings come from the environment (TEMPORAL_ADDRESS, TEMPORAL_NAMESPACE, DATABASE_URL,
...; see README). Listings take --json for scripts. Exit codes: 0 ok, 1 the operation was
refused or failed (e.g. an update's validator said no), 2 bad usage or configuration.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import asyncpg
from pydantic import BaseModel, ValidationError
from rich.console import Console
from rich.markup import escape
from rich.table import Table
from rich.tree import Tree
from temporalio.client import (
    Client,
    WorkflowFailureError,
    WorkflowQueryFailedError,
    WorkflowUpdateFailedError,
    WorkflowUpdateRPCTimeoutOrCancelledError,
)
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.exceptions import ApplicationError
from temporalio.service import RPCError

import starter
from activities.db import create_pool, resolve_dsn
from activities.store import NotFound, Store
from models.io import Progress, SubtaskView, TaskResult
from models.org import InvalidOrg
from models.plan import InvalidPlan, load_plan_file
from models.review import (
    Action,
    Decision,
    Escalation,
    ResolveEscalation,
    ReviewAck,
    ReviewInput,
)
from models.settings import Settings
from models.task import TERMINAL, Status
from workflows.failures import failure_message

EXIT_OK, EXIT_FAILED, EXIT_USAGE = starter.EXIT_OK, starter.EXIT_FAILED, starter.EXIT_USAGE
_STYLE = starter.STATUS_STYLE
_TERMINAL = {s.value for s in TERMINAL}

EPILOG = """\
the same with the plain `temporal` CLI (a subtask's workflow id is TASK_ID/STEP_ID):
  temporal workflow update execute -w T/a --name review \\
      --input '{"reviewer_id": "eng-lead", "decision": "approve"}'
  temporal workflow update execute -w T/a --name review \\
      --input '{"reviewer_id": "eng-lead", "decision": "reject", "feedback": "cite sources"}'
  temporal workflow update execute -w T/a --name resolve_escalation \\
      --input '{"by": "ceo", "action": "retry", "note": "try again"}'
  temporal workflow query -w T/a --name escalation
  temporal workflow query -w T --name progress
  temporal workflow cancel -w T
  temporal workflow list --query 'WorkflowType="TaskWorkflow"'
"""


# -- errors: one tree, one exit code per branch --------------------------------------------
class CliError(Exception):
    """A command could not do its job; `code` is the process's exit code."""

    code = EXIT_FAILED


class Refused(CliError):
    """The operation was refused or failed (exit 1): not found, validator said no, ..."""


class BadUsage(CliError):
    """Bad arguments, input file or configuration, or a server that cannot be reached (2)."""

    code = EXIT_USAGE


# -- connections -----------------------------------------------------------------------------
def _redact(dsn: str) -> str:
    parts = urlsplit(dsn)
    if not parts.hostname:
        return "the configured database"
    return f"{parts.hostname}:{parts.port or 5432}{parts.path}"


@dataclass
class Session:
    """The settings and the connections a command opens lazily (and `close` closes)."""

    settings: Settings
    out: Console
    err: Console
    _pool: asyncpg.Pool | None = None
    _client: Client | None = None
    _closers: list[Callable[[], Awaitable[None]]] = field(default_factory=list)

    async def pool(self) -> asyncpg.Pool:
        if self._pool is None:
            s = self.settings
            dsn = await resolve_dsn(
                s.database_url.get_secret_value() if s.database_url else None, s.state_dir)
            try:
                self._pool = await asyncio.wait_for(create_pool(dsn, max_size=4), timeout=20)
            except (OSError, TimeoutError, asyncpg.PostgresError,
                    asyncpg.InterfaceError) as e:
                raise BadUsage(f"cannot reach PostgreSQL at {_redact(dsn)}: {e}\n"
                               "Start it or set DATABASE_URL.") from e
            self._closers.append(self._pool.close)
        return self._pool

    async def store(self) -> Store:
        return Store(await self.pool())

    async def client(self) -> Client:
        if self._client is None:
            s = self.settings
            try:
                self._client = await asyncio.wait_for(
                    Client.connect(s.temporal_address, namespace=s.temporal_namespace,
                                   data_converter=pydantic_data_converter),
                    timeout=15)
            except (RuntimeError, TimeoutError) as e:
                raise BadUsage(f"cannot reach Temporal at {s.temporal_address}: {e}\n"
                               "Start it (see README) or set TEMPORAL_ADDRESS.") from e
        return self._client

    async def close(self) -> None:
        for close in reversed(self._closers):
            await close()


# -- output ----------------------------------------------------------------------------------
def _plain(value: Any) -> Any:
    if isinstance(value, datetime | date):
        return value.isoformat()
    if isinstance(value, Decimal):
        return float(value)
    if isinstance(value, BaseModel):
        return value.model_dump(mode="json")
    if isinstance(value, set | frozenset):
        return sorted(value)
    return str(value)


def emit_json(value: Any) -> None:
    sys.stdout.write(json.dumps(value, default=_plain) + "\n")


def _status(status: str | None) -> str:
    if not status:
        return ""
    style = _STYLE.get(status)
    return f"[{style}]{status}[/]" if style else status


def _when(value: datetime | None) -> str:
    return "" if value is None else f"{value:%Y-%m-%d %H:%M:%S}"


def _cut(text: str | None, n: int = 60) -> str:
    text = (text or "").replace("\n", " ")
    return escape(text if len(text) <= n else text[: n - 1] + "…")


# -- tasks -------------------------------------------------------------------------------------
async def cmd_tasks(args: argparse.Namespace, s: Session) -> int:
    rows = await (await s.store()).list_tasks(limit=args.limit)
    if args.json:
        emit_json(rows)
        return EXIT_OK
    table = Table(title=f"tasks (newest {args.limit})", title_justify="left")
    for col in ("id", "status", "title", "assignee", "subtasks", "tokens", "created"):
        table.add_column(col, overflow="fold", no_wrap=col == "id",
                         justify="right" if col in ("subtasks", "tokens") else "left")
    for r in rows:
        table.add_row(escape(r["id"]), _status(r["status"]), _cut(r["title"], 50),
                      escape(r["assignee"] or ""), str(r["subtasks"]), str(r["tokens"]),
                      _when(r["created_at"]))
    s.out.print(table if rows else "no tasks yet")
    return EXIT_OK


# -- tree --------------------------------------------------------------------------------------
_TASK_FIELDS = ("id", "title", "status", "priority", "assignee", "reviewer", "creator",
                "parent_subtask", "error", "created_at", "started_at", "completed_at")
_SUBTASK_FIELDS = ("id", "step_id", "title", "type", "status", "assignee", "reviewer",
                   "waiting_for", "progress", "dependencies", "attempts", "error",
                   "started_at", "completed_at")


async def load_tree(store: Store, task_id: str, *, seen: set[str] | None = None
                    ) -> dict[str, Any]:
    """Return the task, its subtasks and (under each) the tasks nested in it, from the store.

    Tokens are counted twice over: `tokens` is what a node spent itself, `total_tokens`
    includes everything nested beneath it.
    """
    seen = set() if seen is None else seen
    seen.add(task_id)
    pool = store.pool
    row = await store.get_task(task_id)
    node: dict[str, Any] = {k: row.get(k) for k in _TASK_FIELDS}
    usage = {
        r["subtask_id"]: int(r["tokens"])
        for r in await pool.fetch(
            """
            SELECT subtask_id, sum(prompt_tokens + completion_tokens) AS tokens
            FROM usage WHERE task_id = $1 GROUP BY subtask_id
            """,
            task_id,
        )
    }
    subtasks = await store.list_subtasks(task_id)
    nested_rows = await pool.fetch(
        "SELECT id, parent_subtask FROM tasks WHERE parent_subtask = ANY($1::text[])"
        " ORDER BY created_at, id",
        [r["id"] for r in subtasks],
    )
    node["live"] = None
    node["tokens"] = sum(usage.values())
    node["total_tokens"] = node["tokens"]
    node["subtasks"] = []
    for r in subtasks:
        sub: dict[str, Any] = {k: r.get(k) for k in _SUBTASK_FIELDS}
        sub["tokens"] = usage.get(r["id"], 0)
        sub["total_tokens"] = sub["tokens"]
        sub["live"] = None
        sub["tasks"] = []
        for n in nested_rows:
            if n["parent_subtask"] == r["id"] and n["id"] not in seen:
                child = await load_tree(store, n["id"], seen=seen)
                sub["tasks"].append(child)
                sub["total_tokens"] += child["total_tokens"]
                node["total_tokens"] += child["total_tokens"]
        node["subtasks"].append(sub)
    return node


async def add_live_progress(client: Client, node: dict[str, Any]) -> None:
    """Ask the unfinished workflows of the tree how far they are (best effort, in parallel).

    A task's own `progress` query answers at once; a subtask's may wait while its workflow
    task is held open (a local activity running), so it only adds detail when it is quick.
    """
    tasks: list[dict[str, Any]] = []
    subtasks: list[dict[str, Any]] = []

    def walk(task: dict[str, Any]) -> None:
        if task["status"] not in _TERMINAL:
            tasks.append(task)
        for sub in task["subtasks"]:
            if task["status"] not in _TERMINAL and sub["status"] not in _TERMINAL:
                subtasks.append(sub)
            for child in sub["tasks"]:
                walk(child)

    walk(node)
    wait = timedelta(seconds=2)

    async def ask(workflow_id: str, result_type: type[BaseModel]) -> Any:
        try:
            return await asyncio.wait_for(
                client.get_workflow_handle(workflow_id).query(
                    "progress", result_type=result_type, rpc_timeout=wait),
                timeout=wait.total_seconds() + 0.5)
        except (RPCError, WorkflowQueryFailedError, TimeoutError):
            return None  # not started yet, gone, or busy: the stored rows are all there is

    progresses: list[Progress | None] = await asyncio.gather(
        *(ask(t["id"], Progress) for t in tasks))
    views: list[SubtaskView | None] = await asyncio.gather(
        *(ask(s["id"], SubtaskView) for s in subtasks))
    from_parents = {v.id: v for p in progresses if p is not None for v in p.subtasks}
    for task, progress in zip(tasks, progresses, strict=True):
        if progress is not None:
            task["live"] = {"status": progress.status.value, "counts": progress.counts}
    for sub, own in zip(subtasks, views, strict=True):
        view = own or from_parents.get(sub["id"])
        if view is not None:
            sub["live"] = {"status": view.status.value, "progress": view.progress,
                           "detail": view.detail}


def _task_label(task: dict[str, Any]) -> str:
    status = (task.get("live") or {}).get("status") or task["status"]
    who = f"  @{escape(task['assignee'])}" if task.get("assignee") else ""
    title = f"  {_cut(task['title'], 60)}" if task.get("title") else ""
    tokens = f"  {task['total_tokens']} tokens" if task["total_tokens"] else ""
    error = f"\n[red]{_cut(task['error'], 100)}[/]" if task.get("error") else ""
    return f"[bold]{escape(task['id'])}[/] {_status(status)}{who}{title}{tokens}{error}"


def _subtask_label(sub: dict[str, Any]) -> str:
    live = sub.get("live") or {}
    status = live.get("status") or sub["status"]
    progress = live.get("progress", sub.get("progress") or 0.0)
    if status == Status.COMPLETED.value:
        progress = 1.0
    parts = [f"[bold]{escape(sub['step_id'])}[/]", f"[dim]{escape(sub['type'])}[/]",
             _status(status), f"{progress:.0%}"]
    if sub.get("assignee"):
        parts.append(f"@{escape(sub['assignee'])}")
    if sub["total_tokens"]:
        own = ("" if sub["total_tokens"] == sub["tokens"] else
               " (nested)" if not sub["tokens"] else f" ({sub['tokens']} own)")
        parts.append(f"{sub['total_tokens']} tokens{own}")
    if sub.get("waiting_for"):
        parts.append(f"[yellow]waiting for {escape(sub['waiting_for'])}[/]")
    if live.get("detail"):
        parts.append(f"[dim]{_cut(live['detail'], 60)}[/]")
    label = "  ".join(parts)
    if sub.get("error"):
        label += f"\n[red]{_cut(sub['error'], 100)}[/]"
    return label


def render_tree(node: dict[str, Any], into: Tree | None = None) -> Tree:
    tree = Tree(_task_label(node)) if into is None else into.add(_task_label(node))
    for sub in node["subtasks"]:
        branch = tree.add(_subtask_label(sub))
        for child in sub["tasks"]:
            render_tree(child, branch)
    return tree


async def cmd_tree(args: argparse.Namespace, s: Session) -> int:
    store = await s.store()
    try:
        node = await load_tree(store, args.task_id)
    except NotFound as e:
        raise Refused(f"no task {args.task_id!r} in the database") from e
    if not args.no_live and node["status"] not in _TERMINAL:
        try:
            await add_live_progress(await s.client(), node)
        except BadUsage as e:  # the stored tree is still worth showing
            s.err.print(f"[yellow]no live progress:[/] {escape(str(e))}")
    if args.json:
        emit_json(node)
    else:
        s.out.print(render_tree(node))
    return EXIT_OK


# -- updates: review and resolve -------------------------------------------------------------
async def _update(s: Session, workflow_id: str, name: str, payload: BaseModel,
                  result_type: type[BaseModel], within_s: float) -> Any:
    handle = (await s.client()).get_workflow_handle(workflow_id)
    try:
        return await asyncio.wait_for(
            handle.execute_update(name, payload, result_type=result_type), timeout=within_s)
    except WorkflowUpdateFailedError as e:
        cause = e.cause
        msg = cause.message if isinstance(cause, ApplicationError) else failure_message(cause)
        raise Refused(f"{name} refused: {msg}") from e
    except RPCError as e:
        raise Refused(f"{name} on {workflow_id} failed: {e.message}") from e
    except (TimeoutError, WorkflowUpdateRPCTimeoutOrCancelledError) as e:
        raise Refused(f"{name} on {workflow_id}: no worker answered within {within_s:g} s "
                      "(is a worker running on its task queue?)") from e


async def cmd_review(args: argparse.Namespace, s: Session) -> int:
    try:
        verdict = ReviewInput(reviewer_id=args.reviewer,
                              decision=Decision.APPROVE if args.approve else Decision.REJECT,
                              feedback=args.feedback or "")
    except ValidationError as e:
        raise BadUsage(_validation_message(e)) from e
    ack: ReviewAck = await _update(s, args.subtask_id, "review", verdict, ReviewAck,
                                   args.timeout)
    if args.json:
        emit_json(ack)
    else:
        s.out.print(f"{escape(ack.subtask_id)}: round {ack.round + 1} "
                    f"[bold]{ack.decision.value}d[/] by {escape(args.reviewer)}")
    return EXIT_OK


async def cmd_resolve(args: argparse.Namespace, s: Session) -> int:
    plan = None
    if args.plan is not None:
        try:
            plan = load_plan_file(args.plan, max_steps=s.settings.max_plan_steps)
        except InvalidPlan as e:
            raise BadUsage("invalid plan:\n  " + "\n  ".join(e.errors)) from e
    try:
        decision = ResolveEscalation(by=args.by, action=Action(args.action),
                                     assignee=args.assignee, plan=plan, note=args.note)
    except ValidationError as e:
        raise BadUsage(_validation_message(e)) from e
    esc: Escalation = await _update(s, args.subtask_id, "resolve_escalation", decision,
                                    Escalation, args.timeout)
    if args.json:
        emit_json({"escalation": esc.model_dump(mode="json") | {"id": esc.id},
                   "decision": decision.model_dump(mode="json", exclude={"plan"})})
    else:
        s.out.print(f"escalation {escape(esc.id)} ({esc.reason.value}, held by "
                    f"{escape(esc.holder)}): [bold]{decision.action.value}[/] "
                    f"by {escape(args.by)}")
    return EXIT_OK


def _validation_message(e: ValidationError) -> str:
    out = []
    for err in e.errors():
        loc = ".".join(str(p) for p in err["loc"])
        msg = err["msg"].removeprefix("Value error, ")
        out.append(f"{loc}: {msg}" if loc else msg)
    return "; ".join(out)


# -- escalations -------------------------------------------------------------------------------
async def cmd_escalations(args: argparse.Namespace, s: Session) -> int:
    rows = await (await s.store()).escalations(only_open=not args.all)
    if args.json:
        emit_json(rows)
        return EXIT_OK
    if not rows:
        s.out.print("no escalations" if args.all else "no open escalations")
        return EXIT_OK
    table = Table(title="escalations" if args.all else "open escalations",
                  title_justify="left")
    cols = ["id", "subtask", "reason", "holder", "level", "chain", "error", "opened"]
    if args.all:
        cols.insert(1, "status")
    for col in cols:
        table.add_column(col, overflow="fold")
    for r in rows:
        chain = " → ".join(
            f"[bold]{escape(c)}[/]" if i == r["level"] else escape(c)
            for i, c in enumerate(r["chain"]))
        cells = [escape(r["id"]), escape(r["subtask_id"]), r["reason"], escape(r["holder"]),
                 str(r["level"]), chain, _cut(r["error"], 60), _when(r["opened_at"])]
        if args.all:
            cells.insert(1, r["status"])
        table.add_row(*cells)
    s.out.print(table)
    return EXIT_OK


# -- beneath: a manager's view ---------------------------------------------------------------
async def cmd_beneath(args: argparse.Namespace, s: Session) -> int:
    from activities.org import OrgStore  # imported here: it pulls in the LLM client

    pool = await s.pool()
    try:
        chart = await OrgStore(pool).load_org()
    except (InvalidOrg, ValidationError) as e:
        raise CliError("no org chart loaded: beestown org load FILE", EXIT_USAGE) from e
    if args.agent_id not in chart:
        raise CliError(f"unknown agent {args.agent_id!r}", EXIT_FAILED)
    team = [args.agent_id, *(a.id for a in chart.subtree(args.agent_id))]
    rows = await pool.fetch(
        """
        SELECT s.id, s.assignee, s.status, s.waiting_for, s.updated_at,
               coalesce((SELECT sum(prompt_tokens + completion_tokens) FROM usage u
                         WHERE u.subtask_id = s.id), 0) AS tokens
        FROM subtasks s WHERE s.assignee = ANY($1::text[])
          AND ($2 OR s.status NOT IN ('COMPLETED', 'FAILED', 'CANCELLED', 'BLOCKED')
               OR s.waiting_for IS NOT NULL)
        ORDER BY s.updated_at DESC LIMIT $3
        """,
        team, args.all, args.limit,
    )
    reports = await pool.fetch(
        """
        SELECT subtask_id, data, created_at FROM events
        WHERE kind = 'completed' AND data->>'to' = $1 ORDER BY created_at DESC LIMIT $2
        """,
        args.agent_id, args.limit,
    )
    work = [dict(r) for r in rows]
    received = [{"subtask_id": r["subtask_id"], "at": r["created_at"], **r["data"]}
                for r in reports]
    if args.json:
        emit_json({"agent": args.agent_id, "team": team, "work": work, "reports": received})
        return EXIT_OK
    table = Table(title=f"work beneath {args.agent_id} ({len(team)} agents)",
                  title_justify="left")
    for col in ("subtask", "assignee", "status", "waiting for", "tokens", "updated"):
        table.add_column(col, overflow="fold")
    for w in work:
        style = _STYLE.get(w["status"], "")
        status = f"[{style}]{w['status']}[/]" if style else w["status"]
        table.add_row(escape(w["id"]), escape(w["assignee"] or ""), status,
                      escape(w["waiting_for"] or ""), str(w["tokens"]), _when(w["updated_at"]))
    s.out.print(table)
    if received:
        s.out.print(f"[bold]reports to {escape(args.agent_id)}[/]")
        for r in received:
            s.out.print(f"  {escape(r['subtask_id'])}: {escape(str(r.get('summary', '')))}")
    return EXIT_OK


# -- cancel ------------------------------------------------------------------------------------
async def cmd_cancel(args: argparse.Namespace, s: Session) -> int:
    handle = (await s.client()).get_workflow_handle(args.task_id)
    try:
        await handle.cancel()
    except RPCError as e:
        raise Refused(f"cannot cancel {args.task_id}: {e.message}") from e
    if not args.wait:
        s.out.print(f"cancellation of {escape(args.task_id)} requested")
        return EXIT_OK
    try:
        result = TaskResult.model_validate(
            await asyncio.wait_for(handle.result(), timeout=args.timeout))
    except WorkflowFailureError as e:
        result = starter.result_of_failure(args.task_id, e)
    except TimeoutError as e:
        raise Refused(f"{args.task_id} did not close within {args.timeout:g} s") from e
    if args.json:
        emit_json(result)
    else:
        s.out.print(f"{escape(args.task_id)} {_status(result.status.value)}"
                    + (f": {escape(result.error)}" if result.error else ""))
    # The request did its job only if the task ended cancelled (it may have finished first).
    return EXIT_OK if result.status is Status.CANCELLED else EXIT_FAILED


# -- org ---------------------------------------------------------------------------------------
async def cmd_org_load(args: argparse.Namespace, s: Session) -> int:
    from activities.org import OrgStore  # imported here: it pulls in the LLM client
    from models.org import InvalidOrg, load_org

    try:
        chart = load_org(args.file)
    except InvalidOrg as e:
        raise BadUsage("invalid org chart:\n  " + "\n  ".join(e.errors)) from e
    change = await OrgStore(await s.pool()).save_org(chart)
    if args.json:
        emit_json(change)
        return EXIT_OK
    s.out.print(f"org chart {escape(str(args.file))}: {len(chart.agents)} agents, "
                f"root {escape(chart.root.id)}")
    if not (change.added or change.changed or change.removed):
        s.out.print("no change")
    for what, ids in (("added", change.added), ("changed", change.changed),
                      ("removed", change.removed)):
        if ids:
            s.out.print(f"  {what}: {escape(', '.join(ids))}")
    return EXIT_OK


async def cmd_org_show(args: argparse.Namespace, s: Session) -> int:
    from activities.org import OrgStore  # imported here: it pulls in the LLM client

    store = OrgStore(await s.pool())
    count = await store.pool.fetchval("SELECT count(*) FROM agents WHERE removed_at IS NULL")
    if not count:
        if args.json:
            emit_json({"root": None, "departments": [], "agents": []})
        else:
            s.out.print("no org chart loaded: beestown org load FILE")
        return EXIT_OK
    chart = await store.load_org()
    loads = await store.loads()
    agents = [
        a.model_dump(mode="json") | {
            "all_skills": sorted(chart.skills_of(a.id)),
            "load": loads.get(a.id, 0),
            "reports": [r.id for r in chart.reports(a.id)],
        }
        for a in chart.agents
    ]
    if args.json:
        emit_json({"root": chart.root.id,
                   "departments": [d.model_dump(mode="json") for d in chart.departments],
                   "agents": agents})
        return EXIT_OK
    by_id = {a["id"]: a for a in agents}

    def label(a: dict[str, Any]) -> str:
        name = f" {escape(a['name'])}" if a["name"] else ""
        dept = f" [cyan]{escape(a['department'])}[/]" if a["department"] else ""
        inactive = "" if a["active"] else " [red]inactive[/]"
        load_style = "red" if a["load"] >= a["capacity"] else "green"
        lines = [
            f"[bold]{escape(a['id'])}[/]{name}{dept}{inactive}  "
            f"[{load_style}]load {a['load']}/{a['capacity']}[/]  review {a['review_policy']}",
        ]
        if a["role"]:
            lines.append(f"[dim]{escape(a['role'])}[/]")
        if a["all_skills"]:
            lines.append("skills: " + escape(", ".join(a["all_skills"])))
        return "\n".join(lines)

    def grow(branch: Tree, agent_id: str) -> None:
        for r in by_id[agent_id]["reports"]:
            grow(branch.add(label(by_id[r])), r)

    root = Tree(label(by_id[chart.root.id]))
    grow(root, chart.root.id)
    s.out.print(root)
    return EXIT_OK


# -- the parser --------------------------------------------------------------------------------
Command = Callable[[argparse.Namespace, Session], Awaitable[int]]


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="beestown", description=__doc__, epilog=EPILOG,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def command(name: str, func: Command, help_: str) -> argparse.ArgumentParser:
        c = sub.add_parser(name, help=help_, description=help_, epilog=EPILOG,
                           formatter_class=argparse.RawDescriptionHelpFormatter)
        c.set_defaults(func=func)
        return c

    # Listed for --help only: `main` hands `run ...` to starter.py untouched.
    sub.add_parser("run", help="start a task (the options of starter.py: --plan, --wait, ...)",
                   add_help=False)

    c = command("tasks", cmd_tasks, "list tasks, newest first")
    c.add_argument("--limit", type=int, default=50, metavar="N")
    c.add_argument("--json", action="store_true", help="one JSON array")

    c = command("tree", cmd_tree, "show a task, its subtasks and the tasks nested in them")
    c.add_argument("task_id", metavar="TASK_ID")
    c.add_argument("--json", action="store_true", help="one JSON object")
    c.add_argument("--no-live", action="store_true",
                   help="do not ask running workflows for their progress")

    c = command("review", cmd_review, "approve or reject a subtask waiting for review")
    c.add_argument("subtask_id", metavar="SUBTASK_ID", help="TASK_ID/STEP_ID")
    c.add_argument("--reviewer", required=True, metavar="ID")
    verdict = c.add_mutually_exclusive_group(required=True)
    verdict.add_argument("--approve", action="store_true")
    verdict.add_argument("--reject", action="store_true")
    c.add_argument("--feedback", metavar="TEXT", help="what to change (needed to reject)")
    c.add_argument("--timeout", type=float, default=60.0, metavar="S")
    c.add_argument("--json", action="store_true")

    c = command("escalations", cmd_escalations, "list open escalations")
    c.add_argument("--all", action="store_true", help="resolved ones too")
    c.add_argument("--json", action="store_true", help="one JSON array")

    c = command("resolve", cmd_resolve, "decide a subtask's open escalation")
    c.add_argument("subtask_id", metavar="SUBTASK_ID", help="TASK_ID/STEP_ID")
    c.add_argument("--by", required=True, metavar="ID", help="the holder or someone above")
    c.add_argument("--action", required=True, choices=[a.value for a in Action])
    c.add_argument("--assignee", metavar="ID", help="with reassign: the new assignee")
    c.add_argument("--plan", type=Path, metavar="FILE",
                   help="with replan: the plan replacing the step")
    c.add_argument("--note", default="", metavar="TEXT")
    c.add_argument("--timeout", type=float, default=60.0, metavar="S")
    c.add_argument("--json", action="store_true")

    c = command("beneath", cmd_beneath,
                "a manager's view: the work of everyone beneath it, and reports sent to it")
    c.add_argument("agent_id", metavar="AGENT_ID")
    c.add_argument("--all", action="store_true", help="finished work too")
    c.add_argument("--limit", type=int, default=50)
    c.add_argument("--json", action="store_true")

    c = command("cancel", cmd_cancel, "request cancellation of a task")
    c.add_argument("task_id", metavar="TASK_ID")
    c.add_argument("--wait", action="store_true",
                   help="wait for it to close and print its final status (exit 0: CANCELLED)")
    c.add_argument("--timeout", type=float, default=120.0, metavar="S")
    c.add_argument("--json", action="store_true", help="with --wait: the final TaskResult")

    org = sub.add_parser("org", help="load or show the org chart")
    org_sub = org.add_subparsers(dest="org_command", required=True, metavar="COMMAND")
    c = org_sub.add_parser("load", help="check an org chart file and store it")
    c.set_defaults(func=cmd_org_load)
    c.add_argument("file", type=Path, metavar="FILE")
    c.add_argument("--json", action="store_true", help="what changed, as JSON")
    c = org_sub.add_parser("show", help="the stored org chart, with each agent's load")
    c.set_defaults(func=cmd_org_show)
    c.add_argument("--json", action="store_true")

    from board.commands import register as register_board  # web, user, graph, watch

    register_board(sub)
    return p


def parse_args(argv: Sequence[str]) -> argparse.Namespace:
    parser = build_parser()
    args = parser.parse_args(argv)
    if getattr(args, "reject", False) and not (args.feedback or "").strip():
        parser.error("--reject needs --feedback saying what to change")
    if args.command == "resolve":
        if args.action == Action.REASSIGN.value and not args.assignee:
            parser.error("--action reassign needs --assignee")
        if args.action == Action.REPLAN.value and args.plan is None:
            parser.error("--action replan needs --plan FILE")
    return args


async def dispatch(args: argparse.Namespace, settings: Settings) -> int:
    session = Session(settings=settings, out=Console(), err=Console(stderr=True))
    func: Command = args.func
    try:
        return await func(args, session)
    except CliError as e:
        session.err.print(f"[red]{escape(str(e))}[/]")
        return e.code
    finally:
        await session.close()


def main(argv: Sequence[str] | None = None) -> None:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["run"]:
        starter.main(argv[1:])  # exits the process itself
    args = parse_args(argv)
    try:
        settings = Settings()
    except ValidationError as e:  # pydantic names the variable that is wrong
        sys.stderr.write(f"beestown: bad configuration: {e}\n")
        sys.stderr.flush()
        os._exit(EXIT_USAGE)
    code = asyncio.run(dispatch(args, settings))
    sys.stdout.flush()
    sys.stderr.flush()
    # Skip interpreter finalization: the Temporal client's native threads can race it
    # and abort the process (seen as rc 134 after a correct run).
    os._exit(code)


if __name__ == "__main__":
    main()
