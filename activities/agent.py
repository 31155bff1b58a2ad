"""The agent engine's activities: one model turn at a time, and code written by the model.

Each model call is its own activity, so a crash resumes at the last finished call. The
conversation is kept in PostgreSQL by position (`transcripts`): a turn reads the messages
before `seq`, appends its own, and a retried turn overwrites the same positions. Every
call goes through `runtime.llm.metered`: budgets checked, prompt fitted, usage recorded.
"""

from __future__ import annotations

import contextlib
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
from models.io import DEFAULT_PROJECT, Budgets, StepRun
from models.task import Metrics, Result
from runtime.llm.client import Reply
from runtime.llm.metered import Charge, MeteredLLM
from runtime.llm.prompts import (
    AGENT_SYSTEM,
    CODE_SYSTEM,
    agents_section,
    extract_code,
    files_section,
    model_tool_name,
    parent_section,
    tool_call_request,
    tool_definition,
)
from runtime.llm.tokens import truncate_middle
from runtime.org_store import OrgStore
from runtime.store import NotFound
from runtime.tools.files import FileRefused, Workspace
from runtime.tools.toolbox import Toolbox

MEMORY_LIMIT = 5
PARENT_SUMMARY = 600  # characters of the parent task's prompt an agent is shown


class AgentActivities:
    """Model turns and code writing over one metered model."""

    def __init__(self, *, llm: MeteredLLM, book: StepBook, toolbox: Toolbox,
                 org: OrgStore | None = None, workspace: Workspace | None = None) -> None:
        self.llm = llm
        self.store = book.store
        self.book = book
        self.toolbox = toolbox
        self.org = org
        self.workspace = workspace

    async def _call(
        self, run: StepRun, budgets: Budgets, messages: list[dict[str, Any]], *,
        tools: list[dict[str, Any]] | None, purpose: str,
    ) -> tuple[Reply, Metrics]:
        charge = Charge(key=usage_key(), task_id=run.task_id, subtask_id=run.subtask_id,
                        purpose=purpose, budgets=budgets, scope=f"subtask {run.step.id}")
        return await self.llm.call(messages, charge, tools=tools)

    async def context(self, run: StepRun) -> str:
        """Return what the agent is told: the job, its parent task, its step, the related
        files and agents, the inputs, memories of its project, and reviewers' feedback.

        History carries only ids and paths: everything here is read now, from the store,
        the org chart and the workspace.
        """
        task = await self.store.get_task(run.task_id)
        step = run.step
        parts = [f"# The job\n{task['prompt'] or task['title']}".strip()]
        if task.get("parent_task"):
            parts.append(await self._parent(task))
        parts.append(f"# Your step ({step.id})\n{step.title}\n{step.description}".strip())
        if task.get("related_files"):
            parts.append(files_section(await self._files(list(task["related_files"]))))
        if task.get("related_agents"):
            ids = list(task["related_agents"])
            known = await self.org.agents_named(ids) if self.org else {}
            parts.append(agents_section(ids, known))
        inputs = await self.book.full_inputs(run)
        for dep, value in inputs.items():
            text = value if isinstance(value, str) else json.dumps(value, default=str)
            parts.append(f"# Output of step {dep}\n{text}")
        query = f"{step.title} {step.description}".strip()
        memories = await self.store.recall(
            query, project_id=task.get("project_id") or DEFAULT_PROJECT, agent_id=run.agent_id,
            limit=MEMORY_LIMIT, exclude_subtask=run.subtask_id) if query else []
        if memories:
            parts.append("# Related results from earlier work\n" + "\n".join(
                f"- {m['title']}: {m['content']}" for m in memories))
        if run.feedback:
            parts.append("# Your reviewer rejected earlier attempts; address this\n" +
                         "\n".join(f"- {f}" for f in run.feedback))
        return "\n\n".join(parts)

    async def _parent(self, task: dict[str, Any]) -> str:
        """The parent task's title and summary, and which of its steps this job is."""
        parent_id = task["parent_task"]
        try:
            parent = await self.store.get_task(parent_id)
        except NotFound:
            return parent_section(task_id=parent_id, title="", summary="(no longer stored)")
        step = ""
        if task.get("parent_subtask"):
            with contextlib.suppress(NotFound):
                sub = await self.store.get_subtask(task["parent_subtask"])
                step = f"{sub['step_id']}: {sub['title'] or sub['description']}".strip()
        return parent_section(task_id=parent_id, title=parent["title"],
                              summary=summarize(parent["prompt"] or "", limit=PARENT_SUMMARY),
                              step=step)

    async def _files(self, paths: list[str]) -> list[tuple[str, str]]:
        """Each related file's text, read through the workspace, or why it was not read."""
        if self.workspace is None:
            why = "(not read: this worker has no workspace; set BEESTOWN_WORKSPACE)"
            return [(p, why) for p in paths]
        out: list[tuple[str, str]] = []
        for path in paths:
            try:
                out.append((path, (await self.workspace.read(path)).shown()))
            except FileRefused as e:
                activity.logger.warning("related file refused: %s", e)
                out.append((path, f"(not read: {e})"))
        return out

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
