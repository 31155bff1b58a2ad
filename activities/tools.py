"""Function tools: declared from type hints and docstrings, arguments validated by pydantic.

Exception tree: ToolError is the base; UnknownTool and BadToolArguments are the caller's
mistakes (never retried), ToolFailed wraps an exception the tool itself raised.
"""

from __future__ import annotations

import asyncio
import inspect
import json
import re
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, get_type_hints

from pydantic import BaseModel, ConfigDict, ValidationError, create_model
from temporalio import activity
from temporalio.exceptions import ApplicationError

from activities.steps import StepBook, summarize
from models.io import StepOutcome, StepRun
from models.task import Result


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
        """Wait `seconds` (at most an hour) and return how long was waited."""
        if not 0 <= seconds <= 3600:
            raise ValueError("seconds must be between 0 and 3600")
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


class ToolActivities:
    """Runs `tool` steps from a registry; the worker gives it the registry and the store."""

    def __init__(self, registry: ToolRegistry, book: StepBook) -> None:
        self.registry = registry
        self.book = book

    @activity.defn(name="run_tool_step")
    async def run_tool_step(self, run: StepRun) -> StepOutcome:
        """Call the step's tool with its arguments (dependencies' outputs substituted)."""
        started = datetime.now(UTC)
        await self.book.begin(run)
        tool = run.step.tool or ""
        try:
            args = substitute_inputs(run.step.args, await self.book.full_inputs(run))
            value = await self.registry.call(tool, args)
        except ToolFailed as e:
            if e.retryable:
                raise
            raise ApplicationError(str(e), type="ToolFailed", non_retryable=True) from e
        except (UnknownTool, BadToolArguments) as e:
            raise ApplicationError(str(e), type=type(e).__name__, non_retryable=True) from e
        result = Result(success=True, output=value, summary=summarize(value))
        return await self.book.finish(run, result=result, started=started)
