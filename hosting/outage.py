"""Riding out a PostgreSQL outage inside an activity instead of failing the attempt.

A step activity stores its result after doing its work. If the database is away at that
moment and the attempt fails, Temporal retries the whole step: the work runs again (a
repeated step) or, once the step's attempts are spent, the step fails with its result
produced but never stored (a lost result). `RidingPool` wraps the worker's asyncpg pool
so that a call meeting a dropped or refused connection waits and tries again, for up to
`RIDE_OUT_S`, heartbeating meanwhile so a waiting attempt is not taken for a dead one.

What is retried: single statements (`fetch`, `fetchrow`, `fetchval`, `execute`,
`executemany`), and getting a connection (`acquire`). A transaction that loses its
connection half-way raises as before (its activity is retried by Temporal): nothing is
replayed inside a transaction.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar, cast

import asyncpg
from asyncpg import Record
from asyncpg.pool import PoolConnectionProxy
from temporalio import activity

log = logging.getLogger(__name__)

# Below STORE_TIMEOUT (30 s, workflows/policies.py), so a store activity that rides out an
# outage still ends within its own start-to-close timeout.
RIDE_OUT_S = 25.0
_FIRST_PAUSE_S = 0.1
_MAX_PAUSE_S = 1.0

CONNECTION_ERRORS: tuple[type[BaseException], ...] = (
    OSError,  # refused, reset, unreachable (ConnectionError, socket errors)
    asyncpg.PostgresConnectionError,  # SQLSTATE 08: the connection is gone
    asyncpg.CannotConnectNowError,  # 57P03: starting up or shutting down
    asyncpg.AdminShutdownError,  # 57P01: terminated by the administrator / shutdown
    asyncpg.CrashShutdownError,  # 57P02
    asyncpg.TooManyConnectionsError,  # 53300
    asyncpg.InterfaceError,  # "connection is closed", "pool is closing" (checked below)
)

T = TypeVar("T")


def _is_outage(e: BaseException) -> bool:
    if isinstance(e, asyncpg.InterfaceError):
        text = str(e).lower()
        return "closed" in text or "connection" in text
    return isinstance(e, CONNECTION_ERRORS)


def _beat() -> None:
    """Heartbeat if we run inside a (non-local) activity: waiting is not dying."""
    if activity.in_activity() and not activity.info().is_local:
        activity.heartbeat()


async def ride_out(call: Callable[[], Awaitable[T]], *, what: str,
                   limit_s: float = RIDE_OUT_S) -> T:
    """Return `await call()`, calling it again while the database is unreachable."""
    deadline = time.monotonic() + limit_s
    pause = _FIRST_PAUSE_S
    while True:
        try:
            return await call()
        except Exception as e:
            if not _is_outage(e) or time.monotonic() + pause > deadline:
                raise
            log.warning("database unreachable during %s (%s: %s); again in %.1f s",
                        what, type(e).__name__, e, pause)
        _beat()
        await asyncio.sleep(pause)
        pause = min(pause * 2, _MAX_PAUSE_S)


class _Acquire:
    """`pool.acquire()` whose connecting step rides out an outage."""

    def __init__(self, pool: asyncpg.Pool, kwargs: dict[str, Any]) -> None:
        self._pool = pool
        self._kwargs = kwargs
        self._conn: PoolConnectionProxy[Record] | None = None

    async def __aenter__(self) -> PoolConnectionProxy[Record]:
        # The pool replaces a connection it saw closed; what fails here is connecting.
        async def get() -> PoolConnectionProxy[Record]:
            return await self._pool.acquire(**self._kwargs)

        self._conn = await ride_out(get, what="acquire")
        return self._conn

    async def __aexit__(self, *exc: object) -> None:
        if self._conn is not None:
            await self._pool.release(self._conn)

    def __await__(self) -> Any:
        return self.__aenter__().__await__()


class RidingPool:
    """An asyncpg pool whose statements and acquires ride out a database outage."""

    def __init__(self, pool: asyncpg.Pool) -> None:
        self._pool = pool

    @property
    def inner(self) -> asyncpg.Pool:
        return self._pool

    def acquire(self, **kwargs: Any) -> _Acquire:
        return _Acquire(self._pool, kwargs)

    async def fetch(self, *args: Any, **kwargs: Any) -> Any:
        return await ride_out(lambda: self._pool.fetch(*args, **kwargs), what="fetch")

    async def fetchrow(self, *args: Any, **kwargs: Any) -> Any:
        return await ride_out(lambda: self._pool.fetchrow(*args, **kwargs), what="fetchrow")

    async def fetchval(self, *args: Any, **kwargs: Any) -> Any:
        return await ride_out(lambda: self._pool.fetchval(*args, **kwargs), what="fetchval")

    async def execute(self, *args: Any, **kwargs: Any) -> Any:
        return await ride_out(lambda: self._pool.execute(*args, **kwargs), what="execute")

    async def executemany(self, *args: Any, **kwargs: Any) -> Any:
        return await ride_out(lambda: self._pool.executemany(*args, **kwargs),
                              what="executemany")

    def __getattr__(self, name: str) -> Any:
        return getattr(self._pool, name)


def riding(pool: asyncpg.Pool) -> asyncpg.Pool:
    """Return `pool` wrapped in a RidingPool, typed as the pool it stands for."""
    return cast(asyncpg.Pool, RidingPool(pool))
