"""The LLM: an OpenAI-compatible endpoint, the plan splitter and the text steps.

Temporal owns retries, so the client never retries by itself. Failures are classified:
the network, timeouts, rate limits and 5xx raise as they are (retryable); a request the
server refuses raises ApplicationError(type="LLMRequestRejected", non_retryable=True).
"""

from __future__ import annotations

import contextlib
import email.utils
import logging
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import openai
from openai import AsyncOpenAI
from openai.types.chat import ChatCompletionMessageFunctionToolCall
from temporalio import activity
from temporalio.exceptions import ApplicationError

from activities.store import Store
from activities.tokens import cost_usd, count_messages
from models.io import SplitInput, SplitResult
from models.plan import InvalidPlan, Plan, parse_plan_text
from models.task import Metrics, StepType
from models.usage import Budget, Price

log = logging.getLogger(__name__)

_FORMAT_MODES = ("json_schema", "json_object", "none")


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
        # The client refuses an empty key even for local servers that ignore it.
        self.client = AsyncOpenAI(
            base_url=base_url, api_key=api_key or "unused", max_retries=0, timeout=timeout_s
        )
        self.model = model
        self._format = 0  # index into _FORMAT_MODES; steps down when a server refuses one

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
                raise ApplicationError("LLM reply has no choices", type="BadLLMReply")
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
    """Return `llm`, or raise the non-retryable error that says how to configure one."""
    if llm is None:
        raise ApplicationError(
            "no LLM endpoint is configured on the worker: set OPENAI_BASE_URL (and "
            "OPENAI_API_KEY, BEESTOWN_MODEL)" + (f", {hint}" if hint else ""),
            type="LLMNotConfigured",
            non_retryable=True,
        )
    return llm


def _rejected(e: openai.APIStatusError) -> ApplicationError:
    return ApplicationError(
        f"LLM server refused the request ({e.status_code}): {e.message}",
        type="LLMRequestRejected",
        non_retryable=True,
    )


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


def _retry_later(e: openai.APIStatusError) -> ApplicationError:
    """A refusal a retry may cure (429, 5xx): retryable, after Retry-After when given."""
    wait = retry_after(e.response.headers)
    return ApplicationError(
        f"LLM server answered {e.status_code}: {e.message}"
        + (f" (retry after {wait:g} s)" if wait is not None else ""),
        type="LLMRateLimited" if e.status_code == 429 else "LLMServerError",
        next_retry_delay=(timedelta(seconds=min(wait, MAX_RETRY_AFTER_S))
                          if wait is not None else None),
    )


SPLIT_SYSTEM = """You split a job into a dependency graph of steps for BeesTown.
Reply with one JSON object and nothing else: {{"title": str, "steps": [step, ...]}}.
A step is {{"id": str (letters, digits, _ . -), "type": "search"|"code"|"tool"|"write",
"title": str, "description": str, "deps": [ids of steps whose output it needs],
"skills": [skills the step needs], "assignee": optional agent id}}.
A code step also has "code": Python source; it reads dependencies' outputs from the dict
`inputs` (keyed by step id) and prints its output. A tool step has "tool" (one of: {tools})
and "args" (an object; the string "${{step_id}}" stands for that dependency's output).
Use at most {max_steps} steps. No cycles; every dep must be the id of another step."""

REPAIR = """Your plan cannot run:
{errors}
Reply with the corrected plan as one JSON object, nothing else."""


class LLMActivities:
    """Activities that talk to the model; `llm` is None when no endpoint is configured."""

    def __init__(
        self, *, llm: LLM | None, store: Store, tool_names: list[str],
        prices: Mapping[str, Price] | None = None,
    ) -> None:
        self.llm = llm
        self.store = store
        self.tool_names = tool_names
        self.prices = prices

    def _require_llm(self) -> LLM:
        return require_llm(self.llm, hint="or run an explicit plan with --plan FILE")

    def _plan_errors(self, text: str, max_steps: int) -> tuple[Plan | None, list[str]]:
        try:
            plan = parse_plan_text(text, max_steps=max_steps)
        except InvalidPlan as e:
            return None, e.errors
        unknown = [
            f"step {s.id!r} names unknown tool {s.tool!r}"
            for s in plan.steps
            if s.type is StepType.TOOL and s.tool not in self.tool_names
        ]
        return (None, unknown) if unknown else (plan, [])

    @activity.defn(name="split_task")
    async def split_task(self, inp: SplitInput) -> SplitResult:
        """Ask the model for a plan; one repair round trip; InvalidPlan if it still fails."""
        llm = self._require_llm()
        info = activity.info()
        messages: list[dict[str, Any]] = [
            {
                "role": "system",
                "content": SPLIT_SYSTEM.format(
                    tools=", ".join(self.tool_names) or "none", max_steps=inp.max_steps
                ) + (f"\n\n{inp.manager_context}" if inp.manager_context else ""),
            },
            {"role": "user", "content": inp.prompt},
        ]
        metrics = Metrics()
        errors: list[str] = []
        budget = Budget(max_tokens=inp.token_budget, scope="task")
        for round_no in (1, 2):
            budget.check(await self.store.tokens_used(inp.task_id.split("/", 1)[0]),
                         count_messages(messages, llm.model))
            reply = await llm.complete(messages, schema=Plan.model_json_schema())
            key = f"{info.workflow_id}/{info.activity_id}/{info.attempt}/{round_no}"
            cost = cost_usd(llm.model, reply.prompt_tokens, reply.completion_tokens, self.prices)
            await self.store.record_usage(
                key, task_id=inp.task_id, subtask=None, model=llm.model,
                prompt_tokens=reply.prompt_tokens, completion_tokens=reply.completion_tokens,
                cost_usd=cost, purpose="split",
            )
            metrics.prompt_tokens += reply.prompt_tokens
            metrics.completion_tokens += reply.completion_tokens
            metrics.tokens_used = metrics.prompt_tokens + metrics.completion_tokens
            metrics.cost_usd += cost
            plan, errors = self._plan_errors(reply.text, inp.max_steps)
            await self.store.record_llm_output(
                key, task_id=inp.task_id, subtask=None, purpose="split", model=llm.model,
                raw=reply.text, valid=plan is not None, errors=errors,
            )
            if plan is not None:
                return SplitResult(plan=plan, rounds=round_no, metrics=metrics)
            log.warning("split round %d gave an invalid plan: %s", round_no, errors)
            messages += [
                {"role": "assistant", "content": reply.text},
                {"role": "user", "content": REPAIR.format(errors="\n".join(errors))},
            ]
        raise ApplicationError(
            "the model's plan is invalid after one repair round: " + "; ".join(errors),
            {"errors": errors},
            type="InvalidPlan",
            non_retryable=True,
        )
