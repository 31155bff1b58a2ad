"""`beestown tasks`, `tree` and `cancel`: what tasks there are, how far they got, stopping one."""

from __future__ import annotations

import argparse
import asyncio
from datetime import timedelta
from typing import Any

from pydantic import BaseModel
from rich import box
from rich.markup import escape
from rich.table import Table
from rich.tree import Tree
from temporalio.client import Client, WorkflowQueryFailedError
from temporalio.service import RPCError

from cli.output import cut, emit_json, rest, short_when, styled
from cli.run import outcome
from cli.session import EXIT_FAILED, EXIT_OK, BadUsage, Refused, Session
from models.io import Progress, SubtaskView
from models.task import TERMINAL, FallbackUsed, Status
from runtime.store import NotFound, Store

_TERMINAL = {s.value for s in TERMINAL}


# -- tasks -------------------------------------------------------------------------------------
async def cmd_tasks(args: argparse.Namespace, s: Session) -> int:
    rows = await (await s.store()).list_tasks(limit=args.limit)
    if args.json:
        emit_json(rows)
        return EXIT_OK
    table = Table(title=f"tasks (newest {args.limit})", title_justify="left",
                  box=box.SIMPLE_HEAD, pad_edge=False)
    # At 80 columns: ids stay whole (people copy them); the title gives way, cut with "…".
    # Fixed widths but for the title, which takes what is left (rich: ratio).
    widths = {"id": max([len(r["id"]) for r in rows] + [2]), "status": 9,
              "assignee": min(12, max([len(r["assignee"] or "") for r in rows] + [8])),
              "steps": 5, "tokens": 6, "created": 11}
    cols = ["id", "status", "title", "assignee", "steps", "tokens", "created"]
    if not any(r["tokens"] for r in rows):  # no model was used: room for the title
        cols.remove("tokens")
        del widths["tokens"]
    for col in cols:
        table.add_column(col, no_wrap=True, overflow="fold" if col == "id" else "ellipsis",
                         width=widths.get(col, rest(s.out.width, widths)),
                         justify="right" if col in ("steps", "tokens") else "left")
    for r in rows:
        cells = {"id": escape(r["id"]), "status": styled(r["status"]),
                 "title": cut(r["title"], 50), "assignee": escape(r["assignee"] or ""),
                 "steps": str(r["subtasks"]), "tokens": str(r["tokens"]),
                 "created": short_when(r["created_at"])}
        table.add_row(*(cells[c] for c in cols))
    s.out.print(table if rows else "no tasks yet")
    return EXIT_OK


# -- tree --------------------------------------------------------------------------------------
_TASK_FIELDS = ("id", "title", "status", "priority", "assignee", "reviewer", "creator",
                "parent_subtask", "error", "created_at", "started_at", "completed_at")
_SUBTASK_FIELDS = ("id", "step_id", "title", "type", "status", "assignee", "reviewer",
                   "waiting_for", "progress", "dependencies", "attempts", "error",
                   "started_at", "completed_at")


def graph_order(rows: list[dict[str, Any]], plan: Any) -> list[dict[str, Any]]:
    """Order steps as the graph runs them: each after its dependencies, else in plan order."""
    listed = [s.get("id") for s in plan.get("steps", [])] if isinstance(plan, dict) else []
    rank = {step: i for i, step in enumerate(listed)}
    todo = sorted(rows, key=lambda r: (rank.get(r["step_id"], len(rank)), r["step_id"]))
    placed: set[str] = set()
    out: list[dict[str, Any]] = []
    while todo:
        ready = next((r for r in todo if set(r.get("dependencies") or []) <= placed), todo[0])
        todo.remove(ready)
        placed.add(ready["step_id"])
        out.append(ready)
    return out


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
    subtasks = graph_order(await store.list_subtasks(task_id), row.get("plan"))
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
        sub["fallback"] = (r.get("result") or {}).get("fallback")  # FallbackUsed, or None
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
            # BLOCKED with a holder is an open escalation, not blocked for good.
            if task["status"] not in _TERMINAL and (
                    sub["status"] not in _TERMINAL or sub.get("waiting_for")):
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
                           "detail": view.detail, "waiting_for": view.waiting_for,
                           "review_round": view.review_round,
                           "escalation_id": view.escalation_id,
                           "refusals": view.refusals}


def _task_label(task: dict[str, Any]) -> str:
    status = (task.get("live") or {}).get("status") or task["status"]
    who = f"  @{escape(task['assignee'])}" if task.get("assignee") else ""
    title = f"  {cut(task['title'], 60)}" if task.get("title") else ""
    tokens = f"  {task['total_tokens']} tokens" if task["total_tokens"] else ""
    error = f"\n[red]{cut(task['error'], 100)}[/]" if task.get("error") else ""
    return f"[bold]{escape(task['id'])}[/] {styled(status)}{who}{title}{tokens}{error}"


def _subtask_label(sub: dict[str, Any]) -> str:
    live = sub.get("live") or {}
    status = live.get("status") or sub["status"]
    progress = live.get("progress", sub.get("progress") or 0.0)
    if status == Status.COMPLETED.value:
        progress = 1.0
    parts = [f"[bold]{escape(sub['step_id'])}[/]", f"[dim]{escape(sub['type'])}[/]",
             styled(status), f"{progress:.0%}"]
    if sub.get("assignee"):
        parts.append(f"@{escape(sub['assignee'])}")
    if sub["total_tokens"]:
        own = ("" if sub["total_tokens"] == sub["tokens"] else
               " (nested)" if not sub["tokens"] else f" ({sub['tokens']} own)")
        parts.append(f"{sub['total_tokens']} tokens{own}")
    finished = status in _TERMINAL and not (
        status == Status.BLOCKED.value and (live.get("waiting_for") or sub.get("waiting_for")))
    waiting = None if finished else (live.get("waiting_for") or sub.get("waiting_for"))
    if waiting:
        what = f"waiting for {waiting}"
        if live.get("review_round"):
            what += f" (review round {live['review_round']})"
        elif live.get("escalation_id") and live["escalation_id"] not in waiting:
            what += f" (escalation {live['escalation_id']})"
        parts.append(f"[yellow]{escape(what)}[/]")
    detail = live.get("detail") or ""
    if detail and not finished and not (
            waiting and detail.startswith(("waiting for", "escalated to"))):
        parts.append(f"[dim]{cut(detail, 60)}[/]")
    label = "  ".join(parts)
    if sub.get("fallback"):
        label += f"\n[yellow]{escape(FallbackUsed.model_validate(sub['fallback']).sentence())}[/]"
    if sub.get("error"):
        label += f"\n[red]{cut(sub['error'], 100)}[/]"
    for refusal in (live.get("refusals") or [])[-3:]:
        label += f"\n[magenta]refused signal: {cut(refusal, 100)}[/]"
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
        raise Refused(f"no task {args.task_id!r} in {s.database} "
                      "(beestown tasks lists them)") from e
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
        result = await asyncio.wait_for(outcome(handle), timeout=args.timeout)
    except TimeoutError as e:
        raise Refused(f"{args.task_id} did not close within {args.timeout:g} s") from e
    if args.json:
        emit_json(result)
    else:
        s.out.print(f"{escape(args.task_id)} {styled(result.status.value)}"
                    + (f": {escape(result.error)}" if result.error else ""))
    # The request did its job only if the task ended cancelled (it may have finished first).
    return EXIT_OK if result.status is Status.CANCELLED else EXIT_FAILED
