"""How big a value is as Temporal carries it, and the cap every input is held to.

Temporal refuses a payload over 2 MB ("Blob data size exceeds limit") and warns above
256 KB. BeesTown keeps what it sends well below: every entry point (starter, the CLI's
updates and signals, a model's plan) calls ``check_payload`` before sending and refuses a
bigger value with ``PayloadTooLarge``, naming its size, the limit and its biggest part.
Big content produced while running (step and tool outputs) goes to PostgreSQL and travels
as a preview; error texts are cut with ``cut_text``.

Sizes are measured as the pydantic data converter writes them: ``pydantic_core.to_json``.
"""

from __future__ import annotations

from typing import Any

import pydantic_core

# Temporal's hard limit is 2 MB per payload; leave room for the envelope and for the other
# payloads that travel in the same request (a workflow task's commands).
PAYLOAD_LIMIT = 1_500_000
# An error or summary travels through history in failures and results: kept to this many
# characters, head and tail (the full text stays in PostgreSQL).
TEXT_LIMIT = 8_192


class PayloadTooLarge(ValueError):
    """A value too big to send to Temporal; `size` and `limit` in bytes of JSON."""

    def __init__(self, what: str, size: int, limit: int, biggest: str = "") -> None:
        self.what, self.size, self.limit, self.biggest = what, size, limit, biggest
        super().__init__(
            f"{what} is {megabytes(size)} as JSON, more than the limit of {megabytes(limit)} "
            "that BeesTown sends to Temporal (which refuses 2 MB)"
            + (f"; the biggest part is {biggest}" if biggest else "")
            + ". Keep large data in a file or a tool's output, not in the input itself")


def megabytes(n: int) -> str:
    return f"{n / 1_000_000:.2f} MB ({n:,} bytes)"


def payload_size(value: Any) -> int:
    """Return the size in bytes of `value` as the pydantic data converter serializes it."""
    return len(pydantic_core.to_json(value))


def check_payload(value: Any, *, what: str, limit: int = PAYLOAD_LIMIT) -> int:
    """Return the payload size of `value`, or raise PayloadTooLarge if it exceeds `limit`."""
    size = payload_size(value)
    if size > limit:
        raise PayloadTooLarge(what, size, limit, biggest_part(value))
    return size


def biggest_part(value: Any) -> str:
    """Return the path and size of the largest string or number in `value` ("steps.0.code
    (3.00 MB ...)"), to tell a person what to move out."""
    data = pydantic_core.to_jsonable_python(value)
    best: tuple[int, str] = (0, "")
    stack: list[tuple[str, Any]] = [("", data)]
    while stack:
        path, node = stack.pop()
        if isinstance(node, dict):
            stack += [(f"{path}.{k}" if path else str(k), v) for k, v in node.items()]
        elif isinstance(node, list):
            stack += [(f"{path}.{i}" if path else str(i), v) for i, v in enumerate(node)]
        else:
            size = len(pydantic_core.to_json(node))
            if size > best[0]:
                best = (size, path)
    return f"{best[1] or 'the value'} ({megabytes(best[0])})" if best[0] else ""


def cut_text(text: str, limit: int = TEXT_LIMIT) -> str:
    """Return `text`, or its head and tail around a marker saying how much was left out."""
    if len(text) <= limit:
        return text
    half = limit // 2
    return f"{text[:half]}\n…[{len(text) - 2 * half:,} characters cut]…\n{text[-half:]}"
