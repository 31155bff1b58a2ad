"""The org chart and the assignment of subtasks to agents, in PostgreSQL.

Capacity holds under concurrency: every operation that can start work on an agent
(`assign`, `promote_queued`, `rebalance`) first locks the rows of the agents it may
choose (`SELECT ... FOR UPDATE`, always in id order so two callers never deadlock), then
counts that agent's running assignments, then writes, all in one transaction. Counting
after the lock sees every assignment committed by an earlier holder, so no agent ever holds
more running subtasks than its capacity. Freeing a slot (`finish`) needs no lock.
`started_at` and `finished_at` are read from the clock at the write (clock_timestamp, not
the transaction start), so the intervals they record never overlap more than capacity.

Every write is idempotent: an assignment is keyed by its subtask id, `assign` again
returns what is recorded, `finish` again changes nothing.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

import asyncpg
from asyncpg.pool import PoolConnectionProxy
from pydantic import BaseModel, Field

from models.org import Agent, Candidate, Department, OrgChart
from models.scheduling import (
    Assignment,
    AssignmentState,
    Move,
    QueueItem,
    aging_bonus,
    ordered,
    pick_assignee,
    plan_rebalance,
)

_SAVE_LOCK_KEY = 0x6265656F7267  # "beeorg": one save_org at a time


class OrgChange(BaseModel):
    """What `save_org` changed: agent ids added, changed, and removed (made inactive)."""

    added: list[str] = Field(default_factory=list)
    changed: list[str] = Field(default_factory=list)
    removed: list[str] = Field(default_factory=list)


def _assignment(row: asyncpg.Record) -> Assignment:
    return Assignment(
        subtask_id=row["subtask_id"],
        task_id=row["task_id"],
        agent_id=row["agent_id"],
        state=AssignmentState(row["state"]),
        required_skills=list(row["required_skills"]),
        candidates=None if row["candidates"] is None else list(row["candidates"]),
        score=row["score"],
        reason=row["reason"],
        created_at=row["created_at"],
        started_at=row["started_at"],
        finished_at=row["finished_at"],
    )


def _candidate(row: asyncpg.Record) -> Candidate:
    return Candidate(
        id=row["id"],
        skills=frozenset(row["skills"]) | frozenset(row["department_skills"]),
        capacity=row["capacity"],
        active=row["active"],
    )


# Active agents that are part of the current chart; `$1` NULL means the default
# candidates: those with no active reports (workers), as `OrgChart.workers` says.
_LOCK_CANDIDATES = """
    SELECT a.id, a.skills, a.department_skills, a.capacity, a.active FROM agents a
    WHERE a.active AND a.removed_at IS NULL
      AND CASE WHEN $1::text[] IS NULL
               THEN NOT EXISTS (SELECT 1 FROM agents r WHERE r.reports_to = a.id
                                AND r.active AND r.removed_at IS NULL)
               ELSE a.id = ANY($1::text[]) END
    ORDER BY a.id FOR UPDATE OF a
"""


class OrgStore:
    """The org chart and who works on which subtask, over one asyncpg pool."""

    def __init__(self, pool: asyncpg.Pool) -> None:
        self.pool = pool

    # -- the chart ----------------------------------------------------------------------
    async def save_org(self, chart: OrgChart) -> OrgChange:
        """Make the stored chart equal `chart`; agents no longer in it become inactive."""
        change = OrgChange()
        async with self.pool.acquire() as conn, conn.transaction():
            await conn.execute("SELECT pg_advisory_xact_lock($1)", _SAVE_LOCK_KEY)
            # Lock in id order, as assign does, so a save never deadlocks with it.
            existing = {
                r["id"] for r in await conn.fetch("SELECT id FROM agents ORDER BY id FOR UPDATE")
            }
            for position, a in enumerate(chart.agents):
                dept = chart.department(a.department).skills if a.department else []
                row = await conn.fetchrow(
                    """
                    INSERT INTO agents AS t (id, name, role, reports_to, department, skills,
                        department_skills, model, tools, capacity, review_policy, active,
                        position, removed_at)
                    VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, NULL)
                    ON CONFLICT (id) DO UPDATE SET name = EXCLUDED.name, role = EXCLUDED.role,
                        reports_to = EXCLUDED.reports_to, department = EXCLUDED.department,
                        skills = EXCLUDED.skills,
                        department_skills = EXCLUDED.department_skills,
                        model = EXCLUDED.model, tools = EXCLUDED.tools,
                        capacity = EXCLUDED.capacity, review_policy = EXCLUDED.review_policy,
                        active = EXCLUDED.active, position = EXCLUDED.position,
                        removed_at = NULL, updated_at = now()
                    WHERE (t.name, t.role, t.reports_to, t.department, t.skills,
                           t.department_skills, t.model, t.tools, t.capacity,
                           t.review_policy, t.active, t.position, t.removed_at)
                        IS DISTINCT FROM
                          (EXCLUDED.name, EXCLUDED.role, EXCLUDED.reports_to,
                           EXCLUDED.department, EXCLUDED.skills, EXCLUDED.department_skills,
                           EXCLUDED.model, EXCLUDED.tools, EXCLUDED.capacity,
                           EXCLUDED.review_policy, EXCLUDED.active, EXCLUDED.position,
                           EXCLUDED.removed_at)
                    RETURNING id
                    """,
                    a.id, a.name, a.role, a.reports_to, a.department, a.skills, dept,
                    a.model, a.tools, a.capacity, a.review_policy.value, a.active, position,
                )
                if row is not None:
                    (change.changed if a.id in existing else change.added).append(a.id)
            removed = await conn.fetch(
                """
                UPDATE agents SET active = false, removed_at = now(), updated_at = now()
                WHERE removed_at IS NULL AND NOT (id = ANY($1::text[])) RETURNING id
                """,
                [a.id for a in chart.agents],
            )
            change.removed = sorted(r["id"] for r in removed)
        return change

    async def active_agents(self) -> int:
        """How many agents the stored chart has (0: no chart is loaded)."""
        return int(await self.pool.fetchval(
            "SELECT count(*) FROM agents WHERE removed_at IS NULL AND active"))

    async def load_org(self) -> OrgChart:
        """Return the chart last saved (agents removed from it are left out).

        Departments come back from the agents in them: one with nobody in it is not stored.
        """
        rows = await self.pool.fetch(
            "SELECT * FROM agents WHERE removed_at IS NULL ORDER BY position, id"
        )
        departments: dict[str, Department] = {}
        agents: list[Agent] = []
        for r in rows:
            if r["department"] is not None and r["department"] not in departments:
                departments[r["department"]] = Department(
                    name=r["department"], skills=list(r["department_skills"])
                )
            agents.append(Agent(
                id=r["id"], name=r["name"], role=r["role"], reports_to=r["reports_to"],
                department=r["department"], skills=list(r["skills"]), model=r["model"],
                tools=None if r["tools"] is None else list(r["tools"]),
                capacity=r["capacity"], review_policy=r["review_policy"], active=r["active"],
            ))
        return OrgChart(departments=list(departments.values()), agents=agents)

    async def agents_named(self, ids: list[str]) -> dict[str, dict[str, Any]]:
        """Return the chart's agents among `ids` (id, name, role, skills), by id."""
        rows = await self.pool.fetch(
            """
            SELECT id, name, role, skills, department, department_skills FROM agents
            WHERE id = ANY($1::text[]) AND removed_at IS NULL
            """, ids)
        return {r["id"]: dict(r) for r in rows}

    # -- assignments --------------------------------------------------------------------
    async def assign(
        self,
        subtask_id: str,
        task_id: str,
        required_skills: Sequence[str],
        candidates: Sequence[str] | None,
        score: float,
    ) -> Assignment | None:
        """Give the subtask to the best agent with room and return the running assignment.

        None means no suitable agent has room: the subtask is recorded 'queued' (with the
        agent it waits for and why) and `promote_queued` starts it later. `candidates`
        None means every active worker. Called again for the same subtask, returns what
        is recorded (None while it is still queued).
        """
        skills = list(dict.fromkeys(s.strip().lower() for s in required_skills))
        allowed = None if candidates is None else list(candidates)
        async with self.pool.acquire() as conn, conn.transaction():
            rows = await conn.fetch(_LOCK_CANDIDATES, allowed)
            # Read after the lock: a concurrent assign of the same subtask has committed.
            existing = await conn.fetchrow(
                "SELECT * FROM assignments WHERE subtask_id = $1", subtask_id
            )
            if existing is not None:
                return _running_or_none(_assignment(existing))
            pool = [_candidate(r) for r in rows]
            choice = pick_assignee(skills, pool, await _loads(conn, [c.id for c in pool]))
            if choice.agent_id is None and candidates is not None and not pool:
                reason = f"no active agent among the candidates [{', '.join(candidates)}]"
            else:
                reason = choice.reason
            row = await conn.fetchrow(
                """
                INSERT INTO assignments (subtask_id, task_id, agent_id, state,
                    required_skills, candidates, score, reason, started_at)
                VALUES ($1, $2, $3, $4, $5, $6, $7, $8,
                        CASE WHEN $4 = 'running' THEN clock_timestamp() END)
                ON CONFLICT (subtask_id) DO NOTHING RETURNING *
                """,
                subtask_id, task_id, choice.agent_id or choice.queue_for,
                "running" if choice.agent_id else "queued", skills, allowed, score, reason,
            )
            if row is None:  # raced with an assign of the same subtask on other agents
                row = await conn.fetchrow(
                    "SELECT * FROM assignments WHERE subtask_id = $1", subtask_id
                )
                if row is None:  # cannot happen: ON CONFLICT waited for the other commit
                    raise RuntimeError(f"assignment of {subtask_id!r} vanished")
            return _running_or_none(_assignment(row))

    async def get(self, subtask_id: str) -> Assignment | None:
        """Return the subtask's assignment, None when it was never assigned."""
        row = await self.pool.fetchrow(
            "SELECT * FROM assignments WHERE subtask_id = $1", subtask_id
        )
        return None if row is None else _assignment(row)

    async def finish(self, subtask_id: str) -> bool:
        """Mark the assignment done, freeing its slot; False when it already was (or none)."""
        row = await self.pool.fetchrow(
            """
            UPDATE assignments SET state = 'done', finished_at = clock_timestamp()
            WHERE subtask_id = $1 AND state <> 'done' RETURNING subtask_id
            """,
            subtask_id,
        )
        return row is not None

    async def running(self, agent_ids: list[str] | None = None) -> list[Assignment]:
        """Return the assignments holding a slot now (of `agent_ids` only, when given)."""
        rows = await self.pool.fetch(
            """
            SELECT * FROM assignments WHERE state = 'running'
              AND ($1::text[] IS NULL OR agent_id = ANY($1::text[]))
            ORDER BY started_at
            """,
            agent_ids,
        )
        return [_assignment(r) for r in rows]

    async def loads(self) -> dict[str, int]:
        """Return the number of running subtasks of every active agent (and any busy one)."""
        rows = await self.pool.fetch(
            """
            SELECT a.id, count(s.subtask_id)::int AS n FROM agents a
            LEFT JOIN assignments s ON s.agent_id = a.id AND s.state = 'running'
            WHERE (a.active AND a.removed_at IS NULL) OR s.subtask_id IS NOT NULL
            GROUP BY a.id ORDER BY a.id
            """
        )
        return {r["id"]: r["n"] for r in rows}

    async def promote_queued(self, *, task_id: str | None = None) -> list[Assignment]:
        """Start queued subtasks on agents with room, most urgent first; return those started.

        `task_id` limits this to one task's subtasks.

        Urgency is the stored score plus aging for the time spent queued. Each queued
        subtask is placed again by `pick_assignee` over the current loads, so it goes to
        whichever of its best-matching agents freed a slot, not only the one it waited for.
        """
        async with self.pool.acquire() as conn, conn.transaction():
            rows, queued = await _lock_agents_and_queue(conn, task_id, placed_only=False)
            if not queued:
                return []
            now: datetime = queued[0]["db_now"]
            everyone = {r["id"]: _candidate(r) for r in rows}
            managers = {r["reports_to"] for r in rows}
            workers = [c for c in everyone.values() if c.id not in managers]
            loads = await _loads(conn, list(everyone))
            items = ordered(_queue_item(r, now) for r in queued)
            by_id = {r["subtask_id"]: r for r in queued}
            started: list[Assignment] = []
            for item in items:
                if all(loads.get(c.id, 0) >= c.capacity for c in everyone.values()):
                    break
                pool = (workers if item.candidates is None
                        else [everyone[i] for i in item.candidates if i in everyone])
                choice = pick_assignee(item.required_skills, pool, loads)
                if choice.agent_id is None:
                    continue
                row = await conn.fetchrow(
                    """
                    UPDATE assignments SET state = 'running', agent_id = $2,
                        started_at = clock_timestamp(),
                        reason = $3
                    WHERE subtask_id = $1 AND state = 'queued' RETURNING *
                    """,
                    item.id, choice.agent_id,
                    f"{choice.reason} (promoted after "
                    f"{(now - by_id[item.id]['created_at']).total_seconds():.0f} s queued)",
                )
                if row is not None:
                    loads[choice.agent_id] = loads.get(choice.agent_id, 0) + 1
                    started.append(_assignment(row))
            return started

    async def rebalance(self, *, task_id: str | None = None) -> list[Move]:
        """Move queued subtasks from overloaded agents to idle ones with the skills.

        Loads count every worker's running and queued work (managers, who take no work by
        default, are not counted); `task_id` limits the subtasks that may move to that task's.
        """
        async with self.pool.acquire() as conn, conn.transaction():
            agents, queued = await _lock_agents_and_queue(conn, task_id, placed_only=True)
            if not queued:
                return []
            now: datetime = queued[0]["db_now"]
            held = await conn.fetch(
                "SELECT agent_id, count(*)::int AS n FROM assignments"
                " WHERE state <> 'done' AND agent_id IS NOT NULL GROUP BY agent_id"
            )
            managers = {r["reports_to"] for r in agents}
            moves = plan_rebalance(
                [_queue_item(r, now) for r in queued],
                [_candidate(r) for r in agents if r["id"] not in managers],
                {r["agent_id"]: r["n"] for r in held},
            )
            for m in moves:
                await conn.execute(
                    "UPDATE assignments SET agent_id = $3, reason = $4"
                    " WHERE subtask_id = $1 AND agent_id = $2 AND state = 'queued'",
                    m.item_id, m.from_agent, m.to_agent, m.reason,
                )
            return moves


async def _lock_agents_and_queue(
    conn: PoolConnectionProxy, task_id: str | None, *, placed_only: bool
) -> tuple[list[asyncpg.Record], list[asyncpg.Record]]:
    """Lock every active agent's row (in id order, as `assign` does) and read the queue.

    `placed_only` keeps the queued rows that name the agent they wait for.
    """
    agents = await conn.fetch(
        "SELECT * FROM agents WHERE active AND removed_at IS NULL ORDER BY id FOR UPDATE"
    )
    queued = await conn.fetch(
        "SELECT *, now() AS db_now FROM assignments WHERE state = 'queued'"
        " AND (NOT $2 OR agent_id IS NOT NULL) AND ($1::text IS NULL OR task_id = $1)",
        task_id, placed_only,
    )
    return list(agents), list(queued)


def _running_or_none(a: Assignment) -> Assignment | None:
    return None if a.state is AssignmentState.QUEUED else a


def _queue_item(row: asyncpg.Record, now: datetime) -> QueueItem:
    waited = (now - row["created_at"]).total_seconds()
    candidates: Any = row["candidates"]
    return QueueItem(
        id=row["subtask_id"],
        score=row["score"] + aging_bonus(waited),
        created_at=row["created_at"],
        agent_id=row["agent_id"],
        required_skills=tuple(row["required_skills"]),
        candidates=None if candidates is None else tuple(candidates),
    )


async def _loads(conn: PoolConnectionProxy, agent_ids: list[str]) -> dict[str, int]:
    rows = await conn.fetch(
        "SELECT agent_id, count(*)::int AS n FROM assignments"
        " WHERE state = 'running' AND agent_id = ANY($1::text[]) GROUP BY agent_id",
        agent_ids,
    )
    return {r["agent_id"]: r["n"] for r in rows}
