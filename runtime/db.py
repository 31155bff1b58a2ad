"""PostgreSQL: where the pool comes from (a server, or an embedded one) and the schema."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import asyncpg
from asyncpg.exceptions._base import DataError as ArgumentRefused

from runtime.storable import StoreRefused, storable, storable_json

log = logging.getLogger(__name__)

# The columns a task and a subtask share: where each is in its life.
_LIFECYCLE = """\
        status text NOT NULL,
        priority text NOT NULL DEFAULT 'medium',
        created_at timestamptz NOT NULL DEFAULT now(),
        started_at timestamptz,
        completed_at timestamptz,
        deadline timestamptz,
        estimated_duration_s double precision,
        actual_duration_s double precision,
        tags text[] NOT NULL DEFAULT '{}',
        metadata jsonb NOT NULL DEFAULT '{}',
"""

# The first columns of a row that belongs to a task (and maybe to one of its subtasks).
_OWNED = """\
        id text PRIMARY KEY,
        task_id text NOT NULL,
        subtask_id text,
"""

# Each migration runs once, in order, in one transaction, under an advisory lock so that
# several workers starting together do not race. Append; never edit a released entry
# (nor _LIFECYCLE and _OWNED, which they use).
MIGRATIONS: list[str] = [
    """
    CREATE TABLE tasks (
        id text PRIMARY KEY,
        title text NOT NULL DEFAULT '',
        prompt text NOT NULL DEFAULT '',
        description text NOT NULL DEFAULT '',
        type text,
"""
    + _LIFECYCLE
    + """        plan jsonb,
        result jsonb,
        error text,
        updated_at timestamptz NOT NULL DEFAULT now()
    );
    CREATE TABLE subtasks (
        id text PRIMARY KEY,
        task_id text NOT NULL REFERENCES tasks(id) ON DELETE CASCADE,
        step_id text NOT NULL,
        title text NOT NULL DEFAULT '',
        description text NOT NULL DEFAULT '',
        type text NOT NULL,
        dependencies text[] NOT NULL DEFAULT '{}',
"""
    + _LIFECYCLE
    + """        spec jsonb NOT NULL DEFAULT '{}',
        attempts integer NOT NULL DEFAULT 0,
        result jsonb,
        error text,
        updated_at timestamptz NOT NULL DEFAULT now(),
        UNIQUE (task_id, step_id)
    );
    CREATE INDEX subtasks_task_idx ON subtasks (task_id);
    CREATE TABLE events (
"""
    + _OWNED
    + """        kind text NOT NULL,
        data jsonb NOT NULL DEFAULT '{}',
        created_at timestamptz NOT NULL DEFAULT now()
    );
    CREATE INDEX events_task_idx ON events (task_id, created_at);
    CREATE TABLE llm_outputs (
"""
    + _OWNED
    + """        purpose text NOT NULL,
        model text NOT NULL,
        raw_output text NOT NULL,
        valid boolean NOT NULL,
        errors text[] NOT NULL DEFAULT '{}',
        created_at timestamptz NOT NULL DEFAULT now()
    );
    CREATE INDEX llm_outputs_task_idx ON llm_outputs (task_id);
    CREATE TABLE usage (
"""
    + _OWNED
    + """        agent_id text,
        model text NOT NULL,
        prompt_tokens integer NOT NULL DEFAULT 0,
        completion_tokens integer NOT NULL DEFAULT 0,
        cost_usd double precision NOT NULL DEFAULT 0,
        created_at timestamptz NOT NULL DEFAULT now()
    );
    CREATE INDEX usage_task_idx ON usage (task_id);
    CREATE TABLE blobs (
"""
    + _OWNED
    + """        name text NOT NULL,
        mime text NOT NULL,
        size integer NOT NULL,
        data bytea NOT NULL,
        created_at timestamptz NOT NULL DEFAULT now()
    );
    CREATE INDEX blobs_task_idx ON blobs (task_id);
    """,
    """
    CREATE TABLE memories (
"""
    + _OWNED
    + """        agent_id text,
        title text NOT NULL DEFAULT '',
        content text NOT NULL,
        tsv tsvector GENERATED ALWAYS AS (
            to_tsvector('english', title || ' ' || content)) STORED,
        created_at timestamptz NOT NULL DEFAULT now()
    );
    CREATE INDEX memories_tsv_idx ON memories USING gin (tsv);
    CREATE TABLE transcripts (
        subtask_id text NOT NULL,
        seq integer NOT NULL,
        message jsonb NOT NULL,
        created_at timestamptz NOT NULL DEFAULT now(),
        PRIMARY KEY (subtask_id, seq)
    );
    ALTER TABLE usage ADD COLUMN purpose text NOT NULL DEFAULT '';
    ALTER TABLE tasks ADD COLUMN run_id text;
    """,
    """
    CREATE TABLE agents (
        id text PRIMARY KEY,
        name text NOT NULL DEFAULT '',
        role text NOT NULL DEFAULT '',
        reports_to text,
        department text,
        skills text[] NOT NULL DEFAULT '{}',
        department_skills text[] NOT NULL DEFAULT '{}',
        model text,
        tools text[],
        capacity integer NOT NULL DEFAULT 1 CHECK (capacity >= 1),
        review_policy text NOT NULL DEFAULT 'auto',
        active boolean NOT NULL DEFAULT true,
        position integer NOT NULL DEFAULT 0,
        removed_at timestamptz,
        updated_at timestamptz NOT NULL DEFAULT now()
    );
    CREATE TABLE assignments (
        subtask_id text PRIMARY KEY,
        task_id text NOT NULL,
        agent_id text REFERENCES agents(id),
        state text NOT NULL CHECK (state IN ('queued', 'running', 'done')),
        required_skills text[] NOT NULL DEFAULT '{}',
        candidates text[],
        score double precision NOT NULL DEFAULT 0,
        reason text NOT NULL DEFAULT '',
        created_at timestamptz NOT NULL DEFAULT now(),
        started_at timestamptz,
        finished_at timestamptz
    );
    CREATE INDEX assignments_running_idx ON assignments (agent_id) WHERE state = 'running';
    CREATE INDEX assignments_queued_idx ON assignments (created_at) WHERE state = 'queued';
    CREATE INDEX assignments_task_idx ON assignments (task_id);
    """,
    """
    ALTER TABLE subtasks ADD COLUMN assignee text, ADD COLUMN reviewer text,
        ADD COLUMN waiting_for text, ADD COLUMN progress double precision NOT NULL DEFAULT 0;
    ALTER TABLE tasks ADD COLUMN creator text, ADD COLUMN assignee text,
        ADD COLUMN reviewer text, ADD COLUMN parent_subtask text;
    CREATE TABLE escalations (
        id text PRIMARY KEY,
        task_id text NOT NULL,
        subtask_id text NOT NULL,
        reason text NOT NULL,
        error text NOT NULL DEFAULT '',
        holder text NOT NULL,
        level integer NOT NULL DEFAULT 0,
        chain text[] NOT NULL DEFAULT '{}',
        status text NOT NULL DEFAULT 'open'
            CHECK (status IN ('open', 'resolved', 'cancelled')),
        decision jsonb,
        opened_at timestamptz NOT NULL DEFAULT now(),
        resolved_at timestamptz
    );
    CREATE INDEX escalations_open_idx ON escalations (status, opened_at);
    """,
    # Projects: a task belongs to one (the org's 'default' unless it names another or
    # inherits its parent task's), and so do the memories its steps leave. Memories
    # written before this were kept before review: those of steps that never completed
    # (rejected or failed drafts) go.
    """
    CREATE TABLE projects (
        id text PRIMARY KEY,
        name text NOT NULL DEFAULT '',
        created_at timestamptz NOT NULL DEFAULT now()
    );
    INSERT INTO projects (id, name) VALUES ('default', 'default');
    ALTER TABLE tasks ADD COLUMN project_id text NOT NULL DEFAULT 'default'
            REFERENCES projects(id),
        ADD COLUMN related_files text[] NOT NULL DEFAULT '{}',
        ADD COLUMN related_agents text[] NOT NULL DEFAULT '{}',
        ADD COLUMN parent_task text;
    CREATE INDEX tasks_project_idx ON tasks (project_id);
    ALTER TABLE memories ADD COLUMN project_id text NOT NULL DEFAULT 'default';
    DELETE FROM memories m WHERE NOT EXISTS (
        SELECT 1 FROM subtasks s WHERE s.id = m.subtask_id AND s.status = 'COMPLETED');
    CREATE INDEX memories_project_idx ON memories (project_id, agent_id);
    """,
]

_LOCK_KEY = 0x6265657374  # "beest": serialises migrations across processes


class StorableConnection(asyncpg.Connection):
    """A connection whose every query parameter passes ``runtime.storable.storable``.

    This is the store's one write boundary: a NUL or a lone surrogate anywhere in a text
    or JSON parameter (a tool argument, code output, a model reply, a title) is escaped
    visibly instead of making PostgreSQL refuse the write; a value PostgreSQL still
    refuses (a data exception) raises ``StoreRefused``, which no retry can fix.
    """

    async def execute(self, query: str, *args: Any, **kwargs: Any) -> str:
        with _refusals():
            status: str = await super().execute(query, *storable(args), **kwargs)
        return status

    async def executemany(self, command: str, args: Any, **kwargs: Any) -> None:
        with _refusals():
            await super().executemany(command, [storable(tuple(a)) for a in args], **kwargs)

    async def fetch(self, query: str, *args: Any, **kwargs: Any) -> list[Any]:
        with _refusals():
            rows: list[Any] = await super().fetch(query, *storable(args), **kwargs)
        return rows

    async def fetchrow(self, query: str, *args: Any, **kwargs: Any) -> Any:
        with _refusals():
            return await super().fetchrow(query, *storable(args), **kwargs)

    async def fetchval(self, query: str, *args: Any, **kwargs: Any) -> Any:
        with _refusals():
            return await super().fetchval(query, *storable(args), **kwargs)

    async def fetchmany(self, query: str, args: Any, **kwargs: Any) -> list[Any]:
        with _refusals():
            rows: list[Any] = await super().fetchmany(
                query, [storable(tuple(a)) for a in args], **kwargs)
        return rows


@contextlib.contextmanager
def _refusals() -> Iterator[None]:
    try:
        yield
    # The server's data exceptions (SQLSTATE class 22), and asyncpg's own refusal of an
    # argument it cannot encode for its column.
    except (asyncpg.DataError, ArgumentRefused) as e:
        raise StoreRefused(f"PostgreSQL refused the value: {e}") from e


async def _init_connection(conn: asyncpg.Connection) -> None:
    for typ in ("json", "jsonb"):
        await conn.set_type_codec(typ, encoder=storable_json, decoder=json.loads,
                                  schema="pg_catalog")


def embedded_dsn(state_dir: Path) -> str:
    """Start (or join) the embedded PostgreSQL under `state_dir` and return its DSN."""
    import pgserver  # imported lazily: only a machine without DATABASE_URL needs it

    data = state_dir / "pgdata"
    data.mkdir(parents=True, exist_ok=True)
    # cleanup_mode=None keeps the server up after this process exits, so a restarted
    # worker (or the next command) joins it instead of paying the start again.
    server = pgserver.get_server(data, cleanup_mode=None)  # type: ignore[attr-defined]
    uri: str = server.get_uri()
    return uri


class DatabaseUnreachable(Exception):
    """PostgreSQL did not answer at the configured address; `str()` is one line for people."""

    def __init__(self, where: str, reason: str) -> None:
        super().__init__(f"cannot reach PostgreSQL at {where}: {reason}. "
                         "Start it or set DATABASE_URL.")
        self.where = where


def where(dsn: str) -> str:
    """Where the database is, without the user or password a DSN may carry."""
    from urllib.parse import parse_qs, urlsplit

    parts = urlsplit(dsn)
    if not parts.hostname:
        socket_dir = parse_qs(parts.query).get("host")
        return f"{socket_dir[0]}{parts.path}" if socket_dir else "the configured database"
    return f"{parts.hostname}:{parts.port or 5432}{parts.path}"


async def connect_pool(dsn: str, *, timeout_s: float = 20.0, min_size: int = 1,
                       max_size: int = 10) -> asyncpg.Pool:
    """`create_pool`, giving up after `timeout_s`; raises DatabaseUnreachable naming where."""
    try:
        return await asyncio.wait_for(
            create_pool(dsn, min_size=min_size, max_size=max_size), timeout=timeout_s)
    except TimeoutError as e:
        raise DatabaseUnreachable(where(dsn), f"no answer within {timeout_s:g} s") from e
    except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError) as e:
        reason = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise DatabaseUnreachable(where(dsn), reason) from e


async def create_pool(dsn: str, *, min_size: int = 1, max_size: int = 10) -> asyncpg.Pool:
    """Return a pool on `dsn` with JSON codecs, after bringing the schema up to date.

    Its connections are ``StorableConnection``s: whatever is written is made storable.
    """
    pool: asyncpg.Pool = await asyncpg.create_pool(
        dsn, min_size=min_size, max_size=max_size, init=_init_connection,
        connection_class=StorableConnection,
    )
    await migrate(pool)
    return pool


async def migrate(pool: asyncpg.Pool) -> int:
    """Apply the migrations this database lacks; return the schema version. Idempotent."""
    return await apply_migrations(pool, MIGRATIONS, table="beestown_schema",
                                  lock_key=_LOCK_KEY, what="schema")


async def apply_migrations(pool: asyncpg.Pool, migrations: list[str], *, table: str,
                           lock_key: int, what: str,
                           logger: logging.Logger = log) -> int:
    """Apply those of `migrations` not yet recorded in `table` (created if missing), in
    order, in one transaction under advisory lock `lock_key`; return how many there are.
    `what` names them in `logger`'s lines."""
    async with pool.acquire() as conn, conn.transaction():
        await conn.execute("SELECT pg_advisory_xact_lock($1)", lock_key)
        await conn.execute(
            f"CREATE TABLE IF NOT EXISTS {table} (version integer PRIMARY KEY,"
            " applied_at timestamptz NOT NULL DEFAULT now())"
        )
        current = await conn.fetchval(f"SELECT coalesce(max(version), 0) FROM {table}")
        for version, sql in enumerate(migrations, start=1):
            if version > current:
                logger.info("applying %s migration %d", what, version)
                await conn.execute(sql)
                await conn.execute(f"INSERT INTO {table} (version) VALUES ($1)", version)
        return len(migrations)


async def resolve_dsn(database_url: str | None, state_dir: Path) -> str:
    """Return `database_url`, or the DSN of the embedded server when none is set."""
    if database_url:
        return database_url
    log.info("DATABASE_URL is not set: starting embedded PostgreSQL under %s", state_dir)
    return await asyncio.to_thread(embedded_dsn, state_dir)


def jsonable(value: Any) -> Any:
    """Return `value` as plain JSON types (pydantic models dumped in JSON mode)."""
    from pydantic import BaseModel

    if isinstance(value, BaseModel):
        return value.model_dump(mode="json")
    return value
