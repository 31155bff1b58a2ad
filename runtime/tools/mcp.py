"""MCP servers as tools: one long-lived session per configured server, reopened when it dies.

`McpHub.start()` begins opening every server in the background, in parallel, and returns
at once: a slow or stuck server never holds a worker's start. A session is opened at most
once at a time (every caller that needs it shares the open in flight), within the server's
own `start_timeout_s` (default: its `timeout_s`), and kept for the life of the worker
(each session is owned by a task of its own: `runtime.tools.mcp_session`).

A configured server that is not up is not an unknown tool: `may_offer()` accepts any tool
name of a configured server until the server has listed its tools. A call that needs a
server that is not up waits for the open in flight (or starts one) and, if the server does
not come up, raises `ToolUnavailable` naming the server; Temporal's retry policy retries it
with backoff. Calls to other servers and function tools never wait for it.

A call that finds its session broken (the stdio process died, the HTTP server restarted
or went away) reopens the session once and retries once; if that fails too the call
raises `ToolFailed(retryable=True)` and Temporal's retry policy takes over.

The MCP SDK (`SDK_MODULES`) is imported at the first open, in a thread: a process that
configures no server never pays for it, and one that does starts serving meanwhile.
"""

from __future__ import annotations

import asyncio
import contextvars
import importlib
import logging
from collections.abc import Coroutine, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from models.tools import McpServerConfig, ToolsConfig, ToolSpec
from runtime.tools.errors import (
    BadToolArguments,
    ToolFailed,
    ToolUnavailable,
    UnknownTool,
    failed,
)

if TYPE_CHECKING:
    import mcp.types as mt
    from mcp import ClientSession

    from runtime.tools.mcp_session import Connection
    from runtime.tools.mcp_tools import McpTool

log = logging.getLogger(__name__)

# The modules that hold the MCP SDK (~0.8 s to import): a worker that configures no MCP
# server never imports them, one that does imports them off the event loop (`_load_sdk`).
SDK_MODULES = ("runtime.tools.mcp_session", "runtime.tools.mcp_tools")


def _import_sdk() -> None:
    for name in SDK_MODULES:
        importlib.import_module(name)


async def _load_sdk() -> None:
    """Import the MCP SDK in a thread, so the event loop (and the worker's start) goes on."""
    await asyncio.to_thread(_import_sdk)


@dataclass
class ServerStats:
    """How a server's connection has fared in this worker (for tests and diagnostics)."""

    opens: int = 0
    reopens: int = 0
    calls: int = 0


@dataclass
class _Server:
    cfg: McpServerConfig
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    conn: Connection | None = None
    tools: dict[str, McpTool] | None = None
    # The open in flight, shared by every caller that needs the session meanwhile.
    opening: asyncio.Task[Connection] | None = None
    warming: asyncio.Task[None] | None = None  # a background start (open and list)
    problem: str | None = None  # why the last open or listing failed; None once it works
    stats: ServerStats = field(default_factory=ServerStats)


class McpHub:
    """The MCP servers of one worker: their tools, by `server.tool` name, and their sessions."""

    def __init__(self, servers: Sequence[McpServerConfig]) -> None:
        self._servers = {s.name: _Server(s) for s in servers}
        self._closed = False
        self._background: set[asyncio.Task[None]] = set()

    @classmethod
    def from_config(cls, config: ToolsConfig) -> McpHub:
        return cls(config.tools)

    # -- starting ----------------------------------------------------------------------
    def start(self) -> None:
        """Begin opening and listing every server in the background; return at once.

        A server that does not come up within its start timeout is logged and tried again
        when a call or a listing needs it.
        """
        for srv in self._servers.values():
            self._warm_up(srv)

    async def wait_started(self) -> None:
        """Wait until every start begun so far has ended (up, or given up on)."""
        while pending := [t for t in self._background if not t.done()]:
            await asyncio.wait(pending)

    def up(self, server: str) -> bool:
        """Tell whether the server's session is open and its tools listed."""
        srv = self._server(server)
        return srv.conn is not None and srv.conn.session is not None and srv.tools is not None

    def problem(self, server: str) -> str | None:
        """Return why the server's last open or listing failed (None: it has not)."""
        return self._server(server).problem

    def _warm_up(self, srv: _Server) -> None:
        if self._closed or (srv.warming is not None and not srv.warming.done()):
            return
        srv.warming = self._spawn(self._warm(srv), name=f"mcp-start:{srv.cfg.name}")

    async def _warm(self, srv: _Server) -> None:
        try:
            await self._tools(srv)
        except ToolFailed as e:
            log.error("MCP server %s is unavailable for now: %s", srv.cfg.name, e)
        else:
            log.info("MCP server %s is up (%d tools)", srv.cfg.name, len(srv.tools or {}))

    def _spawn(self, work: Coroutine[Any, Any, None], *, name: str) -> asyncio.Task[None]:
        # A fresh context: the task outlives whatever activity asked for it.
        task = asyncio.create_task(work, name=name, context=contextvars.Context())
        self._background.add(task)
        task.add_done_callback(self._background.discard)
        return task

    # -- names and specs -------------------------------------------------------------
    def servers(self) -> list[str]:
        return sorted(self._servers)

    def may_offer(self, name: str) -> bool:
        """Tell whether `name` may be one of this hub's tools, as far as is known now.

        A server that has listed its tools is held to that list (and its allow list);
        one that has not (still starting, or down) is given the benefit of the doubt: its
        tools are checked when it is up.
        """
        server, _, tool = name.partition(".")
        srv = self._servers.get(server)
        if srv is None or not tool:
            return False
        if srv.tools is not None:
            return tool in srv.tools
        return srv.cfg.allow is None or tool in srv.cfg.allow

    def unlisted(self) -> list[str]:
        """Return the servers whose tools are not known yet (not up, no allow list)."""
        return sorted(n for n, s in self._servers.items()
                      if s.tools is None and s.cfg.allow is None)

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

    async def list_tools(
        self, *, refresh: bool = False, wait: bool = True
    ) -> tuple[list[ToolSpec], dict[str, str]]:
        """Return every server's tool specs, and why a server's are missing (by server).

        With `wait=False` a server that is not up is not waited for: it is reported as a
        problem (and a start is begun in the background if none is in flight).
        """
        problems: dict[str, str] = {}

        async def one(srv: _Server) -> list[ToolSpec]:
            if not wait and not self.up(srv.cfg.name):
                self._warm_up(srv)
                problems[srv.cfg.name] = srv.problem or (
                    f"MCP server {srv.cfg.name!r} is not up yet")
                return []
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
        try:
            tools = await self._tools(srv)
        except ToolUnavailable as e:
            raise ToolUnavailable(f"tool {name!r}: {e}", server=server) from e
        tool = tools.get(tool_name)
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
                raise ToolUnavailable(
                    f"tool {name!r}: MCP server {server!r} is unreachable: {second}",
                    server=server,
                ) from second.__cause__
        from runtime.tools.mcp_tools import value_of

        return value_of(name, result)

    async def _call_once(
        self, srv: _Server, tool_name: str, args: dict[str, Any]
    ) -> mt.CallToolResult:
        name = f"{srv.cfg.name}.{tool_name}"
        try:
            conn = await self._connected(srv)
        except ToolFailed as e:
            raise _Broken(str(e), None) from e
        # Connected: the SDK is loaded (`_open`), so these imports cost nothing now.
        from mcp.shared.exceptions import MCPError
        from mcp_types import INVALID_PARAMS, METHOD_NOT_FOUND, REQUEST_TIMEOUT

        from runtime.tools.mcp_session import is_broken

        assert conn.session is not None
        try:
            async with asyncio.timeout(srv.cfg.timeout_s):
                return await conn.session.call_tool(tool_name, args)
        except TimeoutError as e:
            raise ToolFailed(
                f"tool {name!r} timed out after {srv.cfg.timeout_s:g} s", retryable=True
            ) from e
        except MCPError as e:
            if is_broken(e):
                raise _Broken(str(e), conn) from e
            if e.code == INVALID_PARAMS:
                raise BadToolArguments(f"tool {name!r}: {e.message}") from e
            if e.code == METHOD_NOT_FOUND:
                raise UnknownTool(f"tool {name!r}: {e.message}") from e
            raise ToolFailed(failed(name, f"MCP error {e.code}", e.message),
                             retryable=e.code == REQUEST_TIMEOUT) from e
        except Exception as e:
            if is_broken(e):
                raise _Broken(f"{type(e).__name__}: {e}", conn) from e
            raise ToolFailed(failed(name, type(e).__name__, str(e)), retryable=False) from e

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

    async def _connected(self, srv: _Server) -> Connection:
        """Return the server's open connection: the one open, the open in flight, or a new one.

        Every caller shares one open in flight, and a caller that gives up (its activity
        cancelled) does not cancel it for the others.
        """
        if self._closed:
            raise ToolUnavailable("the MCP hub is closed", server=srv.cfg.name)
        if srv.conn is not None and srv.conn.session is not None:
            return srv.conn
        if srv.opening is None or srv.opening.done():
            srv.opening = asyncio.create_task(
                self._open(srv), name=f"mcp-open:{srv.cfg.name}", context=contextvars.Context())
            # Retrieved here so that an open nobody waited for ends quietly.
            srv.opening.add_done_callback(
                lambda t: None if t.cancelled() else t.exception())
        return await asyncio.shield(srv.opening)

    async def _open(self, srv: _Server) -> Connection:
        name = srv.cfg.name
        try:
            await _load_sdk()
        except ImportError as e:  # a broken install: say so where the tool is asked for
            srv.problem = f"cannot open MCP server {name!r}: the MCP SDK does not import: {e}"
            raise ToolUnavailable(srv.problem, server=name) from e
        from runtime.tools.mcp_session import Connection, describe_failure

        conn = Connection(srv.cfg)
        srv.stats.opens += 1
        try:
            await conn.open()
        except Exception as e:
            srv.problem = (f"cannot open MCP server {name!r}: "
                           f"{describe_failure(e, timeout_s=srv.cfg.start_timeout)}")
            raise ToolUnavailable(srv.problem, server=name) from e
        if self._closed:
            await conn.close()
            raise ToolUnavailable("the MCP hub is closed", server=name)
        async with srv.lock:
            srv.conn = conn
        return conn

    async def _tools(self, srv: _Server, *, refresh: bool = False) -> dict[str, McpTool]:
        if srv.tools is not None and not refresh:
            return srv.tools
        for attempt in (1, 2):
            conn = await self._connected(srv)
            from runtime.tools.mcp_session import describe_failure, is_broken, list_all
            from runtime.tools.mcp_tools import index_tools

            assert conn.session is not None
            try:
                async with asyncio.timeout(srv.cfg.start_timeout):
                    listed = await list_all(conn.session)
                break
            except Exception as e:
                if attempt == 1 and is_broken(e):
                    await self._drop(srv, only=conn)
                    continue
                why = describe_failure(e, timeout_s=srv.cfg.start_timeout)
                srv.problem = f"cannot list the tools of MCP server {srv.cfg.name!r}: {why}"
                raise ToolUnavailable(srv.problem, server=srv.cfg.name) from e
        srv.tools = index_tools(srv.cfg, listed)
        srv.problem = None
        return srv.tools

    async def _drop(self, srv: _Server, *, only: Connection | None = None) -> None:
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
        pending = [*self._background,
                   *(s.opening for s in self._servers.values() if s.opening is not None)]
        for task in pending:
            task.cancel()
        await asyncio.gather(*pending, return_exceptions=True)
        await asyncio.gather(*(self._drop(s) for s in self._servers.values()))


class _Broken(Exception):
    """The session is gone; the caller may reopen it."""

    def __init__(self, message: str, conn: Connection | None) -> None:
        super().__init__(message)
        self.conn = conn
