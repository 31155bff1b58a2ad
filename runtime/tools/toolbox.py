"""The Toolbox: function tools and MCP servers' tools (`server.tool`) behind one name space."""

from __future__ import annotations

import contextlib
import logging
import re
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

from models.tools import ToolsConfig, ToolSpec
from runtime.documents import load_tools_config
from runtime.tools.errors import BadToolArguments, UnknownTool
from runtime.tools.mcp import McpHub
from runtime.tools.registry import ToolRegistry

log = logging.getLogger(__name__)


class Toolbox(ToolRegistry):
    """Function tools and MCP servers' tools (`server.tool`) behind one name space.

    A ToolRegistry itself, so a worker hands it wherever a registry goes; `names()` and
    `specs()` include the MCP tools listed so far (`list_specs()` asks the servers).
    """

    def __init__(self, functions: ToolRegistry | None = None, *,
                 hub: McpHub | None = None) -> None:
        super().__init__()
        if functions is not None:
            self._tools = functions._tools  # shared: tools registered later show up too
        self.hub = hub
        if hub is not None:
            clashes = [n for n in self._tools if hub.owns(n)]
            if clashes:
                raise ValueError(
                    f"function tools {', '.join(clashes)} clash with an MCP server's name space"
                )

    @property
    def functions(self) -> list[str]:
        return super().names()

    def names(self) -> list[str]:
        mcp_names = self.hub.names() if self.hub else []
        return sorted([*super().names(), *mcp_names])

    def specs(self) -> list[ToolSpec]:
        return [*super().specs(), *(self.hub.cached_specs() if self.hub else [])]

    def knows(self, name: str) -> bool:
        """Tell whether a plan may name `name`: a function tool, or a configured server's.

        A server that is not up yet (starting, stuck, down) is not a reason to refuse a
        plan: its step waits for it, and its tool list is checked once it is up.
        """
        return super().knows(name) or (self.hub is not None and self.hub.may_offer(name))

    def menu(self) -> list[str]:
        pending = self.hub.unlisted() if self.hub else []
        return [*self.names(),
                *(f"{s}.<tool> (MCP server {s!r} is not up yet; its tools are unknown)"
                  for s in pending)]

    async def list_specs(
        self, *, refresh: bool = False, wait: bool = True
    ) -> tuple[list[ToolSpec], dict[str, str]]:
        """Return every tool's spec, asking MCP servers; and why a server's are missing.

        With `wait=False`, servers that are not up are reported, not waited for.
        """
        if self.hub is None:
            return super().specs(), {}
        mcp_specs, problems = await self.hub.list_tools(refresh=refresh, wait=wait)
        return [*super().specs(), *mcp_specs], problems

    async def call(self, name: str, args: dict[str, Any]) -> Any:
        if self.hub is not None and self.hub.owns(name):
            return await self.hub.call(name, args)
        try:
            return await super().call(name, args)
        except UnknownTool:
            if self.hub is None:
                raise
            known = ", ".join(self.names()) or "none"
            raise UnknownTool(f"unknown tool {name!r} (known: {known})") from None

    async def aclose(self) -> None:
        """Close the MCP sessions (stdio servers stop)."""
        if self.hub is not None:
            await self.hub.aclose()


def as_toolbox(tools: ToolRegistry) -> Toolbox:
    return tools if isinstance(tools, Toolbox) else Toolbox(tools)


_REF = re.compile(r"^\$\{([A-Za-z0-9][A-Za-z0-9_.-]*)\}$")


def references(args: Any) -> list[str]:
    """Return the step ids that "${step_id}" arguments in `args` name, in order."""
    if isinstance(args, str):
        m = _REF.match(args)
        return [m.group(1)] if m else []
    values = args.values() if isinstance(args, dict) else args if isinstance(args, list) else []
    return [ref for v in values for ref in references(v)]


def substitute_inputs(args: Any, inputs: dict[str, Any]) -> Any:
    """Replace every argument string of the form "${step_id}" by that step's output."""
    if isinstance(args, str):
        m = _REF.match(args)
        if m:
            if m.group(1) not in inputs:
                raise BadToolArguments(
                    f"argument {args!r} names a step that is not a dependency"
                )
            return inputs[m.group(1)]
        return args
    if isinstance(args, dict):
        return {k: substitute_inputs(v, inputs) for k, v in args.items()}
    if isinstance(args, list):
        return [substitute_inputs(v, inputs) for v in args]
    return args


async def open_toolbox(
    functions: ToolRegistry | None = None, tools_file: Path | None = None, *,
    wait: bool = False,
) -> Toolbox:
    """Return the function tools plus the MCP servers of `tools_file`, starting in the background.

    The servers start in parallel, each within its own `timeout_s`, without holding the
    caller; one that does not come up is logged and tried again when a step needs it.
    `wait=True` returns only once every server is up or given up on (tests, listings).
    A bad file raises InvalidToolsConfig naming each bad entry.
    """
    if tools_file is None and isinstance(functions, Toolbox):
        return functions
    config = load_tools_config(tools_file) if tools_file else ToolsConfig()
    hub = McpHub.from_config(config)
    toolbox = Toolbox(functions, hub=hub)
    hub.start()
    if wait:
        await hub.wait_started()
    return toolbox


@contextlib.asynccontextmanager
async def toolbox_from(
    functions: ToolRegistry | None = None, tools_file: Path | None = None, *,
    wait: bool = False,
) -> AsyncIterator[Toolbox]:
    """Open a toolbox for the life of the block; its MCP sessions are closed after."""
    toolbox = await open_toolbox(functions, tools_file, wait=wait)
    try:
        yield toolbox
    finally:
        await toolbox.aclose()
