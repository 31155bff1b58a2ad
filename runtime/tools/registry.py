"""Function tools: Python functions whose arguments are described by their type hints
and docstring and validated by pydantic, by name; and the built-in tools."""

from __future__ import annotations

import asyncio
import inspect
import json
import re
from collections.abc import Callable, Collection, Iterator
from dataclasses import dataclass
from typing import Any, get_type_hints

from pydantic import BaseModel, ConfigDict, ValidationError, create_model

from models.tools import ToolSpec
from runtime.documents import describe
from runtime.tools.errors import BadToolArguments, ToolFailed, UnknownTool, failed


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

    def knows(self, name: str) -> bool:
        """Tell whether a plan may name tool `name` (checked before any step runs)."""
        return name in self._tools

    def menu(self) -> list[str]:
        """Return the tool names to offer a planner, one line each."""
        return self.names()

    def known(self) -> KnownTools:
        """Return the tools a plan may name now, as a plan check asks (`name in known`)."""
        return KnownTools(self)

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
            raise BadToolArguments(f"tool {name!r}: {describe(e)}") from e
        kwargs = {k: getattr(parsed, k) for k in type(parsed).model_fields}
        try:
            value = tool.fn(**kwargs)
            if inspect.isawaitable(value):
                value = await value
        except RETRYABLE as e:
            raise ToolFailed(failed(name, type(e).__name__, str(e)), retryable=True) from e
        except Exception as e:
            raise ToolFailed(failed(name, type(e).__name__, str(e)), retryable=False) from e
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


class KnownTools(Collection[str]):
    """The tools a plan may name, as `models.plan.graph_errors` asks: membership is the
    registry's `knows` (a configured MCP server's tools count while it is still starting),
    iteration lists its `menu`. Asked afresh each time: servers come up while a worker runs.
    """

    def __init__(self, registry: ToolRegistry) -> None:
        self._registry = registry

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and self._registry.knows(name)

    def __iter__(self) -> Iterator[str]:
        return iter(self._registry.menu())

    def __len__(self) -> int:
        return len(self._registry.menu())
