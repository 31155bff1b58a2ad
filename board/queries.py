"""What each page reads from the store: plain SQL over the worker's tables."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from typing import Any

import asyncpg

STATUSES = ["PENDING", "SPLITTING", "READY", "QUEUED", "ASSIGNED", "RUNNING", "REVIEWING",
            "COMPLETED", "FAILED", "CANCELLED", "BLOCKED"]
PRIORITIES = ["low", "medium", "high", "urgent"]
TERMINAL = {"COMPLETED", "FAILED", "CANCELLED", "BLOCKED"}


@dataclass
class TaskFilter:
    status: str = ""
    priority: str = ""
    assignee: str = ""
    text: str = ""
    nested: bool = False  # include tasks that managers split steps into
    before: tuple[datetime, str] | None = None  # keyset cursor: (created_at, id)


@dataclass
class TaskPage:
    rows: list[dict[str, Any]]
    counts: dict[str, int]
    next_cursor: tuple[datetime, str] | None
    total: int = 0


def _like(text: str) -> str:
    return "%" + text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%"


def _task_where(f: TaskFilter, *, by_status: bool, t: str = ""
                ) -> tuple[list[str], list[Any]]:
    """The WHERE terms of `f` (its status too if `by_status`) on columns prefixed `t`, and
    their arguments ($1 is `f.nested`)."""
    where = [f"($1 OR {t}parent_subtask IS NULL)"]
    args: list[Any] = [f.nested]
    status = (("status", f.status),) if by_status else ()
    for column, value in (*status, ("priority", f.priority), ("assignee", f.assignee)):
        if value:
            args.append(value)
            where.append(f"{t}{column} = ${len(args)}")
    if f.text:
        args.append(_like(f.text))
        n = len(args)
        where.append(f"({t}title ILIKE ${n} OR {t}id ILIKE ${n} OR {t}prompt ILIKE ${n})")
    return where, args


async def list_tasks(pool: asyncpg.Pool, f: TaskFilter, *, limit: int) -> TaskPage:
    """Return one page of tasks, newest first, and the count of each status (filtered).

    Keyset paging on (created_at, id) walks the index however deep the page is.
    """
    page_where, args = _task_where(f, by_status=True, t="t.")
    if f.before is not None:
        args.extend(f.before)
        page_where.append(f"(t.created_at, t.id) < (${len(args) - 1}, ${len(args)})")
    args.append(limit + 1)
    rows = await pool.fetch(
        f"""
        SELECT t.id, t.title, t.status, t.priority, t.assignee, t.creator, t.created_at,
               t.completed_at, t.deadline, t.run_id, t.parent_subtask, t.error,
               (SELECT count(*) FROM subtasks s WHERE s.task_id = t.id) AS steps,
               (SELECT count(*) FROM subtasks s WHERE s.task_id = t.id
                  AND s.status = 'COMPLETED') AS done,
               (SELECT coalesce(sum(prompt_tokens + completion_tokens), 0) FROM usage u
                  WHERE u.task_id = t.id) AS tokens,
               (SELECT coalesce(sum(cost_usd), 0) FROM usage u
                  WHERE u.task_id = t.id) AS cost
        FROM tasks t WHERE {" AND ".join(page_where)}
        ORDER BY t.created_at DESC, t.id DESC LIMIT ${len(args)}
        """,
        *args,
    )
    counts = await _status_counts(pool, f)
    items = [dict(r) for r in rows[:limit]]
    cursor = None
    if len(rows) > limit:
        last = items[-1]
        cursor = (last["created_at"], last["id"])
    return TaskPage(rows=items, counts=counts, next_cursor=cursor,
                    total=sum(counts.values()))


async def _status_counts(pool: asyncpg.Pool, f: TaskFilter) -> dict[str, int]:
    """Count tasks by status under every filter but the status one (what each chip gives)."""
    where, args = _task_where(f, by_status=False)
    rows = await pool.fetch(
        f"SELECT status, count(*) AS n FROM tasks WHERE {' AND '.join(where)} GROUP BY status",
        *args)
    return {r["status"]: int(r["n"]) for r in rows}


async def task_assignees(pool: asyncpg.Pool) -> list[str]:
    rows = await pool.fetch("SELECT id FROM agents WHERE removed_at IS NULL ORDER BY position, id")
    return [r["id"] for r in rows]


@dataclass
class TaskView:
    task: dict[str, Any]
    steps: list[dict[str, Any]]
    nested: dict[str, list[str]]  # subtask id -> nested task ids
    usage: dict[str, dict[str, float]]  # subtask id -> tokens/cost (own + nested)
    totals: dict[str, float] = field(default_factory=dict)
    parent: dict[str, Any] | None = None


async def task_view(pool: asyncpg.Pool, task_id: str) -> TaskView | None:
    """Return a task, its steps with who/when/how much, and the tasks nested in them."""
    task = await pool.fetchrow("SELECT * FROM tasks WHERE id = $1", task_id)
    if task is None:
        return None
    steps = [dict(r) for r in await pool.fetch(
        "SELECT * FROM subtasks WHERE task_id = $1 ORDER BY created_at, id", task_id)]
    nested_rows = await pool.fetch(
        "SELECT id, parent_subtask FROM tasks WHERE parent_subtask = ANY($1::text[])"
        " ORDER BY created_at, id", [s["id"] for s in steps])
    nested: dict[str, list[str]] = {}
    for r in nested_rows:
        nested.setdefault(r["parent_subtask"], []).append(r["id"])
    usage_rows = await pool.fetch(
        """
        SELECT task_id, subtask_id, sum(prompt_tokens + completion_tokens) AS tokens,
               sum(cost_usd) AS cost
        FROM usage WHERE task_id = $1 OR task_id LIKE $2 GROUP BY task_id, subtask_id
        """,
        task_id, _like_prefix(task_id))
    step_ids = {s["id"] for s in steps}
    usage: dict[str, dict[str, float]] = {}
    totals = {"tokens": 0.0, "cost": 0.0}
    for r in usage_rows:
        totals["tokens"] += r["tokens"]
        totals["cost"] += r["cost"]
        owner = r["subtask_id"] if r["task_id"] == task_id else _owning_step(
            r["task_id"], step_ids)
        if owner:
            u = usage.setdefault(owner, {"tokens": 0.0, "cost": 0.0})
            u["tokens"] += r["tokens"]
            u["cost"] += r["cost"]
    parent = None
    if task["parent_subtask"]:
        parent = await pool.fetchrow(
            "SELECT id, task_id, step_id FROM subtasks WHERE id = $1", task["parent_subtask"])
    return TaskView(task=dict(task), steps=steps, nested=nested, usage=usage, totals=totals,
                    parent=dict(parent) if parent else None)


def _like_prefix(task_id: str) -> str:
    return task_id.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "/%"


def _owning_step(nested_task: str, step_ids: set[str]) -> str | None:
    """Return the step of this task that `nested_task` (`<step id>/subN/...`) belongs to."""
    parts = nested_task.split("/")
    for n in range(len(parts), 0, -1):
        prefix = "/".join(parts[:n])
        if prefix in step_ids:
            return prefix
    return None


@dataclass
class StepView:
    step: dict[str, Any]
    task: dict[str, Any]
    transcript: list[dict[str, Any]]
    events: list[dict[str, Any]]
    escalations: list[dict[str, Any]]
    usage: list[dict[str, Any]]
    artifacts: list[dict[str, Any]]
    nested: list[str]


async def step_view(pool: asyncpg.Pool, subtask_id: str) -> StepView | None:
    step = await pool.fetchrow("SELECT * FROM subtasks WHERE id = $1", subtask_id)
    if step is None:
        return None
    task = await pool.fetchrow(
        "SELECT id, title, status, run_id FROM tasks WHERE id = $1", step["task_id"])
    transcript = [r["message"] for r in await pool.fetch(
        "SELECT message FROM transcripts WHERE subtask_id = $1 ORDER BY seq", subtask_id)]
    events = [dict(r) for r in await pool.fetch(
        "SELECT kind, data, created_at FROM events WHERE subtask_id = $1"
        " ORDER BY created_at, id", subtask_id)]
    escalations = [dict(r) for r in await pool.fetch(
        "SELECT * FROM escalations WHERE subtask_id = $1 ORDER BY opened_at, id", subtask_id)]
    usage = [dict(r) for r in await pool.fetch(
        "SELECT model, purpose, agent_id, prompt_tokens, completion_tokens, cost_usd,"
        " created_at FROM usage WHERE subtask_id = $1 ORDER BY created_at, id", subtask_id)]
    artifacts = [dict(r) for r in await pool.fetch(
        "SELECT id, name, mime, size FROM blobs WHERE subtask_id = $1 ORDER BY created_at, id",
        subtask_id)]
    nested = [r["id"] for r in await pool.fetch(
        "SELECT id FROM tasks WHERE parent_subtask = $1 ORDER BY created_at", subtask_id)]
    return StepView(step=dict(step), task=dict(task) if task else {}, transcript=transcript,
                    events=events, escalations=escalations, usage=usage, artifacts=artifacts,
                    nested=nested)


async def waiting_reviews(pool: asyncpg.Pool, agents: list[str]) -> list[dict[str, Any]]:
    """Return the steps waiting for a review by one of `agents`, oldest first."""
    rows = await pool.fetch(
        """
        SELECT s.id, s.task_id, s.step_id, s.title, s.description, s.type, s.assignee,
               s.reviewer, s.updated_at, s.result,
               (SELECT count(*) FROM events e WHERE e.subtask_id = s.id
                  AND e.kind = 'review_reject') AS rejections
        FROM subtasks s WHERE s.status = 'REVIEWING' AND s.reviewer = ANY($1::text[])
        ORDER BY s.updated_at, s.id
        """,
        agents)
    return [dict(r) for r in rows]


async def open_escalations(pool: asyncpg.Pool) -> list[dict[str, Any]]:
    rows = await pool.fetch(
        """
        SELECT e.*, s.title, s.step_id, s.assignee FROM escalations e
        LEFT JOIN subtasks s ON s.id = e.subtask_id
        WHERE e.status = 'open' ORDER BY e.opened_at, e.id
        """)
    return [dict(r) for r in rows]


async def org_rows(pool: asyncpg.Pool) -> list[dict[str, Any]]:
    rows = await pool.fetch(
        """
        SELECT a.*,
          (SELECT count(*) FROM assignments x WHERE x.agent_id = a.id AND x.state = 'running')
            AS running,
          (SELECT count(*) FROM assignments x WHERE x.state = 'queued'
             AND (x.agent_id = a.id OR a.id = ANY(coalesce(x.candidates, '{}')))) AS queued
        FROM agents a WHERE a.removed_at IS NULL ORDER BY a.position, a.id
        """)
    return [dict(r) for r in rows]


@dataclass
class Costs:
    by_task: list[dict[str, Any]]
    by_agent: list[dict[str, Any]]
    by_model: list[dict[str, Any]]
    by_day: list[dict[str, Any]]


async def costs(pool: asyncpg.Pool, *, days: int = 30) -> Costs:
    since = datetime.now(UTC) - timedelta(days=days)
    by_task = await pool.fetch(
        """
        SELECT split_part(u.task_id, '/', 1) AS task_id,
               sum(u.prompt_tokens) AS prompt, sum(u.completion_tokens) AS completion,
               sum(u.cost_usd) AS cost, max(t.title) AS title
        FROM usage u LEFT JOIN tasks t ON t.id = split_part(u.task_id, '/', 1)
        GROUP BY 1 ORDER BY cost DESC, 1 LIMIT 50
        """)
    by_agent = await pool.fetch(
        """
        SELECT coalesce(u.agent_id, s.assignee, '(none)') AS agent,
               sum(u.prompt_tokens) AS prompt, sum(u.completion_tokens) AS completion,
               sum(u.cost_usd) AS cost
        FROM usage u LEFT JOIN subtasks s ON s.id = u.subtask_id
        GROUP BY 1 ORDER BY cost DESC, 1
        """)
    by_model = await pool.fetch(
        """
        SELECT model, sum(prompt_tokens) AS prompt, sum(completion_tokens) AS completion,
               sum(cost_usd) AS cost, count(*) AS calls
        FROM usage GROUP BY 1 ORDER BY cost DESC, 1
        """)
    by_day_rows = await pool.fetch(
        """
        SELECT (created_at AT TIME ZONE 'UTC')::date AS day,
               sum(prompt_tokens + completion_tokens) AS tokens, sum(cost_usd) AS cost
        FROM usage WHERE created_at >= $1 GROUP BY 1 ORDER BY 1
        """, since)
    seen = {r["day"]: r for r in by_day_rows}
    today = datetime.now(UTC).date()
    by_day = []
    for i in range(days - 1, -1, -1):
        d: date = today - timedelta(days=i)
        r = seen.get(d)
        by_day.append({"day": d, "tokens": int(r["tokens"]) if r else 0,
                       "cost": float(r["cost"]) if r else 0.0})
    return Costs(by_task=[dict(r) for r in by_task], by_agent=[dict(r) for r in by_agent],
                 by_model=[dict(r) for r in by_model], by_day=by_day)
