"""What an agent is told before its first model turn: the job, the task it serves, its
step, related files and agents, its inputs, memories of its project, and feedback."""

from __future__ import annotations

import contextlib
import json
import logging
from typing import Any

from models.io import DEFAULT_PROJECT, StepRun
from runtime.llm.prompts import agents_section, files_section, parent_section
from runtime.org_store import OrgStore
from runtime.store import NotFound, Store
from runtime.text import summarize
from runtime.tools.files import FileRefused, Workspace

log = logging.getLogger(__name__)

MEMORY_LIMIT = 5
PARENT_SUMMARY = 600  # characters of the parent task's prompt an agent is shown


class AgentContext:
    """Builds an agent's briefing from the store, the org chart and the workspace."""

    def __init__(self, store: Store, *, org: OrgStore | None = None,
                 workspace: Workspace | None = None) -> None:
        self.store = store
        self.org = org
        self.workspace = workspace

    async def describe(self, run: StepRun, inputs: dict[str, Any]) -> str:
        """Return what the agent is told: the job, its parent task, its step, the related
        files and agents, the inputs, memories of its project, and reviewers' feedback.

        `inputs` are the dependencies' full outputs. History carries only ids and paths:
        everything else is read now, from the store, the org chart and the workspace.
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
                log.warning("related file refused: %s", e)
                out.append((path, f"(not read: {e})"))
        return out
