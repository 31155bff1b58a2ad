"""Tools: the MCP servers a worker is configured with, tool specs, and tool-call I/O."""

from __future__ import annotations

import json
import re
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

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
    timeout_s: float = Field(60.0, gt=0, le=3600,
                             description="seconds a call may take; also the start's, unless "
                             "start_timeout_s says otherwise")
    start_timeout_s: float | None = Field(
        None, gt=0, le=3600,
        description="seconds the server gets to start (spawn, initialize, list its tools) "
        "before it counts as down for now; null: timeout_s")

    @property
    def start_timeout(self) -> float:
        """Seconds the server gets to start."""
        return self.start_timeout_s if self.start_timeout_s is not None else self.timeout_s

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
