"""The agent engine's activities: one model turn at a time, and code written by the model.

Each model call is its own activity, so a crash resumes at the last finished call. The
conversation is kept in PostgreSQL by position (`transcripts`): a turn reads the messages
before `seq`, appends its own, and a retried turn overwrites the same positions.
Every prompt is counted and fitted under the model's context before it is sent, and
every response's usage is recorded with its cost; budgets are checked before each call.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

from temporalio import activity
from temporalio.exceptions import ApplicationError

from activities.llm import LLM, Reply, require_llm
from activities.steps import StepBook, summarize
from activities.store import Store
from activities.tokens import (
    context_limit,
    cost_usd,
    count_messages,
    fit_messages,
    truncate_middle,
)
from activities.tools import Toolbox
from models.agent import (
    AgentTurnInput,
    AgentTurnResult,
    ToolCallRequest,
    ToolReply,
    WriteCodeInput,
    WriteCodeResult,
)
from models.io import Budgets, StepRun
from models.task import Metrics, Result
from models.tools import ToolSpec
from models.usage import Budget, Price

REPLY_RESERVE = 1024  # tokens kept free for the model's answer
MEMORY_LIMIT = 5

AGENT_SYSTEM = """You are an agent of BeesTown. You carry out one {type} step of a larger
job. Use the tools offered when they help; call several at once when they are
independent. When the step is done, answer with its result as plain text and call no tool."""

CODE_SYSTEM = """You write Python 3 code that runs in a sandbox with no network. A dict
named `inputs` holds the outputs of the steps this one depends on, keyed by step id. numpy,
pandas and matplotlib are available. Print the step's result, or assign it (JSON-able) to a
variable named `result`. Reply with the code only, in one ```python fenced block."""

_FENCE = re.compile(r"```(?:python|py)?\s*\n(.*?)```", re.DOTALL)


def root_task(task_id: str) -> str:
    """Return the top task of a (possibly nested) task id: the part before the first '/'."""
    return task_id.split("/", 1)[0]


def model_tool_name(name: str) -> str:
    """Return a tool name as OpenAI accepts it ([A-Za-z0-9_-]): dots become '__'."""
    return name.replace(".", "__")


def extract_code(text: str) -> str:
    """Return the code in a model's reply: the first fenced block, else the whole reply."""
    m = _FENCE.search(text)
    return (m.group(1) if m else text).strip()


class AgentActivities:
    """Model turns and code writing; `llm` is None when no endpoint is configured."""

    def __init__(
        self,
        *,
        llm: LLM | None,
        store: Store,
        book: StepBook,
        toolbox: Toolbox,
        prices: Mapping[str, Price] | None = None,
        context_override: int | None = None,
    ) -> None:
        self.llm = llm
        self.store = store
        self.book = book
        self.toolbox = toolbox
        self.prices = prices
        self.context_override = context_override

    def _require_llm(self) -> LLM:
        return require_llm(self.llm)

    async def check_budgets(self, run: StepRun, budgets: Budgets, more: int = 0) -> None:
        """Raise BudgetExceeded if `more` tokens would pass the task's or subtask's budget."""
        if budgets.task_tokens is not None:
            # A nested task (a manager's decomposition) spends from its root's budget.
            used = await self.store.tokens_used(root_task(run.task_id))
            Budget(max_tokens=budgets.task_tokens, scope="task").check(used, more)
        if budgets.subtask_tokens is not None:
            used = await self.store.tokens_used(run.task_id, run.subtask_id)
            Budget(max_tokens=budgets.subtask_tokens, scope=f"subtask {run.step.id}").check(
                used, more
            )

    async def _call(
        self, run: StepRun, budgets: Budgets, messages: list[dict[str, Any]], *,
        tools: list[dict[str, Any]] | None, key: str, purpose: str,
    ) -> tuple[Reply, Metrics]:
        """Fit, count, check the budget, call the model, record usage; return reply+metrics."""
        llm = self._require_llm()
        limit = context_limit(llm.model, override=self.context_override)
        fitted = fit_messages(messages, model=llm.model, limit=limit,
                              reserve_for_reply=REPLY_RESERVE, tools=tools)
        prompt_tokens = count_messages(fitted, llm.model, tools=tools)
        await self.check_budgets(run, budgets, more=prompt_tokens)
        reply = await llm.complete(fitted, tools=tools)
        cost = cost_usd(llm.model, reply.prompt_tokens, reply.completion_tokens, self.prices)
        attempt = activity.info().attempt
        await self.store.record_usage(
            f"{key}/{attempt}", task_id=run.task_id, subtask=run.subtask_id, model=llm.model,
            prompt_tokens=reply.prompt_tokens, completion_tokens=reply.completion_tokens,
            cost_usd=cost, purpose=purpose,
        )
        metrics = Metrics(
            prompt_tokens=reply.prompt_tokens, completion_tokens=reply.completion_tokens,
            tokens_used=reply.prompt_tokens + reply.completion_tokens, cost_usd=cost,
        )
        return reply, metrics

    async def context(self, run: StepRun) -> str:
        """Return what the agent is told: the job, its step, inputs and related memories."""
        task = await self.store.get_task(run.task_id)
        step = run.step
        parts = [f"# The job\n{task['prompt'] or task['title']}".strip()]
        parts.append(f"# Your step ({step.id})\n{step.title}\n{step.description}".strip())
        inputs = await self.book.full_inputs(run)
        for dep, value in inputs.items():
            text = value if isinstance(value, str) else json.dumps(value, default=str)
            parts.append(f"# Output of step {dep}\n{text}")
        query = f"{step.title} {step.description}".strip()
        memories = await self.store.recall(query, limit=MEMORY_LIMIT,
                                           exclude_subtask=run.subtask_id) if query else []
        if memories:
            parts.append("# Related results from earlier work\n" + "\n".join(
                f"- {m['title']}: {m['content']}" for m in memories))
        if run.feedback:
            parts.append("# Your reviewer rejected earlier attempts; address this\n" +
                         "\n".join(f"- {f}" for f in run.feedback))
        return "\n\n".join(parts)

    async def _tool_definitions(self) -> tuple[list[dict[str, Any]], dict[str, str]]:
        specs, _problems = await self.toolbox.list_specs()
        names = {model_tool_name(s.name): s.name for s in specs}
        return [_definition(s) for s in specs], names

    async def _reply_content(self, reply: ToolReply, model: str) -> str:
        """Return a tool's answer as the model will read it, cut to a share of its context."""
        res = reply.result
        if not res.ok:
            return f"error ({res.error_type or 'ToolError'}): {res.error}"
        value = res.preview
        if res.truncated and res.ref:
            value = json.loads(await self.store.get_blob(res.ref))
        text = value if isinstance(value, str) else json.dumps(value, default=str)
        # Cut once, when it enters the transcript, so later turns never re-read the whole.
        share = max(256, context_limit(model, override=self.context_override) // 4)
        return truncate_middle(text, share, model)

    @activity.defn(name="agent_turn")
    async def agent_turn(self, inp: AgentTurnInput) -> AgentTurnResult:
        """Run one model turn: answer the last tool calls, then ask the model what next."""
        run = inp.run
        model = self._require_llm().model
        started = datetime.now(UTC)
        if inp.turn == 0:
            if done := await self.book.begin(run):
                return AgentTurnResult(seq=0, outcome=done)
            messages: list[dict[str, Any]] = [
                {"role": "system", "content": AGENT_SYSTEM.format(type=run.step.type.value)},
                {"role": "user", "content": await self.context(run)},
            ]
            new = list(messages)
            start = 0
        else:
            messages = await self.store.get_messages(run.subtask_id, upto=inp.seq)
            if len(messages) != inp.seq:
                raise ApplicationError(
                    f"transcript of {run.subtask_id} has {len(messages)} messages, "
                    f"expected {inp.seq}", type="TranscriptLost", non_retryable=True)
            new, start = [], inp.seq
        for r in inp.replies:
            new.append({"role": "tool", "tool_call_id": r.call_id,
                        "content": await self._reply_content(r, model)})
        if inp.turn > 0:
            messages += new
        last_turn = inp.turn >= inp.max_turns - 1
        tools, names = ([], {}) if last_turn else await self._tool_definitions()
        reply, metrics = await self._call(
            run, inp.budgets, messages, tools=tools or None,
            key=f"{run.subtask_id}/r{run.round}/turn/{inp.turn}", purpose="agent",
        )
        assistant: dict[str, Any] = {"role": "assistant", "content": reply.text or None}
        if reply.tool_calls:
            assistant["tool_calls"] = [
                {"id": c.id, "type": "function",
                 "function": {"name": c.name, "arguments": c.arguments}}
                for c in reply.tool_calls
            ]
        new.append(assistant)
        await self.store.put_messages(run.subtask_id, start, new)
        seq = start + len(new)
        if reply.tool_calls and not last_turn:
            return AgentTurnResult(
                seq=seq, metrics=metrics,
                tool_calls=[_request(c.id, names.get(c.name, c.name), c.arguments)
                            for c in reply.tool_calls],
            )
        result = Result(success=True, output=reply.text, summary=summarize(reply.text),
                        metrics=metrics)
        outcome = await self.book.finish(run, result=result, started=started)
        return AgentTurnResult(seq=seq, outcome=outcome, metrics=metrics)

    @activity.defn(name="write_code")
    async def write_code(self, inp: WriteCodeInput) -> WriteCodeResult:
        """Ask the model for the step's code; earlier attempts' errors are fed back."""
        run = inp.run
        messages: list[dict[str, Any]] = [
            {"role": "system", "content": CODE_SYSTEM},
            {"role": "user", "content": await self.context(run)},
        ]
        for a in inp.attempts:
            messages += [
                {"role": "assistant", "content": f"```python\n{a.code}\n```"},
                {"role": "user", "content": f"That code failed:\n{a.error}\nFix it."},
            ]
        reply, metrics = await self._call(
            run, inp.budgets, messages, tools=None,
            key=f"{run.subtask_id}/r{run.round}/code/{len(inp.attempts)}", purpose="code",
        )
        code = extract_code(reply.text)
        if not code:
            raise ApplicationError("the model wrote no code", type="NoCode")
        return WriteCodeResult(code=code, metrics=metrics)


def _definition(spec: ToolSpec) -> dict[str, Any]:
    params = spec.parameters or {"type": "object", "properties": {}}
    return {"type": "function", "function": {
        "name": model_tool_name(spec.name),
        "description": spec.description[:1000],
        "parameters": params,
    }}


def _request(call_id: str, name: str, arguments: str) -> ToolCallRequest:
    try:
        args = json.loads(arguments) if arguments.strip() else {}
    except json.JSONDecodeError as e:
        return ToolCallRequest(call_id=call_id, name=name,
                               args_error=f"arguments are not valid JSON: {e}")
    if not isinstance(args, dict):
        return ToolCallRequest(call_id=call_id, name=name,
                               args_error="arguments must be a JSON object")
    return ToolCallRequest(call_id=call_id, name=name, args=args)
