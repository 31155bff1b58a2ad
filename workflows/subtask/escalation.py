"""The escalation ladder: trouble climbs the assignee's chain of managers until one decides.

Each holder decides by its review policy: `llm` asks its model, `human` waits for the
`resolve_escalation` update or signal (for `escalation_timeout_s`, then the trouble
climbs), `auto` passes it up. The root waits for a person. A decision is carried out here:
retry and reassign mean work again, replan runs a new sub-plan as a nested task, skip ends
the step (FAILED, its dependents BLOCKED; the rest of the task runs on).

A model cannot loop: its `retry` of the step's trouble is carried out at most
`policies.MODEL_RETRIES_PER_LEVEL` times per level of the chain, then the trouble climbs
(at the top, a person decides); a model call that fails or gives no usable decision
counts as no decision and climbs too. People's decisions are never capped.
"""

from __future__ import annotations

import asyncio
from typing import Any

from pydantic import ValidationError
from temporalio import workflow
from temporalio.exceptions import ApplicationError, CancelledError, ChildWorkflowError

with workflow.unsafe.imports_passed_through():
    from activities import errors
    from activities.org import OrgActivities
    from models.io import StepRun, SubtaskInput, TaskInput
    from models.org import ReviewPolicy
    from models.review import (
        Action,
        CloseEscalation,
        Escalation,
        EscalationReason,
        EscalationRequest,
        ResolveEscalation,
    )
    from models.task import Status
    from runtime.documents import describe
    from workflows import policies
    from workflows.failures import ACTIVITY_FAILURES, failure_message
    from workflows.subtask.outcomes import WORK_AGAIN, Done, ReplanFailed, Trouble, WorkAgain
    from workflows.subtask.slots import Slots
    from workflows.subtask.state import Records, StepState, tell_parent
    from workflows.subtask.work import Work


# Patches (workflow.patched): histories recorded before them replay the old behaviour.
MODEL_FAILURE_CLIMBS = "escalation-model-failure-climbs"
MODEL_RETRY_CAP = "escalation-model-retry-cap"


class Ladder:
    """The step's escalations: the one open now, and the decision that answers it."""

    def __init__(self, inp: SubtaskInput, state: StepState, slots: Slots, work: Work,
                 records: Records) -> None:
        self._inp = inp
        self._state = state
        self._slots = slots
        self._work = work
        self._records = records
        self.escalations_opened = 0  # numbers each escalation (its id's sequence)
        self.open: Escalation | None = None
        self._decision: ResolveEscalation | None = None
        self.model_retries: dict[int, int] = {}  # by level: retries decided by a model

    async def resolve(self, trouble: Trouble) -> Done | WorkAgain:
        """Escalate until a decision is carried out: work again, or a replan's output.

        Raises ApplicationError (SubtaskFailed) when there is no chain to escalate to, and
        (Skipped) when a manager skips the step. A replan that fails goes back up."""
        reason, error = trouble.reason, trouble.error
        while True:
            decision = await self._climb(reason, error)
            if decision is None:
                await self._records.failed(error)
                raise ApplicationError(f"step {self._inp.step.id} failed: {error}",
                                       type=errors.SUBTASK_FAILED, non_retryable=True)
            try:
                return await self._carry_out(decision, error)
            except ReplanFailed as e:
                reason, error = EscalationReason.FAILED, str(e)

    async def _climb(self, reason: EscalationReason, error: str) -> ResolveEscalation | None:
        """Climb the chain until someone decides; None when there is no chain at all."""
        inp = self._inp
        chain = self._slots.people.escalation_chain
        if not inp.org.enabled or not chain:
            return None
        self.escalations_opened += 1
        self._decision = None  # nothing said before this escalation counts for it
        level = 0
        while True:
            holder = chain[level]
            top = level == len(chain) - 1
            esc = Escalation(
                subtask_id=workflow.info().workflow_id, task_id=inp.task_id,
                seq=self.escalations_opened, reason=reason, error=error, holder=holder,
                level=level, chain=chain, opened_at=workflow.now())
            self.open = esc
            state = self._state
            state.status, state.detail = Status.BLOCKED, f"escalated to {holder}"
            state.waiting_for, state.escalation_id = holder, esc.id
            policy = self._slots.people.policies.get(holder, ReviewPolicy.HUMAN)
            state.needs_person = policy is ReviewPolicy.HUMAN or (
                policy is ReviewPolicy.AUTO and top)
            await tell_parent(inp, state)
            await workflow.execute_activity_method(
                OrgActivities.record_escalation, EscalationRequest(escalation=esc),
                start_to_close_timeout=policies.STORE_TIMEOUT, retry_policy=policies.STORE_RETRY,
            )
            decision: ResolveEscalation | None = None
            if policy is ReviewPolicy.LLM:
                decision = await self._ask_model(esc)
                if self._decision is not None:  # a person answered meanwhile: theirs wins
                    decision, self._decision = self._decision, None
                elif decision is None:  # no usable decision: the next one up decides
                    if not top:
                        level += 1
                        continue
                elif decision.action is Action.ESCALATE and top:
                    decision = None  # the root's model passes: a person decides
                elif decision.action is Action.RETRY and self._model_retried_enough(level):
                    if not top:
                        level += 1  # this level's model keeps retrying: climb
                        continue
                    decision = None  # the root's model keeps retrying: a person decides
            elif policy is ReviewPolicy.AUTO and not top:
                level += 1  # an 'auto' manager passes trouble up
                continue
            if decision is None:
                if not state.needs_person:  # the model passed: a person decides
                    state.needs_person = True
                    await tell_parent(inp, state)
                try:
                    await workflow.wait_condition(
                        lambda: self._decision is not None,
                        timeout=None if top else inp.org.escalation_timeout_s)
                except TimeoutError:
                    level += 1  # nobody answered: the next manager up
                    continue
                decision, self._decision = self._decision, None
            if decision is None:
                continue
            if decision.action is Action.ESCALATE:
                level = min(level + 1, len(chain) - 1)
                continue
            self.open = None
            self._decision = None
            state.waiting_for, state.escalation_id, state.needs_person = None, None, False
            await workflow.execute_activity_method(
                OrgActivities.close_escalation,
                CloseEscalation(escalation_id=esc.id, decision=decision),
                start_to_close_timeout=policies.STORE_TIMEOUT, retry_policy=policies.STORE_RETRY,
            )
            return decision

    async def _ask_model(self, esc: Escalation) -> ResolveEscalation | None:
        """The holder's model decides; None when it could not (failed, unusable, budget)."""
        inp = self._inp
        call = workflow.execute_activity_method(
            OrgActivities.decide_escalation_with_llm,
            EscalationRequest(escalation=esc, description=f"{inp.step.title}\n"
                              f"{inp.step.description}", budgets=inp.budgets),
            task_queue=inp.routing.llm_queue,
            start_to_close_timeout=policies.LLM_STEP_TIMEOUT,
            retry_policy=policies.LLM_RETRY,
        )
        if not workflow.patched(MODEL_FAILURE_CLIMBS):
            return await call  # histories from before the patch fail the step here
        try:
            return await call
        except ACTIVITY_FAILURES as e:
            if isinstance(e.cause, CancelledError):
                raise asyncio.CancelledError from e
            workflow.logger.warning("%s's model gave no decision on %s: %s", esc.holder,
                                    esc.id, failure_message(e))
            return None

    def _model_retried_enough(self, level: int) -> bool:
        """Count a model's retry at `level`; True when it is one too many (then it climbs)."""
        done = self.model_retries.get(level, 0)
        if done < policies.MODEL_RETRIES_PER_LEVEL or not workflow.patched(MODEL_RETRY_CAP):
            self.model_retries[level] = done + 1
            return False
        return True

    async def _carry_out(self, decision: ResolveEscalation, error: str) -> Done | WorkAgain:
        inp, state = self._inp, self._state
        state.detail = f"{decision.by} decided: {decision.action.value}"
        if decision.action is Action.RETRY:
            return WORK_AGAIN
        if decision.action is Action.REASSIGN:
            self._slots.preferred = decision.assignee
            return WORK_AGAIN
        if decision.action is Action.SKIP:
            await self._records.failed(f"skipped by {decision.by}: {error}")
            raise ApplicationError(f"step {inp.step.id} was skipped by {decision.by}",
                                   type=errors.SKIPPED, non_retryable=True)
        # REPLAN: a new sub-plan replaces the step; its output is the step's output.
        plan = decision.plan
        if plan is None:  # the validator requires one
            return WORK_AGAIN
        me = workflow.info().workflow_id
        state.status, state.detail = Status.RUNNING, f"running {decision.by}'s new plan"
        await tell_parent(inp, state)
        task = TaskInput(plan=plan, title=f"replan of {inp.step.id}", parent_subtask=me,
                         assignee=decision.by, depth=inp.org.depth + 1,
                         token_budget=inp.budgets.task_tokens)
        try:
            return Done(await self._work.nested(
                StepRun(task_id=inp.task_id, subtask_id=me, step=inp.step,
                        hold_for_review=self._slots.reviewed), task, suffix="replan"))
        except ChildWorkflowError as e:
            if isinstance(e.cause, CancelledError):
                raise asyncio.CancelledError from e
            raise ReplanFailed(f"the new plan for {inp.step.id} failed: "
                               f"{failure_message(e)}") from e

    def check(self, decision: ResolveEscalation) -> None:
        """Refuse a decision nobody waits for, a stale one, one from below the holder, or an
        impossible one (ValueError, naming what is wrong and who may act)."""
        esc = self.open
        if esc is None or self._decision is not None:
            raise ValueError(f"{workflow.info().workflow_id} has no open escalation")
        if decision.escalation_id is not None and decision.escalation_id != esc.id:
            raise ValueError(f"escalation {decision.escalation_id} is no longer open: "
                             f"{esc.id} is (stale decision)")
        allowed = esc.chain[esc.level:]
        if decision.by not in allowed:
            raise ValueError(f"{decision.by} cannot decide this escalation; it is held by "
                             f"{esc.holder} (or above: {', '.join(allowed[1:]) or 'nobody'})")
        agents = self._slots.agents
        if decision.action is Action.REASSIGN and agents and decision.assignee not in agents:
            raise ValueError(f"cannot reassign to {decision.assignee!r}: not an active agent")
        if decision.action is Action.ESCALATE and esc.level == len(esc.chain) - 1:
            raise ValueError(f"{esc.holder} is at the top: decide retry, reassign, replan "
                             "or skip")

    def accept(self, decision: ResolveEscalation) -> Escalation:
        """Take a checked decision; the waiting escalation goes on with it."""
        esc = self.open
        self._decision = decision
        if esc is None:  # the validator refuses this
            raise ApplicationError("no open escalation")
        return esc

    async def signalled(self, payload: Any) -> None:
        """The `resolve_escalation` signal: apply the decision if the update would take it;
        otherwise change nothing and record the refusal (query, events, worker log)."""
        try:
            decision = ResolveEscalation.model_validate(payload)
            self.check(decision)
        except ValidationError as e:
            await self._records.refused("resolve_escalation",
                                        f"malformed decision: {describe(e)}", payload)
            return
        except ValueError as e:
            await self._records.refused("resolve_escalation", str(e), payload)
            return
        self.accept(decision)

    async def close_unanswered(self) -> None:
        """On the way out (cancelled, failed): close an escalation nobody answered."""
        if self.open is None:
            return
        esc, self.open = self.open, None
        await workflow.execute_activity_method(
            OrgActivities.close_escalation,
            CloseEscalation(escalation_id=esc.id, status="cancelled"),
            start_to_close_timeout=policies.STORE_TIMEOUT, retry_policy=policies.STORE_RETRY,
        )
