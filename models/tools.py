"""Tools: the MCP servers a worker is configured with, tool specs, and tool-call I/O."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

# A server's name prefixes its tools (`time.get_current_time`), so it cannot hold a dot.
SERVER_NAME_PATTERN = r"^[A-Za-z][A-Za-z0-9_-]{0,31}$"
ENV_NAME_PATTERN = r"^[A-Za-z_][A-Za-z0-9_]*$"


class InvalidToolsConfig(ValueError):
    """A tools file that cannot be used; `errors` names each bad entry, one sentence each."""

    def __init__(self, errors: list[str]) -> None:
        self.errors = errors
        super().__init__("invalid tools configuration: " + "; ".join(errors))


class McpServerConfig(BaseModel):
    """One MCP server: a command run over stdio, or a streamable-HTTP endpoint."""

    model_config = ConfigDict(extra="forbid")

    name: str = Field(pattern=SERVER_NAME_PATTERN)
    transport: Literal["stdio", "http"]
    command: str | None = None
    args: list[str] = Field(default_factory=list)
    url: str | None = None
    env: dict[str, str] = Field(
        default_factory=dict,
        description="the stdio server's whole environment besides PATH and HOME",
    )
    allow: list[str] | None = Field(
        None, description="the server's tools to expose (unprefixed names); null: all"
    )
    timeout_s: float = Field(60.0, gt=0, le=3600)

    @model_validator(mode="after")
    def _fits_transport(self) -> McpServerConfig:
        if self.transport == "stdio":
            if not self.command:
                raise ValueError("a stdio server needs a command")
            if "=" in self.command:
                raise ValueError("command must not contain '='")
            if self.url:
                raise ValueError("a stdio server takes no url")
        else:
            if not self.url or not self.url.startswith(("http://", "https://")):
                raise ValueError("an http server needs an http:// or https:// url")
            if self.command or self.args or self.env:
                raise ValueError("an http server takes no command, args or env")
        bad = [k for k in self.env if not _is_env_name(k)]
        if bad:
            raise ValueError(f"env names must be identifiers: {', '.join(bad)}")
        return self


def _is_env_name(name: str) -> bool:
    return re.fullmatch(ENV_NAME_PATTERN, name) is not None


class ToolsConfig(BaseModel):
    """The `tools` section of a tools file: the MCP servers to register."""

    model_config = ConfigDict(extra="forbid")

    tools: list[McpServerConfig] = Field(default_factory=list)

    @model_validator(mode="after")
    def _unique_names(self) -> ToolsConfig:
        seen: set[str] = set()
        for server in self.tools:
            if server.name in seen:
                raise ValueError(f"server name {server.name!r} is used more than once")
            seen.add(server.name)
        return self


def parse_tools_config(data: Any, *, source: str = "tools config") -> ToolsConfig:
    """Return the validated config in decoded YAML/JSON, or raise InvalidToolsConfig."""
    if data is None:
        data = {}
    try:
        return ToolsConfig.model_validate(data)
    except ValidationError as e:
        raise InvalidToolsConfig([_describe(err, data, source) for err in e.errors()]) from e


def _describe(err: Any, data: Any, source: str) -> str:
    loc = list(err["loc"])
    where = source
    if len(loc) >= 2 and loc[0] == "tools" and isinstance(loc[1], int):
        index = loc[1]
        entries = data.get("tools") if isinstance(data, dict) else None
        name = None
        if isinstance(entries, list) and index < len(entries) and isinstance(entries[index], dict):
            name = entries[index].get("name")
        where = f"{source}: tools[{index}]" + (f" ({name!r})" if name else "")
        loc = loc[2:]
    else:
        where = f"{source}:"
    field = ".".join(str(p) for p in loc)
    msg = str(err["msg"]).removeprefix("Value error, ")
    return f"{where} {field + ': ' if field else ''}{msg}"


def load_tools_config(path: Path) -> ToolsConfig:
    """Return the validated config in a YAML or JSON file, or raise InvalidToolsConfig."""
    try:
        text = path.read_text()
    except OSError as e:
        raise InvalidToolsConfig([f"cannot read tools file {path}: {e.strerror}"]) from e
    try:
        data = yaml.safe_load(text)  # YAML is a superset of JSON
    except yaml.YAMLError as e:
        raise InvalidToolsConfig([f"{path} is neither YAML nor JSON: {e}"]) from e
    return parse_tools_config(data, source=str(path))


class ToolSpec(BaseModel):
    """A tool as an LLM's tool calling sees it: a name, what it does, its JSON schema."""

    name: str
    description: str = ""
    parameters: dict[str, Any] = Field(default_factory=dict)


class ListToolsInput(BaseModel):
    refresh: bool = Field(False, description="ask every MCP server for its tools again")


class ToolList(BaseModel):
    tools: list[ToolSpec] = Field(default_factory=list)
    problems: dict[str, str] = Field(
        default_factory=dict, description="server name -> why its tools are missing"
    )


class ToolCallInput(BaseModel):
    """Activity input: call one tool once; `call_id` is unique within the subtask."""

    task_id: str
    subtask_id: str = ""
    call_id: str
    name: str
    args: dict[str, Any] = Field(default_factory=dict)
    return_errors: bool = Field(
        False,
        description="report permanent failures (unknown tool, bad arguments, a tool error) "
        "as ok=False instead of failing the activity; retryable ones always raise",
    )


class ToolCallResult(BaseModel):
    """What history carries of a tool call: the value, or a preview and a blob id."""

    ok: bool
    preview: Any = None
    truncated: bool = False
    ref: str | None = Field(None, description="blob id of the full output when truncated")
    error: str | None = None
    error_type: str | None = None


def call_blob_id(task_id: str, subtask_id: str, call_id: str) -> str:
    """Return the deterministic blob id of a call's full output (a retry reuses it)."""
    return f"{subtask_id or task_id}/calls/{call_id}"


def output_json(value: Any) -> str:
    """Return the JSON text a tool output is measured and stored as."""
    return json.dumps(value, default=str)
