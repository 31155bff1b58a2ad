"""The agent engine's activities: one model turn at a time, and code written by the model.

Each model call is its own activity, so a crash resumes at the last finished call. The
conversation is kept in PostgreSQL by position (`transcripts`): a turn reads the messages
before `seq`, appends its own, and a retried turn overwrites the same positions. Every
call goes through `runtime.llm.metered`: budgets checked, prompt fitted, usage recorded.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

from temporalio import activity
from temporalio.exceptions import ApplicationError

from activities.boundary import boundary
from activities.errors import NO_CODE, TRANSCRIPT_LOST
from activities.llm import usage_key
from activities.steps import StepBook, summarize
from models.agent import (
    AgentTurnInput,
    AgentTurnResult,
    ToolReply,
    WriteCodeInput,
    WriteCodeResult,
)
from models.io import Budgets, StepRun
from models.task import Metrics, Result
from runtime.agent_context import AgentContext
from runtime.llm.client import Reply
from runtime.llm.metered import Charge, MeteredLLM
from runtime.llm.prompts import (
    AGENT_SYSTEM,
    CODE_SYSTEM,
    extract_code,
    model_tool_name,
    tool_call_request,
    tool_definition,
)
from runtime.llm.tokens import truncate_middle
from runtime.org_store import OrgStore
from runtime.tools.files import Workspace
from runtime.tools.toolbox import Toolbox


class AgentActivities:
    """Model turns and code writing over one metered model."""

    def __init__(self, *, llm: MeteredLLM, book: StepBook, toolbox: Toolbox,
                 org: OrgStore | None = None, workspace: Workspace | None = None) -> None:
        self.llm = llm
        self.store = book.store
        self.book = book
        self.toolbox = toolbox
        self.briefing = AgentContext(book.store, org=org, workspace=workspace)

    async def _call(
        self, run: StepRun, budgets: Budgets, messages: list[dict[str, Any]], *,
        tools: list[dict[str, Any]] | None, purpose: str,
    ) -> tuple[Reply, Metrics]:
        charge = Charge(key=usage_key(), task_id=run.task_id, subtask_id=run.subtask_id,
                        purpose=purpose, budgets=budgets, scope=f"subtask {run.step.id}")
        return await self.llm.call(messages, charge, tools=tools)

    async def context(self, run: StepRun) -> str:
        """Return what the agent is told (see `runtime.agent_context.AgentContext`)."""
        return await self.briefing.describe(run, await self.book.full_inputs(run))

    async def _tool_definitions(self) -> tuple[list[dict[str, Any]], dict[str, str]]:
        # A server that is not up is not waited for: its tools are offered once it is.
        specs, _problems = await self.toolbox.list_specs(wait=False)
        names = {model_tool_name(s.name): s.name for s in specs}
        return [tool_definition(s) for s in specs], names

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
        share = max(256, self.llm.context_limit() // 4)
        return truncate_middle(text, share, model)

    @activity.defn(name="agent_turn")
    @boundary
    async def agent_turn(self, inp: AgentTurnInput) -> AgentTurnResult:
        """Run one model turn: answer the last tool calls, then ask the model what next."""
        run = inp.run
        model = self.llm.model
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
                    f"expected {inp.seq}", type=TRANSCRIPT_LOST, non_retryable=True)
            new, start = [], inp.seq
        for r in inp.replies:
            new.append({"role": "tool", "tool_call_id": r.call_id,
                        "content": await self._reply_content(r, model)})
        if inp.turn > 0:
            messages += new
        last_turn = inp.turn >= inp.max_turns - 1
        tools, names = ([], {}) if last_turn else await self._tool_definitions()
        reply, metrics = await self._call(
            run, inp.budgets, messages, tools=tools or None, purpose="agent")
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
                tool_calls=[tool_call_request(c.id, names.get(c.name, c.name), c.arguments)
                            for c in reply.tool_calls],
            )
        result = Result(success=True, output=reply.text, summary=summarize(reply.text),
                        metrics=metrics)
        outcome = await self.book.finish(run, result=result, started=started)
        return AgentTurnResult(seq=seq, outcome=outcome, metrics=metrics)

    @activity.defn(name="write_code")
    @boundary
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
            run, inp.budgets, messages, tools=None, purpose="code")
        code = extract_code(reply.text)
        if not code:
            raise ApplicationError("the model wrote no code", type=NO_CODE)
        return WriteCodeResult(code=code, metrics=metrics)
