"""Tools: Python functions (schema from type hints and docstring, arguments validated by
pydantic) and, through `activities.mcp.McpHub`, the tools of MCP servers, behind one
`Toolbox`; and the activities that call them.

Exception tree: ToolError is the base; UnknownTool and BadToolArguments are the caller's
mistakes (never retried), ToolFailed wraps a failure of the tool itself and says whether
another try may help (a dead or unreachable MCP server, a timeout: yes; an error the tool
reported: no). Activities turn them into ApplicationErrors of the same type names, except a
retryable ToolFailed, which becomes type "ToolUnavailable" so the retry policy retries it.
"""

from __future__ import annotations

import asyncio
import inspect
import json
import re
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, get_type_hints

from pydantic import BaseModel, ConfigDict, ValidationError, create_model
from temporalio import activity
from temporalio.exceptions import ApplicationError

from activities.steps import StepBook, preview, summarize
from models.io import INLINE_OUTPUT_LIMIT, StepOutcome, StepRun
from models.task import Result
from models.tools import (
    ListToolsInput,
    ToolCallInput,
    ToolCallResult,
    ToolList,
    ToolSpec,
    call_blob_id,
    output_json,
)

if TYPE_CHECKING:
    from activities.mcp import McpHub


class ToolError(Exception):
    """Base of every error a tool call can raise."""


class UnknownTool(ToolError):
    pass


class BadToolArguments(ToolError):
    pass


class ToolFailed(ToolError):
    """The tool raised; `retryable` tells whether trying again may help."""

    def __init__(self, message: str, *, retryable: bool) -> None:
        super().__init__(message)
        self.retryable = retryable


@dataclass(frozen=True)
class FunctionTool:
    name: str
    description: str
    fn: Callable[..., Any]
    args_model: type[BaseModel]

    @property
    def parameters(self) -> dict[str, Any]:
        """The JSON schema of the arguments, as LLM tool calling expects it."""
        return self.args_model.model_json_schema()

    @property
    def spec(self) -> ToolSpec:
        return ToolSpec(name=self.name, description=self.description,
                        parameters=self.parameters)


def _args_model(name: str, fn: Callable[..., Any]) -> type[BaseModel]:
    hints = get_type_hints(fn)
    fields: dict[str, Any] = {}
    for pname, param in inspect.signature(fn).parameters.items():
        if param.kind in (param.VAR_POSITIONAL, param.VAR_KEYWORD):
            raise TypeError(f"tool {name}: *args/**kwargs cannot be described to a model")
        annotation = hints.get(pname, Any)
        default = ... if param.default is param.empty else param.default
        fields[pname] = (annotation, default)
    model: type[BaseModel] = create_model(
        f"{name}_args", __config__=ConfigDict(extra="forbid"), **fields
    )
    return model


# Errors a tool may raise that are worth another try (the network, a busy peer).
RETRYABLE = (ConnectionError, TimeoutError, asyncio.TimeoutError)


class ToolRegistry:
    """The function tools a worker can call, by name."""

    def __init__(self) -> None:
        self._tools: dict[str, FunctionTool] = {}

    def tool(
        self, fn: Callable[..., Any] | None = None, *, name: str | None = None
    ) -> Any:
        """Register `fn` as a tool (usable as `@registry.tool` or `@registry.tool(name=...)`)."""

        def register(f: Callable[..., Any]) -> Callable[..., Any]:
            tool_name = name or f.__name__
            if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_.-]{0,63}", tool_name):
                raise ValueError(f"tool name {tool_name!r} is not a valid identifier")
            if tool_name in self._tools:
                raise ValueError(f"tool {tool_name!r} is registered twice")
            doc = inspect.getdoc(f) or ""
            self._tools[tool_name] = FunctionTool(
                tool_name, doc.split("\n\n")[0], f, _args_model(tool_name, f)
            )
            return f

        return register(fn) if fn is not None else register

    def names(self) -> list[str]:
        return sorted(self._tools)

    def specs(self) -> list[ToolSpec]:
        """Return every tool's name, description and JSON schema, by name."""
        return [self._tools[n].spec for n in sorted(self._tools)]

    def get(self, name: str) -> FunctionTool:
        try:
            return self._tools[name]
        except KeyError:
            known = ", ".join(self.names()) or "none"
            raise UnknownTool(f"unknown tool {name!r} (known: {known})") from None

    async def call(self, name: str, args: dict[str, Any]) -> Any:
        """Validate `args` against the tool's signature, run it, return its value."""
        tool = self.get(name)
        try:
            parsed = tool.args_model.model_validate(args)
        except ValidationError as e:
            problems = "; ".join(
                f"{'.'.join(str(p) for p in err['loc']) or 'args'}: {err['msg']}"
                for err in e.errors()
            )
            raise BadToolArguments(f"tool {name!r}: {problems}") from e
        kwargs = {k: getattr(parsed, k) for k in type(parsed).model_fields}
        try:
            value = tool.fn(**kwargs)
            if inspect.isawaitable(value):
                value = await value
        except RETRYABLE as e:
            raise ToolFailed(
                f"tool {name!r} failed: {type(e).__name__}: {e}", retryable=True
            ) from e
        except Exception as e:
            raise ToolFailed(
                f"tool {name!r} failed: {type(e).__name__}: {e}", retryable=False
            ) from e
        try:
            json.dumps(value)
        except (TypeError, ValueError) as e:
            raise ToolFailed(f"tool {name!r} returned a value that is not JSON: {e}",
                             retryable=False) from e
        return value


def builtin_tools() -> ToolRegistry:
    """Return a registry holding the built-in tools."""
    registry = ToolRegistry()

    @registry.tool
    async def sleep(seconds: float) -> float:
        """Wait `seconds` (at most 540) and return how long was waited."""
        if not 0 <= seconds <= 540:  # under the tool timeout of 10 minutes
            raise ValueError("seconds must be between 0 and 540")
        await asyncio.sleep(seconds)
        return seconds

    @registry.tool
    def echo(value: Any) -> Any:
        """Return `value` unchanged."""
        return value

    @registry.tool
    def concat(parts: list[Any], separator: str = "") -> str:
        """Join the string form of every part with `separator`."""
        return separator.join(p if isinstance(p, str) else json.dumps(p) for p in parts)

    return registry



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

    async def list_specs(self, *, refresh: bool = False) -> tuple[list[ToolSpec], dict[str, str]]:
        """Return every tool's spec, asking MCP servers; and why a server's are missing."""
        if self.hub is None:
            return super().specs(), {}
        mcp_specs, problems = await self.hub.list_tools(refresh=refresh)
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


ToolFn = Callable[..., Any] | Callable[..., Awaitable[Any]]


def application_error(e: ToolError) -> ApplicationError:
    """Return the ApplicationError an activity raises for `e`, classified for the retry policy."""
    if isinstance(e, ToolFailed) and e.retryable:
        return ApplicationError(str(e), type="ToolUnavailable")
    return ApplicationError(str(e), type=type(e).__name__, non_retryable=True)


class ToolActivities:
    """Tool activities over a registry or Toolbox; the worker gives it the tools and the store.

    `run_tool_step` runs a plan's tool step (function or MCP tool); `call_tool` is one tool
    call (an agent's) whose big output goes to PostgreSQL; `list_tools` gives the specs.
    """

    def __init__(self, registry: ToolRegistry, book: StepBook, *,
                 inline_limit: int = INLINE_OUTPUT_LIMIT) -> None:
        self.registry = registry
        self.toolbox = as_toolbox(registry)
        self.book = book
        self.inline_limit = inline_limit

    @activity.defn(name="run_tool_step")
    async def run_tool_step(self, run: StepRun) -> StepOutcome:
        """Call the step's tool with its arguments (dependencies' outputs substituted)."""
        started = datetime.now(UTC)
        if done := await self.book.begin(run):
            return done
        tool = run.step.tool or ""
        try:
            args = substitute_inputs(run.step.args, await self.book.full_inputs(run))
            value = await self.toolbox.call(tool, args)
        except ToolError as e:
            raise application_error(e) from e
        result = Result(success=True, output=value, summary=summarize(value))
        return await self.book.finish(run, result=result, started=started)

    @activity.defn(name="call_tool")
    async def call_tool(self, inp: ToolCallInput) -> ToolCallResult:
        """Call one tool; an output too big for history is stored and previewed.

        The full output of a big result is kept as blob `call_blob_id(...)`, the same id on
        every attempt, so a retry stores nothing twice and previews what was kept.
        """
        try:
            value = await self.toolbox.call(inp.name, inp.args)
        except ToolError as e:
            err = application_error(e)
            if inp.return_errors and err.non_retryable:
                return ToolCallResult(ok=False, error=str(e), error_type=err.type)
            raise err from e
        text = output_json(value)
        if len(text) <= self.inline_limit:
            return ToolCallResult(ok=True, preview=value)
        ref = call_blob_id(inp.task_id, inp.subtask_id, inp.call_id)
        store = self.book.store
        await store.save_blob(ref, task_id=inp.task_id, subtask=inp.subtask_id or None,
                              name=inp.name, mime="application/json", data=text.encode())
        kept = json.loads(await store.get_blob(ref))
        shown, truncated = preview(kept, limit=self.inline_limit)
        return ToolCallResult(ok=True, preview=shown, truncated=truncated, ref=ref)

    @activity.defn(name="list_tools")
    async def list_tools(self, inp: ListToolsInput) -> ToolList:
        """Return every tool's spec; MCP servers that cannot be reached are named."""
        specs, problems = await self.toolbox.list_specs(refresh=inp.refresh)
        return ToolList(tools=specs, problems=problems)
