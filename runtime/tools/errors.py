"""The tool errors, one tree for function tools and MCP tools alike.

    ToolError
    ├── UnknownTool        no tool has that name (the caller's mistake, never retried)
    ├── BadToolArguments   the arguments do not fit the tool's schema (never retried)
    └── ToolFailed         the tool itself failed; `retryable` says whether another try
                           may help (a dead or unreachable MCP server, a timeout: yes; an
                           error the tool reported: no)

``activities.errors`` turns them into ApplicationErrors of the same names, except a
retryable ToolFailed, which becomes type "ToolUnavailable" so the retry policy retries it.
"""

from __future__ import annotations


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
