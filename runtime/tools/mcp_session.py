"""One MCP server's session: its transport, and a task of its own that owns it.

Each session is owned by a task of its own that enters the transport and the
`ClientSession` in an `AsyncExitStack` and leaves them when the session is closed: the
SDK's transports hold anyio cancel scopes that must be exited by the task that entered
them, and the activity that first needed a server ends long before the session should.
The worker's own environment (API keys, database URL) never reaches a stdio server.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import logging
import os
from contextlib import AbstractAsyncContextManager, AsyncExitStack

import anyio
import httpx2
import mcp.types as mt
from mcp import ClientSession, StdioServerParameters, stdio_client
from mcp.client._transport import TransportStreams
from mcp.client.streamable_http import StreamableHTTPError, streamable_http_client
from mcp.shared.exceptions import MCPError
from mcp_types import CONNECTION_CLOSED, INVALID_REQUEST

from models.tools import McpServerConfig

log = logging.getLogger(__name__)

# Opening a session (spawn + initialize) and listing its tools get at most the server's own
# `start_timeout` each, its calls `timeout_s`: a server known to start slowly is given its
# time, a stuck one is given up on as soon as its operator said.
# Closing waits this long for a server to exit before the owner task is cancelled.
CLOSE_TIMEOUT_S = 10.0

# Errors that mean the connection itself is gone, not that the tool failed.
_BROKEN_EXCEPTIONS: tuple[type[BaseException], ...] = (
    anyio.ClosedResourceError,
    anyio.BrokenResourceError,
    anyio.EndOfStream,
    ConnectionError,
    OSError,
    httpx2.TransportError,
    StreamableHTTPError,
)


def is_broken(e: BaseException) -> bool:
    if isinstance(e, MCPError):
        return e.code == CONNECTION_CLOSED or (
            e.code == INVALID_REQUEST and "session terminated" in e.message.lower()
        )
    return isinstance(e, _BROKEN_EXCEPTIONS)


def stdio_environment(env: dict[str, str]) -> dict[str, str]:
    """Return a stdio server's whole environment: PATH and HOME, then the configured env.

    The worker's own environment (API keys, database URL) never reaches a server.
    """
    base = {k: os.environ[k] for k in ("PATH", "HOME") if k in os.environ}
    return base | env


def _stdio_parameters(cfg: McpServerConfig) -> StdioServerParameters:
    # The configured values go in the process environment, not on its command line
    # (where `ps` would show them). The SDK adds a few harmless inherited variables
    # (USER, SHELL, TERM, LOGNAME); the worker's secrets are never among them.
    if cfg.command is None:
        raise ValueError(f"server {cfg.name}: a stdio server needs a command")
    return StdioServerParameters(command=cfg.command, args=list(cfg.args),
                                 env=stdio_environment(cfg.env))


def _transport(cfg: McpServerConfig) -> AbstractAsyncContextManager[TransportStreams]:
    if cfg.transport == "stdio":
        return stdio_client(_stdio_parameters(cfg))
    assert cfg.url is not None
    return streamable_http_client(cfg.url)


class Connection:
    """One open session to one server, owned by its own task."""

    def __init__(self, cfg: McpServerConfig) -> None:
        self.cfg = cfg
        self.session: ClientSession | None = None
        self._stop = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    async def open(self) -> ClientSession:
        loop = asyncio.get_running_loop()
        ready: asyncio.Future[ClientSession] = loop.create_future()
        # Retrieved here: once open() has given up, nobody else reads how the owner ended.
        ready.add_done_callback(lambda f: f.cancelled() or f.exception())
        # A fresh context: the owner task outlives the activity that opened it and must
        # not carry that activity's context (its info, its cancellation) along.
        self._task = asyncio.create_task(
            self._own(ready), name=f"mcp-session:{self.cfg.name}", context=contextvars.Context()
        )
        try:
            async with asyncio.timeout(self.cfg.start_timeout):
                self.session = await asyncio.shield(ready)
        except BaseException:
            # A server that never got as far as a session has nothing to finish: it is
            # stopped at once rather than asked to exit.
            await self.close(at_once=True)
            raise
        return self.session

    async def _own(self, ready: asyncio.Future[ClientSession]) -> None:
        try:
            async with AsyncExitStack() as stack:
                streams = await stack.enter_async_context(_transport(self.cfg))
                session = await stack.enter_async_context(ClientSession(*streams))
                await session.initialize()
                if not ready.done():
                    ready.set_result(session)
                await self._stop.wait()
        except BaseException as e:  # the owner must report, not raise: nobody awaits it
            if not ready.done():
                ready.set_exception(e if isinstance(e, Exception) else ConnectionError(str(e)))
            elif not isinstance(e, asyncio.CancelledError):
                log.debug("MCP server %s: session ended with %r", self.cfg.name, e)

    async def close(self, *, at_once: bool = False) -> None:
        """Stop the session: let the server exit (at most CLOSE_TIMEOUT_S), or `at_once`."""
        self._stop.set()
        task, self._task, self.session = self._task, None, None
        if task is None:
            return
        try:
            if at_once:
                raise TimeoutError
            await asyncio.wait_for(asyncio.shield(task), CLOSE_TIMEOUT_S)
        except (TimeoutError, asyncio.CancelledError):
            task.cancel()
            with contextlib.suppress(BaseException):
                await task


async def list_all(session: ClientSession) -> list[mt.Tool]:
    tools: list[mt.Tool] = []
    cursor: str | None = None
    while True:
        params = mt.PaginatedRequestParams(cursor=cursor) if cursor else None
        page = await session.list_tools(params=params)
        tools.extend(page.tools)
        cursor = page.next_cursor
        if not cursor:
            return tools


def describe_failure(e: BaseException, *, timeout_s: float) -> str:
    """Return why opening or listing failed, in one sentence (never blank)."""
    if isinstance(e, BaseExceptionGroup) and e.exceptions:
        return describe_failure(e.exceptions[0], timeout_s=timeout_s)
    if isinstance(e, TimeoutError):
        return f"no answer within {timeout_s:g} s"
    return f"{type(e).__name__}: {e}" if str(e) else f"{type(e).__name__} (no message)"

