"""A model's context window, and prompts fitted into it by cutting the largest contents."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from models.usage import UsageError
from runtime.llm.tokens import by_model, count_messages, encoding_for, truncate_middle


class ContextOverflow(UsageError):
    """The messages need `needed` tokens but only `available` fit, after truncation."""

    def __init__(self, message: str, *, needed: int, available: int) -> None:
        self.needed = needed
        self.available = available
        super().__init__(message)


# Known context windows in tokens, by model name or name prefix (a prefix matches up to
# a "-" or ":", so "gpt-4o-2024-08-06" is gpt-4o and "llama3:8b" is llama3).
_CONTEXT_LIMITS: dict[str, int] = {
    "gpt-4o": 128_000,
    "gpt-4o-mini": 128_000,
    "chatgpt-4o": 128_000,
    "gpt-4.1": 1_047_576,
    "gpt-4.1-mini": 1_047_576,
    "gpt-4.1-nano": 1_047_576,
    "gpt-4-turbo": 128_000,
    "gpt-4": 8_192,
    "gpt-4-32k": 32_768,
    "gpt-3.5-turbo": 16_385,
    "o1": 200_000,
    "o3": 200_000,
    "o3-mini": 200_000,
    "o4-mini": 200_000,
    "gpt-5": 400_000,
    "llama3": 8_192,
    "llama-3": 8_192,
    "llama3.1": 131_072,
    "llama3.2": 131_072,
    "llama3.3": 131_072,
    "qwen2.5": 32_768,
    "mistral": 32_768,
}
DEFAULT_CONTEXT_LIMIT = 8_192


def context_limit(model: str, *, override: int | None = None) -> int:
    """Return the context window of `model` in tokens: `override`, the table, or 8192."""
    if override is not None:
        return override
    limit: int | None = by_model(_CONTEXT_LIMITS, model)
    return DEFAULT_CONTEXT_LIMIT if limit is None else limit


_PROTECTED_ROLES = {"system", "developer"}
_MIN_KEEP = 24  # tokens a truncated content keeps at least: the marker and a little text


def fit_messages(
    messages: Sequence[Mapping[str, Any]],
    *,
    model: str,
    limit: int | None = None,
    reserve_for_reply: int = 0,
    tools: Sequence[Mapping[str, Any]] | None = None,
) -> list[dict[str, Any]]:
    """Return copies of `messages` whose prompt fits `limit - reserve_for_reply` tokens.

    The largest contents (tool outputs, dependency outputs, files) are cut in the middle
    first, down to a common ceiling, until the prompt fits. System and developer
    messages and the last user message are never changed, and no message is dropped
    (dropping one could orphan a tool call from its result). `limit` defaults to
    `context_limit(model)`.

    Raises:
        ContextOverflow: the prompt cannot fit even with every other content cut short.
    """
    enc = encoding_for(model)
    window = context_limit(model) if limit is None else limit
    available = window - reserve_for_reply
    out = [dict(m) for m in messages]
    total = count_messages(out, model, tools=tools)
    if total <= available:
        return out

    last_user = max((i for i, m in enumerate(out) if m.get("role") == "user"), default=-1)
    # Truncatable pieces: (message index, part index or None for a string content).
    sizes: dict[tuple[int, int | None], int] = {}
    for i, m in enumerate(out):
        if i == last_user or m.get("role") in _PROTECTED_ROLES:
            continue
        content = m.get("content")
        if isinstance(content, str):
            sizes[(i, None)] = len(enc.encode_ordinary(content))
        elif isinstance(content, list):
            for j, part in enumerate(content):
                if isinstance(part, Mapping) and isinstance(part.get("text"), str):
                    sizes[(i, j)] = len(enc.encode_ordinary(part["text"]))
    fixed = total - sum(sizes.values())
    floor_total = fixed + sum(min(s, _MIN_KEEP) for s in sizes.values())
    if floor_total > available:
        raise ContextOverflow(
            f"prompt for {model} needs at least {floor_total} tokens with every "
            f"truncatable content cut to {_MIN_KEEP} tokens (system and last user messages "
            f"and framing: {fixed}), but the limit {window} minus {reserve_for_reply} "
            f"reserved for the reply leaves {available}",
            needed=floor_total,
            available=available,
        )

    excess = total - available
    for _ in range(8):
        cap = _ceiling(list(sizes.values()), excess)
        for key, size in sizes.items():
            if size > cap:
                _set_text(out, key, truncate_middle(_text_at(out, key), cap, model))
                sizes[key] = len(enc.encode_ordinary(_text_at(out, key)))
        total = count_messages(out, model, tools=tools)
        if total <= available:
            return out
        excess = total - available
    raise ContextOverflow(  # pragma: no cover - the ceiling converges in one or two rounds
        f"could not fit the prompt for {model} into {available} tokens (still {total})",
        needed=total,
        available=available,
    )


def _ceiling(sizes: list[int], excess: int) -> int:
    """Return the largest cap such that cutting every size above it frees `excess`."""
    lo, hi = _MIN_KEEP, max(sizes, default=_MIN_KEEP)
    while lo < hi:
        mid = (lo + hi + 1) // 2
        if sum(s - mid for s in sizes if s > mid) >= excess:
            lo = mid
        else:
            hi = mid - 1
    return lo


def _text_at(out: list[dict[str, Any]], key: tuple[int, int | None]) -> str:
    i, j = key
    if j is None:
        return str(out[i]["content"])
    return str(out[i]["content"][j]["text"])


def _set_text(out: list[dict[str, Any]], key: tuple[int, int | None], text: str) -> None:
    i, j = key
    if j is None:
        out[i]["content"] = text
        return
    parts = list(out[i]["content"])  # a copy: the caller's message keeps its parts
    parts[j] = {**parts[j], "text": text}
    out[i]["content"] = parts
