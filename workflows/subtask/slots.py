"""Slots: who works on the step, waiting QUEUED while every candidate agent is busy."""

from __future__ import annotations

import contextlib

from temporalio import workflow

with workflow.unsafe.imports_passed_through():
    from activities.org import OrgActivities
    from models.io import SubtaskInput
    from models.org import ReviewPolicy
    from models.review import AssignInput, People, ReleaseInput
    from models.task import Status
    from workflows import policies
    from workflows.subtask.state import StepState, tell_parent


class Slots:
    """The step's hold on an agent's capacity, and the people that assignment brings."""

    def __init__(self, inp: SubtaskInput, state: StepState) -> None:
        self._inp = inp
        self._state = state
        self.assignments = 0  # slots asked for; numbers each one (the store's attempt)
        self.released = 0  # the assignment whose slot was last given back
        self.woken = False  # a finishing step freed a slot this one waits for
        self.people = People()
        self.agents: list[str] = []  # the active agents (whom a step may be reassigned to)
        self.assignee_is_manager = False
        self.preferred: str | None = None  # set by a reassignment

    @property
    def reviewed(self) -> bool:
        """Whether the step's result waits for a reviewer (not an 'auto' policy)."""
        return (self.people.reviewer is not None
                and self.people.review_policy is not ReviewPolicy.AUTO)

    async def acquire(self) -> str | None:
        """Get an agent with room (waiting QUEUED while there is none); return its id.

        Returns None when the task runs without an org chart."""
        inp = self._inp
        if not inp.org.enabled:
            return None
        self.assignments += 1
        while True:
            self.woken = False  # a wake-up arriving during the call below counts
            got = await workflow.execute_activity_method(
                OrgActivities.assign_subtask,
                AssignInput(task_id=inp.task_id, subtask_id=workflow.info().workflow_id,
                            attempt=self.assignments, required_skills=inp.step.skills,
                            candidates=inp.org.candidates,
                            preferred=self.preferred or inp.step.assignee,
                            reviewer=inp.org.reviewer, score=inp.score),
                start_to_close_timeout=policies.STORE_TIMEOUT,
                retry_policy=policies.STORE_RETRY,
            )
            if not got.org:
                return None
            if got.agent_id is not None:
                self._state.waiting_for = None
                self.people = got.people
                self.agents = got.agents
                self.assignee_is_manager = got.is_manager
                return got.agent_id
            self._state.status, self._state.detail = Status.QUEUED, got.reason
            self._state.waiting_for = got.waiting_for
            await tell_parent(inp, self._state)
            # Woken by a finishing subtask's slot; asked again anyway now and then.
            with contextlib.suppress(TimeoutError):
                await workflow.wait_condition(lambda: self.woken,
                                              timeout=policies.QUEUE_RECHECK)

    async def free(self) -> None:
        """Give back the slot of the current assignment (running or still queued); idempotent."""
        if (not self._inp.org.enabled or self.assignments == 0
                or self.released == self.assignments):
            return
        self.released = self.assignments
        await workflow.execute_activity_method(
            OrgActivities.release_slot,
            ReleaseInput(subtask_id=workflow.info().workflow_id, attempt=self.assignments),
            start_to_close_timeout=policies.STORE_TIMEOUT, retry_policy=policies.STORE_RETRY,
        )
