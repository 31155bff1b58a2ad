"""The PostgreSQL store of tasks, subtasks, results, events, model outputs and usage.

Every write is idempotent: inserts carry natural or deterministic keys and use
ON CONFLICT, and status changes pass through `models.task.allowed_from`, so a retried or
replayed activity never duplicates a row or moves a status backwards.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any, NoReturn

from models.io import DEFAULT_PROJECT, TaskInput, TaskResult
from models.plan import Plan
from models.task import InvalidTransition, Result, Status, allowed_from, subtask_id
from runtime.records import NotFound, Records, memory_of
from runtime.storable import StoreRefused

__all__ = ["NotFound", "Records", "Store", "StoreRefused", "TaskIdReused"]


class TaskIdReused(ValueError):
    """A new workflow run reuses the id of a task the store already holds."""


@dataclass(frozen=True)
class Placement:
    """Where a task belongs: resolved once, when its row is written."""

    project_id: str
    related_files: list[str]
    related_agents: list[str]
    parent_task: str | None


class Store(Records):
    """Typed access to the BeesTown tables over one asyncpg pool."""

    # -- tasks -----------------------------------------------------------------------
    async def insert_task(
        self, task_id: str, task: TaskInput, *, status: Status, created_at: datetime,
        run_id: str = "",
    ) -> bool:
        """Create the task row; return False when it already existed (a retry).

        Raises TaskIdReused when the row belongs to another workflow run: its subtasks'
        results would otherwise be taken for this run's.
        """
        place = await self._place(task)
        async with self.pool.acquire() as conn, conn.transaction():
            await conn.execute(
                "INSERT INTO projects (id, name) VALUES ($1, $1) ON CONFLICT (id) DO NOTHING",
                place.project_id)
            row = await conn.fetchrow(
                """
                INSERT INTO tasks (id, title, prompt, status, priority, created_at, deadline, tags,
                                   metadata, plan, run_id, creator, assignee, reviewer,
                                   parent_subtask, project_id, related_files, related_agents,
                                   parent_task)
                VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16,
                        $17, $18, $19)
                ON CONFLICT (id) DO NOTHING RETURNING id
                """,
                task_id,
                task.title or (task.plan.title if task.plan else "") or task.prompt[:80],
                task.prompt,
                status.value,
                task.priority.value,
                created_at,
                task.deadline,
                task.tags,
                task.metadata,
                task.plan.model_dump(mode="json") if task.plan else None,
                run_id,
                task.creator,
                task.assignee,
                task.reviewer,
                task.parent_subtask,
                place.project_id,
                place.related_files,
                place.related_agents,
                place.parent_task,
            )
        if row is not None:
            return True
        owner = await self.pool.fetchval("SELECT run_id FROM tasks WHERE id = $1", task_id)
        if run_id and owner and owner != run_id:
            raise TaskIdReused(
                f"task id {task_id!r} was already used by run {owner}; start with a new id"
            )
        return False

    async def _place(self, task: TaskInput) -> Placement:
        """Return where a new task belongs: its project, files, agents and parent task.

        A nested task (one with a parent subtask) serves that subtask's task; a task with
        a parent inherits the parent's project, and its related files and agents unless it
        names its own. A named parent task must exist (NotFound).
        """
        parent_task = task.parent_task
        if parent_task is None and task.parent_subtask:
            parent_task = await self.pool.fetchval(
                "SELECT task_id FROM subtasks WHERE id = $1", task.parent_subtask)
        parent = None
        if parent_task is not None:
            parent = await self.pool.fetchrow(
                "SELECT project_id, related_files, related_agents FROM tasks WHERE id = $1",
                parent_task)
            if parent is None and task.parent_task is not None:
                raise NotFound(f"parent task {parent_task!r} does not exist")
        return Placement(
            project_id=task.project_id or (parent["project_id"] if parent else DEFAULT_PROJECT),
            related_files=task.related_files or (list(parent["related_files"]) if parent
                                                 else []),
            related_agents=task.related_agents or (list(parent["related_agents"]) if parent
                                                   else []),
            parent_task=parent_task,
        )

    async def set_task_status(
        self,
        task_id: str,
        status: Status,
        *,
        error: str | None = None,
        at: datetime | None = None,
    ) -> None:
        """Move a task to `status`, refusing transitions that make no sense."""
        row = await self.pool.fetchrow(
            """
            UPDATE tasks SET status = $2, error = coalesce($3, error), updated_at = now(),
                started_at = CASE WHEN $2 = 'RUNNING' THEN coalesce(started_at, $4)
                                  ELSE started_at END,
                completed_at = CASE WHEN $2 = ANY($6::text[]) THEN coalesce(completed_at, $4)
                                    ELSE completed_at END
            WHERE id = $1 AND status = ANY($5::text[]) RETURNING id
            """,
            task_id,
            status.value,
            error,
            at,
            [s.value for s in allowed_from(status)],
            ["COMPLETED", "FAILED", "CANCELLED"],
        )
        if row is None:
            await self._refuse("tasks", task_id, status)

    async def save_plan(self, task_id: str, plan: Plan, *, started_at: datetime) -> None:
        """Store the plan and one PENDING row per step; the task becomes RUNNING."""
        async with self.pool.acquire() as conn, conn.transaction():
            await conn.execute(
                "UPDATE tasks SET plan = $2, updated_at = now() WHERE id = $1",
                task_id,
                plan.model_dump(mode="json"),
            )
            await conn.executemany(
                """
                INSERT INTO subtasks (id, task_id, step_id, title, description, type,
                    dependencies, status, priority, deadline, estimated_duration_s, tags,
                    metadata, spec)
                VALUES ($1, $2, $3, $4, $5, $6, $7, 'PENDING', $8, $9, $10, $11, $12, $13)
                ON CONFLICT (id) DO NOTHING
                """,
                [
                    (
                        subtask_id(task_id, s.id),
                        task_id,
                        s.id,
                        s.title,
                        s.description,
                        s.type.value,
                        s.deps,
                        s.priority.value,
                        s.deadline,
                        s.estimated_duration_s,
                        s.tags,
                        s.metadata,
                        {"code": s.code, "tool": s.tool, "args": s.args},
                    )
                    for s in plan.steps
                ],
            )
        await self.set_task_status(task_id, Status.RUNNING, at=started_at)

    async def set_task_people(
        self, task_id: str, *, assignee: str | None, reviewer: str | None
    ) -> None:
        """Record who a task was given to (and who reviews it) once that is resolved."""
        await self.pool.execute(
            """
            UPDATE tasks SET assignee = coalesce($2, assignee),
                reviewer = coalesce($3, reviewer), updated_at = now() WHERE id = $1
            """,
            task_id, assignee, reviewer,
        )

    async def finish_task(self, result: TaskResult, *, completed_at: datetime) -> None:
        """Record a task's final status and result, and the final status of every step."""
        async with self.pool.acquire() as conn, conn.transaction():
            for sub in result.subtasks:
                # Steps the workflow never ran (blocked, cancelled) get their status here;
                # rows already final keep theirs.
                await conn.execute(
                    """
                    UPDATE subtasks SET status = $2, error = coalesce(error, $3),
                        completed_at = coalesce(completed_at, $4), updated_at = now()
                    WHERE id = $1 AND status <> $2 AND status = ANY($5::text[])
                    """,
                    sub.id,
                    sub.status.value,
                    sub.error,
                    completed_at,
                    [s.value for s in allowed_from(sub.status)],
                )
            await conn.execute(
                "UPDATE tasks SET result = $2, updated_at = now() WHERE id = $1",
                result.task_id,
                result.model_dump(mode="json"),
            )
        await self.set_task_status(
            result.task_id, result.status, error=result.error, at=completed_at
        )

    async def get_task(self, task_id: str) -> dict[str, Any]:
        row = await self.pool.fetchrow("SELECT * FROM tasks WHERE id = $1", task_id)
        if row is None:
            raise NotFound(f"no task {task_id!r}")
        return dict(row)

    async def get_subtask(self, sub_id: str) -> dict[str, Any]:
        row = await self.pool.fetchrow("SELECT * FROM subtasks WHERE id = $1", sub_id)
        if row is None:
            raise NotFound(f"no subtask {sub_id!r}")
        return dict(row)

    async def list_subtasks(self, task_id: str) -> list[dict[str, Any]]:
        rows = await self.pool.fetch(
            "SELECT * FROM subtasks WHERE task_id = $1 ORDER BY created_at, id", task_id
        )
        return [dict(r) for r in rows]

    # -- subtasks --------------------------------------------------------------------
    async def start_subtask(self, sub_id: str, *, attempt: int, at: datetime) -> None:
        """Mark a subtask RUNNING (again, on a retry) and count the attempt."""
        row = await self.pool.fetchrow(
            """
            UPDATE subtasks SET status = 'RUNNING', updated_at = now(),
                started_at = coalesce(started_at, $2), attempts = greatest(attempts, $3)
            WHERE id = $1 AND status = ANY($4::text[]) RETURNING id
            """,
            sub_id,
            at,
            attempt,
            [s.value for s in allowed_from(Status.RUNNING)],
        )
        if row is None:
            await self._refuse("subtasks", sub_id, Status.RUNNING)

    async def finish_subtask(
        self, sub_id: str, *, status: Status, result: Result | None, error: str | None,
        at: datetime,
    ) -> str:
        """Record a subtask's result and final status (idempotent); return its step type."""
        row = await self.pool.fetchrow(
            """
            UPDATE subtasks SET status = $2, result = coalesce($3, result), error = $4,
                completed_at = coalesce(completed_at, $5), updated_at = now(),
                actual_duration_s = coalesce(actual_duration_s,
                    extract(epoch FROM ($5 - coalesce(started_at, $5))))
            WHERE id = $1 AND status = ANY($6::text[]) RETURNING type
            """,
            sub_id,
            status.value,
            result.model_dump(mode="json") if result else None,
            error,
            at,
            [s.value for s in allowed_from(status)],
        )
        if row is None:
            await self._refuse("subtasks", sub_id, status)
        return str(row["type"])

    async def completed_result(self, sub_id: str) -> Result | None:
        """Return the stored result if the subtask already COMPLETED, else None."""
        row = await self.pool.fetchrow(
            "SELECT status, result FROM subtasks WHERE id = $1", sub_id
        )
        if row is None or row["status"] != Status.COMPLETED.value or row["result"] is None:
            return None
        return Result.model_validate(row["result"])

    async def remember_completed(self, sub_id: str) -> bool:
        """Keep a COMPLETED subtask's result as a memory of its assignee, in its task's
        project; return False (keeping nothing) for any other subtask.

        Called once the result is approved, so a rejected draft is never remembered.
        """
        row = await self.pool.fetchrow(
            """
            SELECT task_id, step_id, title, description, assignee, status, result
            FROM subtasks WHERE id = $1
            """, sub_id)
        if row is None or row["status"] != Status.COMPLETED.value or not row["result"]:
            return False
        result = Result.model_validate(row["result"])
        if not result.success:
            return False
        title, content = memory_of(step_id=row["step_id"], title=row["title"],
                                   description=row["description"], output=result.output)
        await self.remember(sub_id, task_id=row["task_id"], subtask=sub_id, title=title,
                            content=content, agent_id=row["assignee"])
        return True

    async def note_subtask(
        self, sub_id: str, *, status: Status | None = None, waiting_for: str | None = None,
        assignee: str | None = None, reviewer: str | None = None,
    ) -> None:
        """Move a subtask to `status` (checked) and record who it waits for / works on it.

        `waiting_for` is always written: None clears it.
        """
        allowed = [s.value for s in allowed_from(status)] if status else None
        row = await self.pool.fetchrow(
            """
            UPDATE subtasks SET status = coalesce($2, status), waiting_for = $3,
                assignee = coalesce($4, assignee), reviewer = coalesce($5, reviewer),
                updated_at = now()
            WHERE id = $1 AND ($6::text[] IS NULL OR status = ANY($6::text[])) RETURNING id
            """,
            sub_id, status.value if status else None, waiting_for, assignee, reviewer, allowed,
        )
        if row is None:
            await self._refuse("subtasks", sub_id, status or Status.PENDING)

    async def list_tasks(self, *, limit: int = 50) -> list[dict[str, Any]]:
        rows = await self.pool.fetch(
            """
            SELECT t.id, t.title, t.status, t.priority, t.created_at, t.assignee,
                   t.parent_subtask,
                   (SELECT count(*) FROM subtasks s WHERE s.task_id = t.id) AS subtasks,
                   (SELECT coalesce(sum(prompt_tokens + completion_tokens), 0) FROM usage u
                    WHERE u.task_id = t.id) AS tokens
            FROM tasks t ORDER BY t.created_at DESC LIMIT $1
            """,
            limit,
        )
        return [dict(r) for r in rows]

    async def get_output(self, sub_id: str) -> Any:
        """Return the full output a finished subtask produced."""
        row = await self.pool.fetchrow("SELECT result FROM subtasks WHERE id = $1", sub_id)
        if row is None:
            raise NotFound(f"no subtask {sub_id!r}")
        result = row["result"]
        return None if result is None else result.get("output")

    async def _refuse(self, table: str, key: str, status: Status) -> NoReturn:
        current = await self.pool.fetchval(f"SELECT status FROM {table} WHERE id = $1", key)
        if current is None:
            raise NotFound(f"no row {key!r} in {table}")
        raise InvalidTransition(
            f"{table[:-1]} {key}: {current} -> {status.value} is not a legal transition"
        )
