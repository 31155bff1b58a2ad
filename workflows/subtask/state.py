"""What a step shows the world (its `progress` query), and its writes to the store."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import Any

from temporalio import workflow
from temporalio.exceptions import FailureError

with workflow.unsafe.imports_passed_through():
    from activities.org import OrgActivities
    from activities.steps import SubtaskActivities
    from models.io import (
        FailSubtaskInput,
        StepOutput,
        StepStateReport,
        SubtaskInput,
        SubtaskView,
    )
    from models.review import NoteInput
    from models.task import Status
    from workflows import policies, search
    from workflows.delivery import finish_despite_cancel


# The `progress` query shows this many of the latest refused signals.
REFUSALS_SHOWN = 10

# Patch (workflow.patched): a step tells its task when it starts or stops waiting (on a
# slot, a reviewer, an escalation holder); histories recorded before it send nothing.
REPORT_WAITS = "report-waits-to-parent"

# The states in which a step waits on someone; the task's query shows them as they are.
WAITING = frozenset({Status.QUEUED, Status.REVIEWING, Status.BLOCKED})


@dataclass
class StepState:
    """The step's status as its `progress` query reports it; every part updates it."""

    step_id: str = ""
    type: str = ""
    status: Status = Status.PENDING
    detail: str = ""
    fraction: float = 0.0
    error: str | None = None
    output: StepOutput | None = None
    waiting_for: str | None = None  # the person or agent it waits for, when it waits
    review_round: int | None = None  # the review round open now
    escalation_id: str | None = None  # the escalation open now
    needs_person: bool = False  # a person's verdict or decision is awaited now
    refusals: list[str] = field(default_factory=list)  # signals refused, newest last
    told: tuple[object, ...] | None = None  # the last state reported to the task
    published: str | None = None  # the status last upserted as a search attribute

    def progress(self, fraction: float, detail: str) -> None:
        self.fraction, self.detail = fraction, detail

    def view(self) -> SubtaskView:
        return SubtaskView(
            id=workflow.info().workflow_id,
            step_id=self.step_id,
            type=self.type,
            status=self.status,
            output=self.output.output if self.output else None,
            error=self.error,
            progress=1.0 if self.status is Status.COMPLETED else self.fraction,
            detail=self.detail,
            waiting_for=self.waiting_for,
            review_round=self.review_round,
            escalation_id=self.escalation_id,
            needs_person=self.needs_person,
            refusals=list(self.refusals[-REFUSALS_SHOWN:]),
        )

    def report(self) -> StepStateReport:
        return StepStateReport(
            step_id=self.step_id, status=self.status, detail=self.detail,
            waiting_for=self.waiting_for, review_round=self.review_round,
            escalation_id=self.escalation_id, needs_person=self.needs_person)


def show_in_search(inp: SubtaskInput, state: StepState, *, assignee: str | None = None
                   ) -> None:
    """Upsert the step's status (and a new assignee) as search attributes, on a change."""
    if state.status.value == state.published and not assignee:
        return
    state.published = state.status.value
    search.publish(inp.routing.search_attributes, status=state.status.value,
                   assignee=assignee, priority=inp.step.priority.value)


async def tell_parent(inp: SubtaskInput, state: StepState) -> None:
    """Signal the task that this step started, changed or stopped waiting on someone.

    Only with an org chart (nothing waits without one), only on a change, and only when
    a waiting state begins or ends: a step that never waits sends nothing. The send is
    awaited (a signal sent in the task that completes the workflow is never delivered)
    and not cut short by a cancellation (see `workflows.delivery`), which is re-raised
    once it is out."""
    show_in_search(inp, state)
    parent = workflow.info().parent
    if not inp.org.enabled or parent is None:
        return
    report = state.report()
    key = (report.status, report.waiting_for, report.review_round, report.escalation_id,
           report.needs_person)
    was_waiting = state.told is not None and state.told[0] in WAITING
    if key == state.told or not (report.status in WAITING or was_waiting):
        return
    if not workflow.patched(REPORT_WAITS):
        return
    state.told = key
    handle = workflow.get_external_workflow_handle(parent.workflow_id)
    try:
        _, cancelled = await finish_despite_cancel(handle.signal("step_state", report))
    except FailureError:
        return  # the task is gone; nobody is left to tell
    if cancelled:
        raise asyncio.CancelledError


class Records:
    """The step's writes to the store: events for people, and how it ended."""

    def __init__(self, inp: SubtaskInput, state: StepState) -> None:
        self._inp = inp
        self._state = state
        self.events_written = 0  # numbers each event's idempotency key

    async def note(self, kind: str, *, status: Status | None = None,
                   waiting_for: str | None = None, data: dict[str, object] | None = None
                   ) -> None:
        """Record an event (and optionally the row's status); only with an org chart."""
        if not self._inp.org.enabled:
            return
        self.events_written += 1
        me = workflow.info().workflow_id
        await workflow.execute_activity_method(
            OrgActivities.note_subtask,
            NoteInput(task_id=self._inp.task_id, subtask_id=me, status=status,
                      waiting_for=waiting_for, kind=kind,
                      key=f"{me}:{kind}:{self.events_written}", data=data or {}),
            start_to_close_timeout=policies.STORE_TIMEOUT, retry_policy=policies.STORE_RETRY,
        )

    async def refused(self, signal: str, why: str, payload: Any) -> None:
        """A signal was refused and changed nothing: say so in the step's query, the worker
        log and (with an org chart) the events table, where operators look."""
        self._state.refusals.append(f"{signal}: {why}")
        workflow.logger.warning("refused signal %r for %s: %s", signal,
                                workflow.info().workflow_id, why)
        await self.note("signal_refused", data={"signal": signal, "reason": why,
                                                "payload": _preview(payload)})

    async def failed(self, error: str) -> None:
        """The step failed for good: FAILED, with the error, here and in the store."""
        self._state.error, self._state.status = error, Status.FAILED
        await self._end(Status.FAILED, error)

    async def cancelled(self) -> None:
        """The step was cancelled while it worked: CANCELLED here and in the store."""
        self._state.status, self._state.error = Status.CANCELLED, "cancelled"
        await self._end(Status.CANCELLED, "cancelled")

    async def _end(self, status: Status, error: str) -> None:
        show_in_search(self._inp, self._state)
        await workflow.execute_activity_method(
            SubtaskActivities.fail_subtask,
            FailSubtaskInput(task_id=self._inp.task_id,
                             subtask_id=workflow.info().workflow_id,
                             status=status, error=error),
            start_to_close_timeout=policies.STORE_TIMEOUT,
            retry_policy=policies.STORE_RETRY,
        )


def _preview(payload: Any, limit: int = 500) -> str:
    """What the refused payload looked like, cut to `limit` characters for the store."""
    text = repr(payload)
    return text if len(text) <= limit else text[:limit] + "…"
