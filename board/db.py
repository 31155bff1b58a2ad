"""The board's tables (people, audit, config), its indexes and the NOTIFY triggers.

The board migrates its own schema, apart from the store's (`activities.db`): its version
table is `board_schema` and it holds its own advisory lock, so a board and workers
starting together never race. Append to BOARD_MIGRATIONS; never edit a released entry.
"""

from __future__ import annotations

import logging
import secrets

import asyncpg

from runtime.db import apply_migrations

log = logging.getLogger(__name__)

CHANNEL = "beestown_board"

BOARD_MIGRATIONS: list[str] = [
    f"""
    CREATE TABLE board_people (
        name text PRIMARY KEY,
        password_hash text NOT NULL,
        acts_for text[] NOT NULL DEFAULT '{{}}',
        active boolean NOT NULL DEFAULT true,
        created_at timestamptz NOT NULL DEFAULT now()
    );
    CREATE TABLE board_audit (
        id bigserial PRIMARY KEY,
        person text NOT NULL,
        agent text,
        action text NOT NULL,
        workflow_id text,
        payload jsonb NOT NULL DEFAULT '{{}}',
        outcome text NOT NULL,
        at timestamptz NOT NULL DEFAULT now()
    );
    CREATE INDEX board_audit_at_idx ON board_audit (at);
    CREATE TABLE board_config (
        key text PRIMARY KEY,
        value text NOT NULL
    );
    -- The Tasks page pages newest first, optionally by status, over 10 000s of rows.
    CREATE INDEX IF NOT EXISTS tasks_board_created_idx ON tasks (created_at DESC, id DESC);
    CREATE INDEX IF NOT EXISTS tasks_board_status_idx ON tasks (status, created_at DESC);
    CREATE INDEX IF NOT EXISTS tasks_board_parent_idx ON tasks (parent_subtask);
    CREATE INDEX IF NOT EXISTS usage_board_subtask_idx ON usage (subtask_id);
    CREATE INDEX IF NOT EXISTS usage_board_created_idx ON usage (created_at);
    CREATE INDEX IF NOT EXISTS events_board_subtask_idx ON events (subtask_id, created_at);
    CREATE INDEX IF NOT EXISTS blobs_board_subtask_idx ON blobs (subtask_id);

    -- Every write to tasks, subtasks and escalations tells listening boards what changed
    -- (delivered on commit); one listener per board process fans it out to open pages.
    CREATE FUNCTION board_notify() RETURNS trigger LANGUAGE plpgsql AS $$
    DECLARE
        row jsonb := to_jsonb(NEW);
        task text;
        sub text;
    BEGIN
        IF TG_TABLE_NAME = 'tasks' THEN
            task := row->>'id';
        ELSIF TG_TABLE_NAME = 'subtasks' THEN
            task := row->>'task_id'; sub := row->>'id';
        ELSE
            task := row->>'task_id'; sub := row->>'subtask_id';
        END IF;
        PERFORM pg_notify('{CHANNEL}', json_build_object(
            'table', TG_TABLE_NAME, 'task', task, 'subtask', sub,
            'status', row->>'status')::text);
        RETURN NULL;
    EXCEPTION WHEN OTHERS THEN
        -- The board must never fail the worker's write (a full NOTIFY queue, say).
        RAISE WARNING 'board_notify: %', SQLERRM;
        RETURN NULL;
    END $$;
    CREATE TRIGGER tasks_board_notify AFTER INSERT OR UPDATE ON tasks
        FOR EACH ROW EXECUTE FUNCTION board_notify();
    CREATE TRIGGER subtasks_board_notify AFTER INSERT OR UPDATE ON subtasks
        FOR EACH ROW EXECUTE FUNCTION board_notify();
    CREATE TRIGGER escalations_board_notify AFTER INSERT OR UPDATE ON escalations
        FOR EACH ROW EXECUTE FUNCTION board_notify();
    """,
]

_LOCK_KEY = 0x626F617264  # "board"


async def migrate_board(pool: asyncpg.Pool) -> int:
    """Bring the board's schema up to date (after the store's); return its version."""
    return await apply_migrations(pool, BOARD_MIGRATIONS, table="board_schema",
                                  lock_key=_LOCK_KEY, what="board", logger=log)


async def session_secret(pool: asyncpg.Pool) -> str:
    """Return the key that signs session cookies, made once per database."""
    await pool.execute(
        "INSERT INTO board_config (key, value) VALUES ('session_secret', $1)"
        " ON CONFLICT (key) DO NOTHING",
        secrets.token_urlsafe(48),
    )
    value: str = await pool.fetchval(
        "SELECT value FROM board_config WHERE key = 'session_secret'")
    return value
