"""What every command shares: exit codes, the error tree, and the session's connections.

Exit codes: 0 ok, 1 the operation was refused or failed, 2 bad usage or configuration
(including a server that cannot be reached). A command raises `Refused` or `BadUsage`
(or `CliError(message, code)`); `cli.dispatch` prints the message and exits with the code.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

import asyncpg
from rich.console import Console
from temporalio.client import Client

from client import TemporalUnreachable, connect
from runtime.db import DatabaseUnreachable, connect_pool, resolve_dsn
from runtime.settings import Settings
from runtime.store import Store

__all__ = ["EXIT_FAILED", "EXIT_OK", "EXIT_USAGE", "BadUsage", "CliError", "Refused", "Session"]

EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2


# -- errors: one tree, one exit code per branch --------------------------------------------
class CliError(Exception):
    """A command could not do its job: `message` for the person, `code` for the shell."""

    default_code = EXIT_FAILED

    def __init__(self, message: str, code: int | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.code = self.default_code if code is None else code

    def __str__(self) -> str:
        return self.message


class Refused(CliError):
    """The operation was refused or failed (exit 1): not found, validator said no, ..."""


class BadUsage(CliError):
    """Bad arguments, input file or configuration, or a server that cannot be reached (2)."""

    default_code = EXIT_USAGE


# -- connections -----------------------------------------------------------------------------
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
                self._pool = await connect_pool(dsn, max_size=4)
            except DatabaseUnreachable as e:
                raise BadUsage(str(e)) from e
            self._closers.append(self._pool.close)
        return self._pool

    @property
    def database(self) -> str:
        """Which database the CLI reads, for "not found" messages: the embedded one says
        where its state dir is (another state dir is another database)."""
        if self.settings.database_url is None:
            return f"the embedded database under {self.settings.state_dir}"
        return "the database"

    async def store(self) -> Store:
        return Store(await self.pool())

    async def client(self) -> Client:
        if self._client is None:
            try:
                self._client = await connect(self.settings)
            except TemporalUnreachable as e:
                raise BadUsage(str(e)) from e
        return self._client

    async def close(self) -> None:
        for close in reversed(self._closers):
            await close()
