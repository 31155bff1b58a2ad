"""The tool errors, one tree for function tools and MCP tools alike.

    ToolError
    ├── UnknownTool        no tool has that name (the caller's mistake, never retried)
    ├── BadToolArguments   the arguments do not fit the tool's schema (never retried)
    └── ToolFailed         the tool itself failed; `retryable` says whether another try
        │                  may help (a dead or unreachable MCP server, a timeout: yes; an
        │                  error the tool reported: no)
        └── ToolUnavailable  a configured MCP server is not up (starting, stuck, or gone);
                             always retryable, names the server

``activities.errors`` turns them into ApplicationErrors of the same names, except a
retryable ToolFailed, which becomes type "ToolUnavailable" so the retry policy retries it.
"""

from __future__ import annotations


def failed(name: str, kind: str, message: str) -> str:
    """Return the sentence for tool `name` failing with a `kind` error saying `message`.

    A blank message is said to be blank, with its kind, so that a log or a step's record
    never shows a failure that says nothing.
    """
    if message.strip():
        return f"tool {name!r} failed: {kind}: {message}"
    return f"tool {name} failed with an empty error message ({kind})"


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


class ToolUnavailable(ToolFailed):
    """A configured MCP server is not up; another try, later, may find it up."""

    def __init__(self, message: str, *, server: str) -> None:
        super().__init__(message, retryable=True)
        self.server = server
