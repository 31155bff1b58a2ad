"""The model client: one OpenAI-compatible endpoint and model, structured output where supported.

Temporal owns retries, so the client never retries by itself (``max_retries=0``).
Failures are classified; the network, timeouts, rate limits and 5xx raise as the openai
package raises them (retryable). The rest is one tree, turned into ApplicationErrors of
the same names by ``activities.errors``::

    LLMError
    ├── LLMNotConfigured     no endpoint is configured on this worker (permanent)
    ├── LLMRequestRejected   the server refused the request: 400/401/403/404 (permanent)
    ├── LLMRetryLater        429 or 5xx: retryable, after the server's Retry-After if given
    └── BadLLMReply          the reply is empty or says nothing usable (retryable)
"""

from __future__ import annotations

import contextlib
import email.utils
import logging
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from functools import cached_property
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # imported where first used: the SDK costs ~0.7 s of a worker's start
    import openai
    from openai import AsyncOpenAI

log = logging.getLogger(__name__)

_FORMAT_MODES = ("json_schema", "json_object", "none")


class LLMError(Exception):
    """Base of the model client's own errors."""


class LLMNotConfigured(LLMError):
    """A model call on a worker with no endpoint configured."""


class LLMRequestRejected(LLMError):
    """The model server refused the request; sending it again cannot help."""


class LLMRetryLater(LLMError):
    """The server is busy or failing (429, 5xx); a later try may work.

    `wait_s` is what its `retry-after-ms` / `Retry-After` asked for (None: it did not say),
    capped at `MAX_RETRY_AFTER_S`; `rate_limited` tells a 429 from a 5xx."""

    def __init__(self, message: str, *, wait_s: float | None, rate_limited: bool) -> None:
        super().__init__(message)
        self.wait_s = wait_s
        self.rate_limited = rate_limited


class BadLLMReply(LLMError):
    """The model answered, but with nothing usable; another try may do better."""


@dataclass
class ToolCall:
    id: str
    name: str
    arguments: str


@dataclass
class Reply:
    text: str
    prompt_tokens: int = 0
    completion_tokens: int = 0
    tool_calls: list[ToolCall] = field(default_factory=list)


class LLM:
    """One OpenAI-compatible endpoint and model, with structured output where supported."""

    def __init__(
        self, *, base_url: str | None, api_key: str | None, model: str, timeout_s: float
    ) -> None:
        self._base_url = base_url
        self._api_key = api_key
        self._timeout_s = timeout_s
        self.model = model
        self._format = 0  # index into _FORMAT_MODES; steps down when a server refuses one

    @cached_property
    def client(self) -> AsyncOpenAI:
        """The OpenAI SDK's client, made at the first call (importing the SDK then)."""
        from openai import AsyncOpenAI

        # The client refuses an empty key even for local servers that ignore it.
        return AsyncOpenAI(base_url=self._base_url, api_key=self._api_key or "unused",
                           max_retries=0, timeout=self._timeout_s)

    async def complete(
        self,
        messages: list[dict[str, Any]],
        *,
        schema: dict[str, Any] | None = None,
        tools: list[dict[str, Any]] | None = None,
    ) -> Reply:
        """Return the model's reply; with `schema`, ask for JSON in the best way it accepts.

        `tools` are OpenAI function-tool definitions; the reply may then carry tool calls.
        """
        import openai
        from openai.types.chat import ChatCompletionMessageFunctionToolCall

        while True:
            mode = _FORMAT_MODES[self._format] if schema is not None else "none"
            kwargs: dict[str, Any] = {}
            if tools:
                kwargs["tools"] = tools
            if mode == "json_schema" and schema is not None:
                kwargs["response_format"] = {
                    "type": "json_schema",
                    "json_schema": {"name": "plan", "schema": schema},
                }
            elif mode == "json_object":
                kwargs["response_format"] = {"type": "json_object"}
            try:
                resp = await self.client.chat.completions.create(
                    model=self.model, messages=messages, **kwargs  # type: ignore[arg-type]
                )
            except (openai.BadRequestError, openai.UnprocessableEntityError) as e:
                refused_format = any(
                    w in str(e.message).lower() for w in ("response_format", "json_schema",
                                                          "json_object", "response format"))
                if (refused_format and mode != "none"
                        and self._format < len(_FORMAT_MODES) - 1):
                    log.warning(
                        "LLM server refused response_format %s (%s); falling back to %s",
                        mode, e.status_code, _FORMAT_MODES[self._format + 1],
                    )
                    self._format += 1
                    continue
                raise _rejected(e) from e
            except (openai.AuthenticationError, openai.PermissionDeniedError,
                    openai.NotFoundError) as e:
                raise _rejected(e) from e
            except openai.APIStatusError as e:  # 429, 5xx: retried, when the server says
                raise _retry_later(e) from e
            if not resp.choices:
                raise BadLLMReply("LLM reply has no choices")
            message = resp.choices[0].message
            usage = resp.usage
            return Reply(
                text=message.content or "",
                prompt_tokens=usage.prompt_tokens if usage else 0,
                completion_tokens=usage.completion_tokens if usage else 0,
                tool_calls=[
                    ToolCall(id=c.id, name=c.function.name, arguments=c.function.arguments or "")
                    for c in message.tool_calls or []
                    if isinstance(c, ChatCompletionMessageFunctionToolCall)
                ],
            )


def require_llm(llm: LLM | None, *, hint: str = "") -> LLM:
    """Return `llm`, or raise LLMNotConfigured saying how to configure one."""
    if llm is None:
        raise LLMNotConfigured(
            "no LLM endpoint is configured on the worker: set OPENAI_BASE_URL (and "
            "OPENAI_API_KEY, BEESTOWN_MODEL)" + (f", {hint}" if hint else "")
        )
    return llm


# A Retry-After longer than this is not waited for in one go (the retry asks again).
MAX_RETRY_AFTER_S = 300.0


def retry_after(headers: Mapping[str, str]) -> float | None:
    """Seconds the server asked us to wait (`retry-after-ms`, `retry-after`: seconds or an
    HTTP date), or None."""
    if (ms := headers.get("retry-after-ms")) is not None:
        with contextlib.suppress(ValueError):
            return max(0.0, float(ms) / 1000)
    value = headers.get("retry-after")
    if value is None:
        return None
    with contextlib.suppress(ValueError):
        return max(0.0, float(value))
    with contextlib.suppress(TypeError, ValueError):
        when = email.utils.parsedate_to_datetime(value)
        return max(0.0, (when - datetime.now(UTC)).total_seconds())
    return None


def _retry_later(e: openai.APIStatusError) -> LLMRetryLater:
    wait = retry_after(e.response.headers)
    return LLMRetryLater(
        f"LLM server answered {e.status_code}: {e.message}"
        + (f" (retry after {wait:g} s)" if wait is not None else ""),
        wait_s=min(wait, MAX_RETRY_AFTER_S) if wait is not None else None,
        rate_limited=e.status_code == 429)


def _rejected(e: openai.APIStatusError) -> LLMRequestRejected:
    return LLMRequestRejected(f"LLM server refused the request ({e.status_code}): {e.message}")
