"""MCP servers as tools: one long-lived session per configured server, reopened when it dies.

`McpHub` opens a server's session the first time one of its tools is listed or called and
keeps it for the life of the worker. Each session is owned by a task of its own that
enters the transport and the `ClientSession` in an `AsyncExitStack` and leaves them when
the hub closes: the SDK's transports hold anyio cancel scopes that must be exited by the
task that entered them, and the activity that first needed a server ends long before the
session should.

A call that finds its session broken (the stdio process died, the HTTP server restarted
or went away) reopens the session once and retries once; if that fails too the call
raises `ToolFailed(retryable=True)` and Temporal's retry policy takes over.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import logging
import os
from collections.abc import AsyncIterator, Sequence
from contextlib import AbstractAsyncContextManager, AsyncExitStack
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import anyio
import httpx2
import jsonschema
import mcp.types as mt
from mcp import ClientSession, StdioServerParameters, stdio_client
from mcp.client._transport import TransportStreams
from mcp.client.streamable_http import StreamableHTTPError, streamable_http_client
from mcp.shared.exceptions import MCPError
from mcp_types import (
    CONNECTION_CLOSED,
    INVALID_PARAMS,
    INVALID_REQUEST,
    METHOD_NOT_FOUND,
    REQUEST_TIMEOUT,
)

from activities.tools import (
    BadToolArguments,
    Toolbox,
    ToolFailed,
    ToolRegistry,
    UnknownTool,
)
from models.tools import McpServerConfig, ToolsConfig, ToolSpec, load_tools_config

log = logging.getLogger(__name__)

# Opening a session (spawn + initialize + list) gets at most this long; calls get the
# server's own timeout_s.
OPEN_TIMEOUT_S = 30.0
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


def _is_broken(e: BaseException) -> bool:
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


@dataclass
class ServerStats:
    """How a server's connection has fared in this worker (for tests and diagnostics)."""

    opens: int = 0
    reopens: int = 0
    calls: int = 0


@dataclass
class _Tool:
    spec: ToolSpec
    validator: jsonschema.protocols.Validator | None


class _Connection:
    """One open session to one server, owned by its own task."""

    def __init__(self, cfg: McpServerConfig) -> None:
        self.cfg = cfg
        self.session: ClientSession | None = None
        self._stop = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    async def open(self) -> ClientSession:
        loop = asyncio.get_running_loop()
        ready: asyncio.Future[ClientSession] = loop.create_future()
        # A fresh context: the owner task outlives the activity that opened it and must
        # not carry that activity's context (its info, its cancellation) along.
        self._task = asyncio.create_task(
            self._own(ready), name=f"mcp-session:{self.cfg.name}", context=contextvars.Context()
        )
        try:
            async with asyncio.timeout(OPEN_TIMEOUT_S):
                self.session = await asyncio.shield(ready)
        except BaseException:
            await self.close()
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

    async def close(self) -> None:
        self._stop.set()
        task, self._task, self.session = self._task, None, None
        if task is None:
            return
        try:
            await asyncio.wait_for(asyncio.shield(task), CLOSE_TIMEOUT_S)
        except (TimeoutError, asyncio.CancelledError):
            task.cancel()
            with contextlib.suppress(BaseException):
                await task


@dataclass
class _Server:
    cfg: McpServerConfig
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    conn: _Connection | None = None
    tools: dict[str, _Tool] | None = None
    stats: ServerStats = field(default_factory=ServerStats)


class McpHub:
    """The MCP servers of one worker: their tools, by `server.tool` name, and their sessions."""

    def __init__(self, servers: Sequence[McpServerConfig]) -> None:
        self._servers = {s.name: _Server(s) for s in servers}
        self._closed = False

    @classmethod
    def from_config(cls, config: ToolsConfig) -> McpHub:
        return cls(config.tools)

    # -- names and specs -------------------------------------------------------------
    def servers(self) -> list[str]:
        return sorted(self._servers)

    def owns(self, name: str) -> bool:
        """Tell whether `name` is namespaced by one of this hub's servers."""
        server, _, tool = name.partition(".")
        return bool(tool) and server in self._servers

    def names(self) -> list[str]:
        """Return the tool names known without asking a server (listed, or allow-listed)."""
        out: list[str] = []
        for name, srv in self._servers.items():
            if srv.tools is not None:
                out.extend(t.spec.name for t in srv.tools.values())
            elif srv.cfg.allow is not None:
                out.extend(f"{name}.{t}" for t in srv.cfg.allow)
        return sorted(out)

    def cached_specs(self) -> list[ToolSpec]:
        """Return the specs of every server listed so far (no I/O)."""
        return [t.spec for srv in self._servers.values() if srv.tools
                for t in srv.tools.values()]

    async def list_tools(self, *, refresh: bool = False) -> tuple[list[ToolSpec], dict[str, str]]:
        """Return every server's tool specs, and why a server's are missing (by server)."""
        problems: dict[str, str] = {}

        async def one(srv: _Server) -> list[ToolSpec]:
            try:
                tools = await self._tools(srv, refresh=refresh)
            except ToolFailed as e:
                problems[srv.cfg.name] = str(e)
                return []
            return [t.spec for t in tools.values()]

        lists = await asyncio.gather(*(one(s) for s in self._servers.values()))
        return [spec for specs in lists for spec in specs], problems

    async def session(self, server: str) -> ClientSession:
        """Return the server's open session, opening it if need be (tests compare these)."""
        srv = self._server(server)
        conn = await self._connected(srv)
        assert conn.session is not None
        return conn.session

    def stats(self, server: str) -> ServerStats:
        return self._server(server).stats

    # -- calls -----------------------------------------------------------------------
    async def call(self, name: str, args: dict[str, Any]) -> Any:
        """Validate `args` against the tool's input schema, call it, return its value.

        The value is the result's structured content if it has one, else its text (one
        text block), else its content blocks as JSON.
        """
        server, _, tool_name = name.partition(".")
        srv = self._server(server, full_name=name)
        tool = (await self._tools(srv)).get(tool_name)
        if tool is None:
            raise UnknownTool(self._unknown_message(srv, name))
        if tool.validator is not None:
            errors = sorted(tool.validator.iter_errors(args),
                            key=lambda e: [str(p) for p in e.path])
            if errors:
                problems = "; ".join(
                    f"{'.'.join(str(p) for p in err.path) or 'args'}: {err.message}"
                    for err in errors
                )
                raise BadToolArguments(f"tool {name!r}: {problems}")
        srv.stats.calls += 1
        try:
            result = await self._call_once(srv, tool_name, args)
        except _Broken as first:
            log.warning("MCP server %s: session broken (%s); reopening once", server, first)
            if first.conn is not None:
                await self._drop(srv, only=first.conn)
            srv.stats.reopens += 1
            try:
                result = await self._call_once(srv, tool_name, args)
            except _Broken as second:
                if second.conn is not None:
                    await self._drop(srv, only=second.conn)
                raise ToolFailed(
                    f"tool {name!r}: MCP server {server!r} is unreachable: {second}",
                    retryable=True,
                ) from second.__cause__
        return _value_of(name, result)

    async def _call_once(
        self, srv: _Server, tool_name: str, args: dict[str, Any]
    ) -> mt.CallToolResult:
        name = f"{srv.cfg.name}.{tool_name}"
        try:
            conn = await self._connected(srv)
        except ToolFailed as e:
            raise _Broken(str(e), None) from e
        assert conn.session is not None
        try:
            async with asyncio.timeout(srv.cfg.timeout_s):
                return await conn.session.call_tool(tool_name, args)
        except TimeoutError as e:
            raise ToolFailed(
                f"tool {name!r} timed out after {srv.cfg.timeout_s:g} s", retryable=True
            ) from e
        except MCPError as e:
            if _is_broken(e):
                raise _Broken(str(e), conn) from e
            if e.code == INVALID_PARAMS:
                raise BadToolArguments(f"tool {name!r}: {e.message}") from e
            if e.code == METHOD_NOT_FOUND:
                raise UnknownTool(f"tool {name!r}: {e.message}") from e
            raise ToolFailed(
                f"tool {name!r} failed: MCP error {e.code}: {e.message}",
                retryable=e.code == REQUEST_TIMEOUT,
            ) from e
        except Exception as e:
            if _is_broken(e):
                raise _Broken(f"{type(e).__name__}: {e}", conn) from e
            raise ToolFailed(f"tool {name!r} failed: {type(e).__name__}: {e}",
                             retryable=False) from e

    # -- sessions --------------------------------------------------------------------
    def _server(self, server: str, *, full_name: str | None = None) -> _Server:
        try:
            return self._servers[server]
        except KeyError:
            known = ", ".join(self.servers()) or "none"
            what = f"tool {full_name!r}" if full_name else f"MCP server {server!r}"
            raise UnknownTool(f"unknown {what} (MCP servers: {known})") from None

    def _unknown_message(self, srv: _Server, name: str) -> str:
        known = ", ".join(sorted(t.spec.name for t in (srv.tools or {}).values())) or "none"
        return f"unknown tool {name!r} (server {srv.cfg.name!r} offers: {known})"

    async def _connected(self, srv: _Server) -> _Connection:
        if self._closed:
            raise ToolFailed("the MCP hub is closed", retryable=True)
        async with srv.lock:
            if srv.conn is not None and srv.conn.session is not None:
                return srv.conn
            conn = _Connection(srv.cfg)
            srv.stats.opens += 1
            try:
                await conn.open()
            except Exception as e:
                raise ToolFailed(
                    f"cannot open MCP server {srv.cfg.name!r}: {_describe(e)}", retryable=True
                ) from e
            srv.conn = conn
            return conn

    async def _tools(self, srv: _Server, *, refresh: bool = False) -> dict[str, _Tool]:
        if srv.tools is not None and not refresh:
            return srv.tools
        for attempt in (1, 2):
            conn = await self._connected(srv)
            assert conn.session is not None
            try:
                async with asyncio.timeout(OPEN_TIMEOUT_S):
                    listed = await _list_all(conn.session)
                break
            except Exception as e:
                if attempt == 1 and _is_broken(e):
                    await self._drop(srv, only=conn)
                    continue
                raise ToolFailed(
                    f"cannot list the tools of MCP server {srv.cfg.name!r}: {_describe(e)}",
                    retryable=True,
                ) from e
        srv.tools = self._index(srv.cfg, listed)
        return srv.tools

    def _index(self, cfg: McpServerConfig, listed: list[mt.Tool]) -> dict[str, _Tool]:
        allow = set(cfg.allow) if cfg.allow is not None else None
        offered = {t.name for t in listed}
        if allow is not None and allow - offered:
            log.warning("MCP server %s offers no tool named %s", cfg.name,
                        ", ".join(sorted(allow - offered)))
        out: dict[str, _Tool] = {}
        for t in listed:
            if allow is not None and t.name not in allow:
                continue
            schema = dict(t.input_schema or {"type": "object"})
            try:
                validator_cls = jsonschema.validators.validator_for(schema)
                validator_cls.check_schema(schema)
                validator: jsonschema.protocols.Validator | None = validator_cls(schema)
            except jsonschema.SchemaError as e:
                log.warning("MCP server %s: tool %s has an invalid input schema (%s); "
                            "its arguments go unchecked", cfg.name, t.name, e.message)
                validator = None
            out[t.name] = _Tool(
                ToolSpec(name=f"{cfg.name}.{t.name}",
                         description=t.description or t.title or "", parameters=schema),
                validator,
            )
        return out

    async def _drop(self, srv: _Server, *, only: _Connection | None = None) -> None:
        """Close the server's session; with `only`, just if it is still that one.

        Concurrent calls that saw the same session break must not close the session one
        of them has just reopened.
        """
        async with srv.lock:
            if only is not None and srv.conn is not only:
                return
            conn, srv.conn = srv.conn, None
        if conn is not None:
            await conn.close()

    async def aclose(self) -> None:
        """Close every session (stdio servers are stopped); later calls fail retryably."""
        self._closed = True
        await asyncio.gather(*(self._drop(s) for s in self._servers.values()))


class _Broken(Exception):
    """The session is gone; the caller may reopen it."""

    def __init__(self, message: str, conn: _Connection | None) -> None:
        super().__init__(message)
        self.conn = conn


async def _list_all(session: ClientSession) -> list[mt.Tool]:
    tools: list[mt.Tool] = []
    cursor: str | None = None
    while True:
        params = mt.PaginatedRequestParams(cursor=cursor) if cursor else None
        page = await session.list_tools(params=params)
        tools.extend(page.tools)
        cursor = page.next_cursor
        if not cursor:
            return tools


def _describe(e: BaseException) -> str:
    if isinstance(e, BaseExceptionGroup) and e.exceptions:
        return _describe(e.exceptions[0])
    if isinstance(e, TimeoutError):
        return f"no answer within {OPEN_TIMEOUT_S:g} s"
    return f"{type(e).__name__}: {e}"


def _value_of(name: str, result: mt.CallToolResult) -> Any:
    texts = [c.text for c in result.content if isinstance(c, mt.TextContent)]
    if result.is_error:
        message = " ".join(texts) or "the tool reported an error"
        raise ToolFailed(f"tool {name!r} failed: {message}", retryable=False)
    if result.structured_content is not None:
        return result.structured_content
    if len(result.content) == 1 and len(texts) == 1:
        return texts[0]
    return [c.model_dump(mode="json", by_alias=True, exclude_none=True) for c in result.content]


async def open_toolbox(
    functions: ToolRegistry | None = None, tools_file: Path | None = None
) -> Toolbox:
    """Return the function tools plus the MCP servers of `tools_file`, their tools listed.

    A server that cannot be reached now is logged and tried again at its first call;
    a bad file raises InvalidToolsConfig naming each bad entry.
    """
    if tools_file is None and isinstance(functions, Toolbox):
        return functions
    config = load_tools_config(tools_file) if tools_file else ToolsConfig()
    toolbox = Toolbox(functions, hub=McpHub.from_config(config))
    _, problems = await toolbox.list_specs()
    for server, problem in problems.items():
        log.error("MCP server %s is unavailable for now: %s", server, problem)
    return toolbox


@contextlib.asynccontextmanager
async def toolbox_from(
    functions: ToolRegistry | None = None, tools_file: Path | None = None
) -> AsyncIterator[Toolbox]:
    """Open a toolbox for the life of the block; its MCP sessions are closed after."""
    toolbox = await open_toolbox(functions, tools_file)
    try:
        yield toolbox
    finally:
        await toolbox.aclose()
