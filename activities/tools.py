"""Tool activities: a plan's tool step, one tool call of an agent, and the tools' specs."""

from __future__ import annotations

import json
from datetime import UTC, datetime

from temporalio import activity

from activities.boundary import application_error, boundary
from activities.steps import StepBook, preview, summarize
from models.io import INLINE_OUTPUT_LIMIT, StepOutcome, StepRun
from models.payload import cut_text
from models.task import Result
from models.tools import (
    ListToolsInput,
    ToolCallInput,
    ToolCallResult,
    ToolList,
    call_blob_id,
    output_json,
)
from runtime.tools.errors import ToolError
from runtime.tools.registry import ToolRegistry
from runtime.tools.toolbox import as_toolbox, substitute_inputs


class ToolActivities:
    """Tool activities over a registry or Toolbox; the worker gives it the tools and the store.

    `run_tool_step` runs a plan's tool step (function or MCP tool); `call_tool` is one tool
    call (an agent's) whose big output goes to PostgreSQL; `list_tools` gives the specs.
    """

    def __init__(self, registry: ToolRegistry, book: StepBook, *,
                 inline_limit: int = INLINE_OUTPUT_LIMIT) -> None:
        self.registry = registry
        self.toolbox = as_toolbox(registry)
        self.book = book
        self.inline_limit = inline_limit

    @activity.defn(name="run_tool_step")
    @boundary
    async def run_tool_step(self, run: StepRun) -> StepOutcome:
        """Call the step's tool with its arguments (dependencies' outputs substituted).

        A run for the step's fallback tool (`run.fallback_for`) stores why, with the result
        and as a `fallback_answered` event.
        """
        started = datetime.now(UTC)
        if done := await self.book.begin(run):
            return done
        args = substitute_inputs(run.step.args, await self.book.full_inputs(run))
        value = await self.toolbox.call(run.step.tool or "", args)
        result = Result(success=True, output=value, summary=summarize(value),
                        fallback=run.fallback_for)
        if run.fallback_for is not None:
            # Before the result: a step whose result is stored has its event too.
            fell = run.fallback_for
            await self.book.store.add_event(
                f"{run.subtask_id}:r{run.round}:fallback", task_id=run.task_id,
                subtask=run.subtask_id, kind="fallback_answered",
                data=fell.model_dump(mode="json") | {"text": fell.sentence()})
            activity.logger.warning("%s: %s", run.subtask_id, fell.sentence())
        return await self.book.finish(run, result=result, started=started)

    @activity.defn(name="call_tool")
    @boundary
    async def call_tool(self, inp: ToolCallInput) -> ToolCallResult:
        """Call one tool; an output too big for history is stored and previewed.

        The full output of a big result is kept as blob `call_blob_id(...)`, the same id on
        every attempt, so a retry stores nothing twice and previews what was kept.
        """
        try:
            value = await self.toolbox.call(inp.name, inp.args)
        except ToolError as e:
            err = application_error(e)
            if err is None or not (inp.return_errors and err.non_retryable):
                raise
            return ToolCallResult(ok=False, error=cut_text(str(e)), error_type=err.type)
        text = output_json(value)
        if len(text) <= self.inline_limit:
            return ToolCallResult(ok=True, preview=value)
        ref = call_blob_id(inp.task_id, inp.subtask_id, inp.call_id)
        store = self.book.store
        await store.save_blob(ref, task_id=inp.task_id, subtask=inp.subtask_id or None,
                              name=inp.name, mime="application/json", data=text.encode())
        kept = json.loads(await store.get_blob(ref))
        shown, truncated = preview(kept, limit=self.inline_limit)
        return ToolCallResult(ok=True, preview=shown, truncated=truncated, ref=ref)

    @activity.defn(name="list_tools")
    @boundary
    async def list_tools(self, inp: ListToolsInput) -> ToolList:
        """Return every tool's spec; MCP servers that cannot be reached are named."""
        specs, problems = await self.toolbox.list_specs(refresh=inp.refresh)
        return ToolList(tools=specs, problems=problems)
