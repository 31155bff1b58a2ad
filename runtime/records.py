"""What accumulates around a task in PostgreSQL: events, model outputs, usage, memories,
transcripts, blobs and escalations. Every write is idempotent (a deterministic key, ON CONFLICT)."""

from __future__ import annotations

import json
from typing import Any

import asyncpg

from models.io import DEFAULT_PROJECT

# Characters of a result kept as a memory.
MEMORY_CHARS = 4000


def memory_of(*, step_id: str, title: str, description: str, output: Any) -> tuple[str, str]:
    """Return the title and content a result is remembered by."""
    text = output if isinstance(output, str) else json.dumps(output, default=str)
    return f"{title or step_id}: {description}".strip(), text[:MEMORY_CHARS]


class NotFound(LookupError):
    """The task, subtask or blob does not exist in the store."""


class Records:
    """The append-mostly tables over one asyncpg pool; `runtime.store.Store` adds tasks."""

    def __init__(self, pool: asyncpg.Pool) -> None:
        self.pool = pool

    # -- events, model outputs, usage, blobs --------------------------------------------
    async def add_event(
        self, event_id: str, *, task_id: str, kind: str, subtask: str | None = None,
        data: dict[str, Any] | None = None,
    ) -> None:
        """Append an event once; the same id written again is ignored."""
        await self.pool.execute(
            """
            INSERT INTO events (id, task_id, subtask_id, kind, data) VALUES ($1, $2, $3, $4, $5)
            ON CONFLICT (id) DO NOTHING
            """,
            event_id, task_id, subtask, kind, data or {},
        )

    async def events(self, task_id: str) -> list[dict[str, Any]]:
        rows = await self.pool.fetch(
            "SELECT * FROM events WHERE task_id = $1 ORDER BY created_at, id", task_id
        )
        return [dict(r) for r in rows]

    async def record_llm_output(
        self, output_id: str, *, task_id: str, subtask: str | None, purpose: str, model: str,
        raw: str, valid: bool, errors: list[str],
    ) -> None:
        """Keep what a model said (valid or not) so a failed split can be inspected."""
        await self.pool.execute(
            """
            INSERT INTO llm_outputs (id, task_id, subtask_id, purpose, model, raw_output, valid,
                                     errors)
            VALUES ($1, $2, $3, $4, $5, $6, $7, $8) ON CONFLICT (id) DO NOTHING
            """,
            output_id, task_id, subtask, purpose, model, raw, valid, errors,
        )

    async def record_usage(
        self, usage_id: str, *, task_id: str, subtask: str | None, model: str,
        prompt_tokens: int, completion_tokens: int, agent_id: str | None = None,
        cost_usd: float = 0.0, purpose: str = "",
    ) -> None:
        """Record what one model response cost; the same id written again is ignored."""
        await self.pool.execute(
            """
            INSERT INTO usage (id, task_id, subtask_id, agent_id, model, prompt_tokens,
                               completion_tokens, cost_usd, purpose)
            VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9) ON CONFLICT (id) DO NOTHING
            """,
            usage_id, task_id, subtask, agent_id, model, prompt_tokens, completion_tokens,
            cost_usd, purpose,
        )

    async def tokens_used(self, task_id: str, subtask: str | None = None) -> int:
        """Return the tokens a task and its nested tasks (or one subtask) have spent."""
        value = await self.pool.fetchval(
            """
            SELECT coalesce(sum(prompt_tokens + completion_tokens), 0) FROM usage
            WHERE (task_id = $1 OR task_id LIKE $1 || '/%')
              AND ($2::text IS NULL OR subtask_id = $2)
            """,
            task_id, subtask,
        )
        return int(value)

    async def usage_summary(self, task_id: str) -> dict[str, Any]:
        row = await self.pool.fetchrow(
            """
            SELECT coalesce(sum(prompt_tokens), 0) AS prompt_tokens,
                   coalesce(sum(completion_tokens), 0) AS completion_tokens,
                   coalesce(sum(cost_usd), 0) AS cost_usd
            FROM usage WHERE task_id = $1 OR task_id LIKE $1 || '/%'
            """,
            task_id,
        )
        return dict(row) if row else {}

    # -- memory and transcripts ----------------------------------------------------------
    async def remember(
        self, memory_id: str, *, task_id: str, subtask: str | None, title: str, content: str,
        agent_id: str | None = None,
    ) -> None:
        """Keep an approved result as a memory of its agent, in its task's project.

        Written again (a retry, or a rework approved after a rejection), the latest wins.
        """
        await self.pool.execute(
            """
            INSERT INTO memories (id, task_id, subtask_id, agent_id, project_id, title, content)
            SELECT $1, $2, $3, $4,
                   coalesce((SELECT project_id FROM tasks WHERE id = $2), $7), $5, $6
            ON CONFLICT (id) DO UPDATE SET agent_id = EXCLUDED.agent_id,
                project_id = EXCLUDED.project_id, title = EXCLUDED.title,
                content = EXCLUDED.content
            """,
            memory_id, task_id, subtask, agent_id, title, content, DEFAULT_PROJECT,
        )

    async def recall(
        self, query: str, *, project_id: str, agent_id: str | None = None, limit: int = 5,
        exclude_subtask: str | None = None,
    ) -> list[dict[str, Any]]:
        """Return the memories of `project_id` most relevant to `query` (full-text search,
        any word), the agent's own first. Never another project's."""
        rows = await self.pool.fetch(
            """
            WITH q AS (
                SELECT to_tsquery('english', string_agg(quote_literal(lexeme), ' | ')) AS q
                FROM unnest(tsvector_to_array(to_tsvector('english', $1))) AS lexeme
            )
            SELECT m.id, m.task_id, m.subtask_id, m.agent_id, m.project_id, m.title,
                   m.content, ts_rank(m.tsv, q.q) AS rank
            FROM memories m, q
            WHERE q.q IS NOT NULL AND m.tsv @@ q.q AND m.project_id = $4
              AND ($3::text IS NULL OR m.subtask_id IS DISTINCT FROM $3)
            ORDER BY ($5::text IS NOT NULL AND m.agent_id IS NOT DISTINCT FROM $5) DESC,
                     rank DESC, m.created_at DESC
            LIMIT $2
            """,
            query, limit, exclude_subtask, project_id, agent_id,
        )
        return [dict(r) for r in rows]

    async def put_messages(self, sub_id: str, start: int, messages: list[dict[str, Any]]) -> None:
        """Write transcript messages from position `start` on (a retry overwrites them)."""
        await self.pool.executemany(
            """
            INSERT INTO transcripts (subtask_id, seq, message) VALUES ($1, $2, $3)
            ON CONFLICT (subtask_id, seq) DO UPDATE SET message = EXCLUDED.message
            """,
            [(sub_id, start + i, m) for i, m in enumerate(messages)],
        )

    async def get_messages(self, sub_id: str, *, upto: int | None = None) -> list[dict[str, Any]]:
        rows = await self.pool.fetch(
            """
            SELECT message FROM transcripts WHERE subtask_id = $1
              AND ($2::int IS NULL OR seq < $2) ORDER BY seq
            """,
            sub_id, upto,
        )
        return [r["message"] for r in rows]

    async def save_blob(
        self, blob_id: str, *, task_id: str, subtask: str | None, name: str, mime: str,
        data: bytes,
    ) -> None:
        await self.pool.execute(
            """
            INSERT INTO blobs (id, task_id, subtask_id, name, mime, size, data)
            VALUES ($1, $2, $3, $4, $5, $6, $7) ON CONFLICT (id) DO NOTHING
            """,
            blob_id, task_id, subtask, name, mime, len(data), data,
        )

    async def get_blob(self, blob_id: str) -> bytes:
        data = await self.pool.fetchval("SELECT data FROM blobs WHERE id = $1", blob_id)
        if data is None:
            raise NotFound(f"no blob {blob_id!r}")
        return bytes(data)

    async def open_escalation(
        self, esc_id: str, *, task_id: str, subtask: str, reason: str, error: str,
        holder: str, level: int, chain: list[str],
    ) -> bool:
        """Record an open escalation, or move it up to a new holder (idempotent); return
        True only when this call opened it (not on a move up, a repeat, or a closed one)."""
        opened: bool | None = await self.pool.fetchval(
            """
            INSERT INTO escalations (id, task_id, subtask_id, reason, error, holder, level, chain)
            VALUES ($1, $2, $3, $4, $5, $6, $7, $8)
            ON CONFLICT (id) DO UPDATE SET holder = EXCLUDED.holder, level = EXCLUDED.level
            WHERE escalations.status = 'open'
            RETURNING xmax = 0
            """,
            esc_id, task_id, subtask, reason, error, holder, level, chain,
        )
        return bool(opened)

    async def resolve_escalation(
        self, esc_id: str, decision: dict[str, Any] | None, *, status: str = "resolved"
    ) -> str | None:
        """Close an open escalation: resolved with a decision, or cancelled; return its
        reason when this call closed it, None when it was closed already (or is unknown)."""
        reason: str | None = await self.pool.fetchval(
            """
            UPDATE escalations SET status = $3, decision = coalesce($2, decision),
                resolved_at = coalesce(resolved_at, now())
            WHERE id = $1 AND status = 'open' RETURNING reason
            """,
            esc_id, decision, status,
        )
        return reason

    async def escalations(self, *, only_open: bool = True) -> list[dict[str, Any]]:
        rows = await self.pool.fetch(
            """
            SELECT * FROM escalations WHERE (NOT $1 OR status = 'open')
            ORDER BY opened_at, id
            """,
            only_open,
        )
        return [dict(r) for r in rows]
