"""Review: a finished step's output waits for its reviewer to approve or reject it.

The reviewer is the assignee's manager (or the task's reviewer); their review policy says
how: `llm` asks the reviewer's model, `human` waits for a verdict — the `review` update
(for callers who want an answer) or the `review` signal (durable while no worker runs).
A rejection reruns the step with the feedback; too many rejections escalate.

Review rounds are numbered 1, 2, ... over the step's life; a verdict may name the round it
answers, and one for a round no longer open is refused as stale.
"""

from __future__ import annotations

from typing import Any

from pydantic import ValidationError
from temporalio import workflow
from temporalio.exceptions import ApplicationError

with workflow.unsafe.imports_passed_through():
    from activities.org import OrgActivities
    from models.io import StepOutcome, SubtaskInput
    from models.org import ReviewPolicy
    from models.review import Decision, ReviewAck, ReviewInput, ReviewRequest
    from models.task import Status
    from runtime.documents import describe
    from workflows import policies
    from workflows.subtask.slots import Slots
    from workflows.subtask.state import Records, StepState, tell_parent


class Review:
    """The step's review rounds: who reviews, what they said, and how often they rejected."""

    def __init__(self, inp: SubtaskInput, state: StepState, slots: Slots,
                 records: Records) -> None:
        self._inp = inp
        self._state = state
        self._slots = slots
        self._records = records
        self.rejections = 0  # since the step last started over (reset after an escalation)
        self.feedback: list[str] = []  # every rejection's feedback, for the next round
        self.round = 0  # review rounds opened; the open one's number while awaiting
        self.awaiting = False  # a person's verdict is awaited now
        self._verdict: ReviewInput | None = None

    @property
    def too_many_rejections(self) -> bool:
        return self.rejections > self._inp.org.review_rounds

    def start_over(self) -> None:
        """After an escalation decided to work again: the rejection count starts anew."""
        self.rejections = 0

    async def ask(self, outcome: StepOutcome) -> ReviewInput:
        """Return the reviewer's verdict on `outcome` (approval when nobody reviews)."""
        people, state = self._slots.people, self._state
        if not self._slots.reviewed or people.reviewer is None:
            return ReviewInput(reviewer_id=people.reviewer or "auto", decision=Decision.APPROVE)
        state.status, state.detail = Status.REVIEWING, f"waiting for {people.reviewer}"
        self.round += 1
        by_person = people.review_policy is not ReviewPolicy.LLM
        # Open before the store announces REVIEWING: a verdict sent on its word is taken.
        self.awaiting = by_person
        state.waiting_for, state.review_round = people.reviewer, self.round
        state.needs_person = by_person
        await tell_parent(self._inp, state)
        await self._records.note("review_requested", status=Status.REVIEWING,
                                 waiting_for=people.reviewer, data={"round": self.round})
        verdict: ReviewInput | None
        if not by_person:
            inp = self._inp
            verdict = await workflow.execute_activity_method(
                OrgActivities.review_with_llm,
                ReviewRequest(task_id=inp.task_id, subtask_id=workflow.info().workflow_id,
                              reviewer_id=people.reviewer, round=self.round, seq=self.round,
                              output_preview=str(outcome.output.output)[:4000],
                              description=f"{inp.step.title}\n{inp.step.description}",
                              budgets=inp.budgets),
                task_queue=inp.routing.llm_queue,
                start_to_close_timeout=policies.LLM_STEP_TIMEOUT,
                retry_policy=policies.LLM_RETRY,
            )
        else:
            await workflow.wait_condition(lambda: self._verdict is not None)
            self.awaiting = False
            verdict, self._verdict = self._verdict, None
        state.waiting_for, state.review_round, state.needs_person = None, None, False
        if verdict is None:  # the wait above only ends with one
            raise ApplicationError("review ended without a verdict", non_retryable=True)
        await self._records.note(f"review_{verdict.decision.value}", data={
            "round": self.round, "reviewer": verdict.reviewer_id,
            "feedback": verdict.feedback})
        if verdict.decision is Decision.REJECT:
            self.rejections += 1
            self.feedback.append(verdict.feedback)
        return verdict

    def check(self, verdict: ReviewInput) -> None:
        """Refuse a verdict nobody waits for, a stale one, or one from anyone but the
        assigned reviewer (ValueError, naming what is wrong and who may act)."""
        me = workflow.info().workflow_id
        if not self.awaiting or self._verdict is not None:
            raise ValueError(f"{me} is not waiting for a review (status {self._state.status})")
        if verdict.round is not None and verdict.round != self.round:
            raise ValueError(f"review round {verdict.round} of {me} is no longer open: "
                             f"round {self.round} is (stale decision)")
        if verdict.reviewer_id != self._slots.people.reviewer:
            raise ValueError(f"only {self._slots.people.reviewer} may review {me}, "
                             f"not {verdict.reviewer_id}")

    def accept(self, verdict: ReviewInput) -> ReviewAck:
        """Take a checked verdict; the waiting review round goes on with it."""
        self._verdict = verdict
        return ReviewAck(subtask_id=workflow.info().workflow_id, round=self.round,
                         decision=verdict.decision)

    async def signalled(self, payload: Any) -> None:
        """The `review` signal: apply the verdict if the update would take it; otherwise
        change nothing and record the refusal (query, events, worker log)."""
        try:
            verdict = ReviewInput.model_validate(payload)
            self.check(verdict)
        except ValidationError as e:
            await self._records.refused("review", f"malformed verdict: {describe(e)}", payload)
            return
        except ValueError as e:
            await self._records.refused("review", str(e), payload)
            return
        self.accept(verdict)
