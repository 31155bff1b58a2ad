"""What an MCP server offers, as BeesTown sees it: its listed tools, indexed with their
input-schema validators, and a call's result turned into a value."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

import jsonschema
import mcp.types as mt

from models.tools import McpServerConfig, ToolSpec
from runtime.tools.errors import ToolFailed, failed

log = logging.getLogger("runtime.tools.mcp")


@dataclass
class McpTool:
    """One tool a server lists: its spec (namespaced by server) and argument validator."""

    spec: ToolSpec
    validator: jsonschema.protocols.Validator | None


def index_tools(cfg: McpServerConfig, listed: list[mt.Tool]) -> dict[str, McpTool]:
    """Return the tools of `listed` the server's allow list lets through, by MCP name,
    each with a validator of its input schema (None, and a warning, when it is invalid)."""
    allow = set(cfg.allow) if cfg.allow is not None else None
    offered = {t.name for t in listed}
    if allow is not None and allow - offered:
        log.warning("MCP server %s offers no tool named %s", cfg.name,
                    ", ".join(sorted(allow - offered)))
    out: dict[str, McpTool] = {}
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
        out[t.name] = McpTool(
            ToolSpec(name=f"{cfg.name}.{t.name}",
                     description=t.description or t.title or "", parameters=schema),
            validator,
        )
    return out


def value_of(name: str, result: mt.CallToolResult) -> Any:
    """Return a call's result as a value (structured content, one text, or the content
    list); raise ToolFailed for an error result, saying so when its message is empty."""
    texts = [c.text for c in result.content if isinstance(c, mt.TextContent)]
    if result.is_error:
        message = " ".join(t for t in texts if t.strip())
        if message:
            raise ToolFailed(f"tool {name!r} failed: {message}", retryable=False)
        raise ToolFailed(failed(name, "an MCP error result", ""), retryable=False)
    if result.structured_content is not None:
        return result.structured_content
    if len(result.content) == 1 and len(texts) == 1:
        return texts[0]
    return [c.model_dump(mode="json", by_alias=True, exclude_none=True) for c in result.content]

