"""Following a task to its end without ever waiting in silence (`beestown run --wait`).

Every step shows its real state, from the task's `progress` query: QUEUED (for whom),
REVIEWING (by whom), BLOCKED (waiting for whom). A step waiting on a person comes with
the exact `beestown review ...` / `beestown resolve ...` command, naming the review round
or the escalation it answers, so a decision for something already over is refused as
stale. On a terminal the table is redrawn in place; without one, one line per change.
When no worker takes the task's work for a few seconds, it says so, naming the task queue
and how to start a worker.
"""

from __future__ import annotations

import asyncio
import json
import shlex
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

from rich.console import Console, Group, RenderableType
from rich.live import Live
from rich.markup import escape
from rich.table import Table
from rich.text import Text
from temporalio.api.enums.v1 import PendingActivityState, PendingWorkflowTaskState
from temporalio.client import WorkflowHandle, WorkflowQueryFailedError
from temporalio.service import RPCError

from cli.output import cut, styled
from models.io import Progress, SubtaskView, TaskResult
from models.review import Action
from models.task import Status

__all__ = ["NO_WORKER_AFTER", "commands_for", "follow", "idle_notice", "waits_on"]

# Work scheduled this long ago that no worker has started means nobody serves its queue
# (a busy worker starts a workflow task within milliseconds; an idle poller at once).
NO_WORKER_AFTER = timedelta(seconds=5)
# How often the task's description is read to notice that (one cheap RPC).
CHECK_EVERY_S = 3.0
QUERY_TIMEOUT = timedelta(seconds=2)


def waits_on(v: SubtaskView) -> str:
    """Whom or what the step waits for, in a few words ('' when it does not wait)."""
    who = v.waiting_for or ""
    if v.status is Status.QUEUED:
        return f"for {who}" if who else "for a free slot"
    if v.status is Status.REVIEWING and who:
        return f"by {who}" + (f", round {v.review_round}" if v.review_round else "")
    if v.status is Status.BLOCKED and who:  # an escalation's holder, not a failed dependency
        return f"waiting for {who}"
    return ""


def commands_for(v: SubtaskView) -> list[str]:
    """The exact commands a person runs to unblock the step (none if it waits on nobody)."""
    if not v.needs_person or not v.waiting_for:
        return []
    who = shlex.quote(v.waiting_for)
    if v.status is Status.REVIEWING:
        base = f"beestown review {shlex.quote(v.id)} --reviewer {who}"
        if v.review_round:
            base += f" --round {v.review_round}"
        return [f"{base} --approve",
                f"{base} --reject --feedback 'what to change'"]
    if v.status is Status.BLOCKED and v.escalation_id:
        actions = "|".join(a.value for a in Action)
        return [f"beestown resolve {shlex.quote(v.escalation_id)} --by {who} "
                f"--action {{{actions}}}",
                "   (reassign needs --assignee ID, replan --plan FILE; see beestown resolve -h)"]
    return []


def _table(progress: Progress, width: int) -> Table:
    table = Table(title=f"{escape(progress.task_id)}  {styled(progress.status.value)}",
                  title_justify="left", expand=False)
    table.add_column("step", no_wrap=True, overflow="ellipsis", max_width=24)
    table.add_column("type", no_wrap=True)
    table.add_column("status", no_wrap=True)
    table.add_column("waits / output / error", no_wrap=True, overflow="ellipsis",
                     max_width=max(20, width - 45))
    for v in progress.subtasks:
        detail = (v.error or waits_on(v)
                  or ("" if v.output is None else json.dumps(v.output, default=str))
                  or (v.detail if v.status is Status.RUNNING else ""))
        table.add_row(escape(v.step_id), v.type, styled(v.status.value),
                      escape(detail.replace("\n", " ")))
    return table


def _asks(progress: Progress) -> list[str]:
    lines: list[str] = []
    for v in progress.subtasks:
        cmds = commands_for(v)
        if cmds:
            lines.append(f"{v.step_id} waits for {v.waiting_for}; run:")
            lines.extend(f"  {c}" for c in cmds)
    return lines


def render(progress: Progress, notice: str | None, width: int) -> RenderableType:
    parts: list[RenderableType] = [_table(progress, width)]
    asks = _asks(progress)
    if asks:
        parts.append(Text("\n".join(asks), style="yellow"))
    if notice:
        parts.append(Text(notice, style="red"))
    return Group(*parts)


async def ask_progress(handle: WorkflowHandle[Any, Any]) -> Progress | None:
    """The task's `progress` query, or None when no worker answers within a moment."""
    try:
        return await asyncio.wait_for(
            handle.query("progress", result_type=Progress, rpc_timeout=QUERY_TIMEOUT),
            timeout=QUERY_TIMEOUT.total_seconds() + 0.5)
    except (RPCError, WorkflowQueryFailedError, TimeoutError):
        return None


async def idle_notice(handle: WorkflowHandle[Any, Any], *, address: str,
                      now: Callable[[], datetime] = lambda: datetime.now(UTC)) -> str | None:
    """Say so when the task's work has waited for a worker longer than NO_WORKER_AFTER.

    The task's own description tells it exactly: a workflow task or an activity that is
    scheduled but was not started by any worker of its queue."""
    try:
        desc = await handle.describe(rpc_timeout=QUERY_TIMEOUT)
    except RPCError:
        return None
    raw = desc.raw_description
    queue = desc.task_queue
    waited: timedelta | None = None
    pending = raw.pending_workflow_task
    if (raw.HasField("pending_workflow_task")
            and pending.state == PendingWorkflowTaskState.PENDING_WORKFLOW_TASK_STATE_SCHEDULED):
        waited = now() - pending.scheduled_time.ToDatetime(UTC)
    for act in raw.pending_activities:
        if (act.state == PendingActivityState.PENDING_ACTIVITY_STATE_SCHEDULED
                and act.attempt <= 1 and act.HasField("scheduled_time")):
            late = now() - act.scheduled_time.ToDatetime(UTC)
            if waited is None or late > waited:
                waited = late
    if waited is None or waited < NO_WORKER_AFTER:
        return None
    return (f"no worker has taken this task's work for {waited.total_seconds():.0f} s: "
            f"nothing serves task queue {queue!r} at {address}. "
            "Start one in another shell: `python worker.py` (same TEMPORAL_ADDRESS and "
            "BEESTOWN_TASK_QUEUE), or `make demo`.")


def _line_key(v: SubtaskView) -> tuple[object, ...]:
    return (v.status, v.waiting_for, v.review_round, v.escalation_id, v.needs_person)


class _Lines:
    """No terminal: one line per change of a step, of the task, or of the notice."""

    def __init__(self, console: Console) -> None:
        self.console = console
        self.seen: dict[str, tuple[object, ...]] = {}
        self.status: Status | None = None
        self.notice: str | None = None

    def show(self, progress: Progress | None, notice: str | None) -> None:
        out = self.console
        if notice != self.notice:
            if notice:
                out.print(notice, markup=False, soft_wrap=True)
            elif self.notice:
                out.print("a worker took the task's work", markup=False)
            self.notice = notice
        if progress is None:
            return
        if progress.status is not self.status:
            self.status = progress.status
            out.print(f"{progress.task_id} {progress.status.value}", markup=False,
                      soft_wrap=True)
        for v in progress.subtasks:
            key = _line_key(v)
            if self.seen.get(v.step_id) == key:
                continue
            self.seen[v.step_id] = key
            what = v.error or waits_on(v)
            out.print(f"  {v.step_id} {v.status.value}" + (f" {cut(what, 200)}" if what else ""),
                      markup=False, soft_wrap=True, highlight=False)
            for c in commands_for(v):
                out.print(f"    {c}", markup=False, soft_wrap=True, highlight=False)


async def follow(handle: WorkflowHandle[Any, Any], console: Console, *, address: str,
                 closed: asyncio.Future[TaskResult]) -> TaskResult:
    """Show the task's progress until `closed` (its outcome) is done; return the result."""
    lines = None if console.is_terminal else _Lines(console)
    live = (Live(console=console, auto_refresh=False, transient=False)
            if lines is None else None)
    if live is not None:
        live.start()
    notice: str | None = None
    checked = 0.0
    loop = asyncio.get_running_loop()
    try:
        while not closed.done():
            progress = await ask_progress(handle)
            if loop.time() - checked >= CHECK_EVERY_S:
                checked = loop.time()
                notice = await idle_notice(handle, address=address)
            if live is not None:
                shown = progress or Progress(task_id=handle.id, status=Status.PENDING)
                live.update(render(shown, notice, console.width), refresh=True)
            elif lines is not None:
                lines.show(progress, notice)
            await asyncio.wait([closed], timeout=0.5)
        result = closed.result()
        final = Progress(task_id=result.task_id, status=result.status,
                         subtasks=result.subtasks)
        if live is not None:
            live.update(render(final, None, console.width), refresh=True)
        elif lines is not None:
            lines.show(final, None)
        return result
    finally:
        if live is not None:
            live.stop()
