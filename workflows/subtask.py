"""SubtaskWorkflow: one step of a plan, as its own child workflow `<task-id>/<step-id>`.

A child may be started before its dependencies finish; it then waits for one
`dependency_done` signal per missing dependency (from the dependency itself, or from the
parent) and runs the moment the last one arrives. When it finishes it releases the
dependents it was told to, so the release costs no hop through the parent.
"""

from __future__ import annotations

import asyncio
import contextlib

from pydantic import ValidationError
from temporalio import workflow
from temporalio.exceptions import (
    ActivityError,
    ApplicationError,
    CancelledError,
    ChildWorkflowError,
    FailureError,
)
from temporalio.workflow import ParentClosePolicy

with workflow.unsafe.imports_passed_through():
    from activities.org import OrgActivities
    from activities.steps import SubtaskActivities
    from activities.tools import ToolActivities
    from models.io import (
        DependencyDone,
        FailSubtaskInput,
        RecordResultInput,
        StepOutcome,
        StepOutput,
        StepRun,
        SubtaskInput,
        SubtaskResult,
        SubtaskView,
        TaskInput,
        TaskResult,
    )
    from models.org import ReviewPolicy
    from models.review import (
        Action,
        AssignInput,
        CloseEscalation,
        Decision,
        Escalation,
        EscalationReason,
        EscalationRequest,
        NoteInput,
        People,
        ReleaseInput,
        ResolveEscalation,
        ReviewAck,
        ReviewInput,
        ReviewRequest,
    )
    from models.task import Status, StepType, subtask_id
    from workflows import policies
    from workflows.engine import run_agent, run_code, write_and_run_code
    from workflows.failures import ACTIVITY_FAILURES, failure_message


# A payload that does not validate fails the workflow (naming the field) instead of
# failing its workflow task over and over.
@workflow.defn(name="SubtaskWorkflow", failure_exception_types=[ValidationError])
class SubtaskWorkflow:
    @workflow.init
    def __init__(self, inp: SubtaskInput) -> None:
        self._inp: SubtaskInput | None = inp
        self._inputs: dict[str, StepOutput] = {}
        self._status = Status.PENDING
        self._step_id = ""
        self._type = ""
        self._error: str | None = None
        self._output: StepOutput | None = None
        self._fraction = 0.0
        self._detail = ""
        self._people = People()
        self._assignee_is_manager = False
        self._preferred: str | None = None
        self._attempts = 0
        self._freed = 0
        self._rounds = 0
        self._reviews = 0
        self._notes = 0
        self._escalations = 0
        self._nested_runs = 0
        self._round = 0
        self._slot_free = False
        self._awaiting_review = False
        self._verdict: ReviewInput | None = None
        self._escalation: Escalation | None = None
        self._decision: ResolveEscalation | None = None
        self._deadline_waived = False
        self._agents: list[str] = []

    @workflow.signal(name="slot_free")
    def slot_free(self) -> None:
        """A finishing subtask freed a slot this one was queued for."""
        self._slot_free = True

    @workflow.signal(name="dependency_done")
    def dependency_done(self, sig: DependencyDone) -> None:
        out = sig.output
        if self._inp is None or out.step_id not in self._inp.step.deps or (
                out.subtask_id != subtask_id(self._inp.task_id, out.step_id)):
            workflow.logger.warning("ignoring dependency_done for %r (%r): not a dependency",
                                    out.step_id, out.subtask_id)
            return
        # Delivery may happen twice (from the dependency and from the parent): keep the first.
        self._inputs.setdefault(out.step_id, out)

    @workflow.query(name="progress")
    def progress(self) -> SubtaskView:
        return SubtaskView(
            id=workflow.info().workflow_id,
            step_id=self._step_id,
            type=self._type,
            status=self._status,
            output=self._output.output if self._output else None,
            error=self._error,
            progress=1.0 if self._status is Status.COMPLETED else self._fraction,
            detail=self._detail,
        )

    @workflow.run
    async def run(self, inp: SubtaskInput) -> SubtaskResult:
        try:
            return await self._run(inp)
        except asyncio.CancelledError:
            await self._wind_down(inp, cancelled=True)
            raise
        except (ApplicationError, ActivityError, ChildWorkflowError):
            await self._wind_down(inp, cancelled=False)
            raise

    async def _wind_down(self, inp: SubtaskInput, *, cancelled: bool) -> None:
        """On any way out but success: give the agent's slot back, close an open escalation,
        and (when cancelled mid-work) record CANCELLED. A child still waiting for its
        dependencies records nothing: the parent decides whether it is BLOCKED."""
        await self._free(inp)
        if self._escalation is not None:
            esc, self._escalation = self._escalation, None
            await workflow.execute_activity_method(
                OrgActivities.close_escalation,
                CloseEscalation(escalation_id=esc.id, status="cancelled"),
                start_to_close_timeout=policies.STORE_TIMEOUT, retry_policy=policies.STORE_RETRY,
            )
        if cancelled and self._status not in (Status.PENDING, Status.CANCELLED):
            self._status, self._error = Status.CANCELLED, "cancelled"
            await workflow.execute_activity_method(
                SubtaskActivities.fail_subtask,
                FailSubtaskInput(task_id=inp.task_id,
                                 subtask_id=workflow.info().workflow_id,
                                 status=Status.CANCELLED, error="cancelled"),
                start_to_close_timeout=policies.STORE_TIMEOUT,
                retry_policy=policies.STORE_RETRY,
            )

    async def _decide(self, inp: SubtaskInput, reason: EscalationReason, error: str
                      ) -> StepOutcome | None:
        """Escalate until a decision is carried out: an outcome (replan) or None (work
        again). A replan that fails goes back up the chain; no chain fails the step."""
        while True:
            decision = await self._escalate(inp, reason, error)
            if decision is None:
                await self._record_failure(inp, error)
                raise ApplicationError(f"step {inp.step.id} failed: {error}",
                                       type="SubtaskFailed", non_retryable=True)
            try:
                return await self._act_on(inp, decision, error)
            except ReplanFailed as e:
                reason, error = EscalationReason.FAILED, str(e)

    async def _run(self, inp: SubtaskInput) -> SubtaskResult:
        step = inp.step
        self._step_id, self._type = step.id, step.type.value
        for key, value in inp.inputs.items():
            self._inputs.setdefault(key, value)
        await workflow.wait_condition(lambda: all(d in self._inputs for d in step.deps))
        me = workflow.info().workflow_id
        feedback: list[str] = []
        rejections = 0
        while True:
            assigned = await self._acquire(inp)
            self._status = Status.RUNNING
            run = StepRun(
                task_id=inp.task_id, subtask_id=me, step=step,
                inputs={d: self._inputs[d] for d in step.deps}, feedback=list(feedback),
                hold_for_review=self._reviewed(), agent_id=assigned, round=self._rounds,
            )
            self._rounds += 1
            outcome, trouble = await self._attempt(inp, run)
            await self._free(inp)
            if trouble is not None:
                outcome = await self._decide(inp, *trouble)
            if outcome is None:
                continue  # retry or reassign: work again
            verdict = await self._review(inp, outcome, rejections)
            if verdict.decision is Decision.APPROVE:
                break
            rejections += 1
            feedback.append(verdict.feedback)
            if rejections > inp.org.review_rounds:
                replanned = await self._decide(
                    inp, EscalationReason.REVIEW_ROUNDS,
                    f"rejected {rejections} times; last feedback: {verdict.feedback}")
                if replanned is not None:
                    outcome = replanned
                    break
                rejections = 0
        self._output = outcome.output
        self._status = Status.COMPLETED
        # Approved: the row leaves REVIEWING, and the manager gets the report.
        await self._note(inp, "completed", status=Status.COMPLETED if self._reviewed() else None,
                         data={"to": self._people.reviewer or "",
                               "summary": outcome.output.summary})
        delivered = await self._release(inp.notify, outcome.output)
        return SubtaskResult(
            step_id=step.id,
            status=Status.COMPLETED,
            output=outcome.output,
            delivered=delivered,
            metrics=outcome.metrics,
        )

    # -- work -----------------------------------------------------------------------------
    async def _attempt(
        self, inp: SubtaskInput, run: StepRun
    ) -> tuple[StepOutcome | None, tuple[EscalationReason, str] | None]:
        """Run the step once; return its outcome, or why it needs a manager."""
        step = run.step
        try:
            if (self._assignee_is_manager and inp.org.depth < inp.org.max_depth
                    and step.type in (StepType.SEARCH, StepType.WRITE)):
                outcome = await self._delegate(inp, run)
            else:
                outcome = await self._with_deadline(inp, run)
        except ACTIVITY_FAILURES as e:
            if isinstance(e.cause, CancelledError):
                raise asyncio.CancelledError from e  # recorded as CANCELLED by run()
            cause = e if isinstance(e, ApplicationError) else e.cause
            kind = cause.type if isinstance(cause, ApplicationError) else None
            reason = (EscalationReason.BUDGET if kind == "BudgetExceeded"
                      else EscalationReason.FAILED)
            return None, (reason, failure_message(e))
        except ChildWorkflowError as e:
            if isinstance(e.cause, CancelledError):
                raise asyncio.CancelledError from e
            return None, (EscalationReason.FAILED, failure_message(e))
        except DeadlinePassed as e:
            return None, (EscalationReason.DEADLINE, str(e))
        if not outcome.success:
            return None, (EscalationReason.FAILED, outcome.error or "failed")
        return outcome, None

    async def _with_deadline(self, inp: SubtaskInput, run: StepRun) -> StepOutcome:
        deadline = run.step.deadline
        if deadline is None or self._deadline_waived:
            return await self._execute(inp, run)
        left = (deadline - workflow.now()).total_seconds()
        work = asyncio.create_task(self._execute(inp, run))
        try:
            await workflow.wait_condition(work.done, timeout=max(left, 0.001))
        except TimeoutError:
            work.cancel()
            # The cancelled work ends in a cancellation error of its own; the deadline is
            # what happened.
            with contextlib.suppress(asyncio.CancelledError, *ACTIVITY_FAILURES):
                await work
            self._deadline_waived = True  # whoever decides has seen it; do not trip again
            when = deadline.strftime("%Y-%m-%d %H:%M:%S")
            raise DeadlinePassed(
                f"step {run.step.id} passed its deadline {when} UTC") from None
        return await work

    async def _delegate(self, inp: SubtaskInput, run: StepRun) -> StepOutcome:
        """A manager decomposes its subtask as a nested task of its own reports."""
        step = run.step
        self._progress(0.1, f"{self._people.assignee} decomposes it")
        inputs = "\n".join(f"- {k}: {v.summary or v.output}" for k, v in run.inputs.items())
        nested = TaskInput(
            prompt=f"{step.title}\n{step.description}\n{inputs}".strip(),
            title=step.title or step.id, assignee=self._people.assignee,
            parent_subtask=run.subtask_id, depth=inp.org.depth + 1,
            token_budget=inp.budgets.task_tokens,
        )
        return await self._nested(run.model_copy(update={"hold_for_review": self._reviewed()}),
                                  nested, suffix="sub")

    async def _nested(self, run: StepRun, task: TaskInput, *, suffix: str) -> StepOutcome:
        self._nested_runs += 1
        wid = f"{run.subtask_id}/{suffix}{self._nested_runs}"
        result: TaskResult = await workflow.execute_child_workflow(
            "TaskWorkflow", task, id=wid, result_type=TaskResult,
            parent_close_policy=ParentClosePolicy.REQUEST_CANCEL,
        )
        outputs = {s.step_id: s.output for s in result.subtasks}
        sinks = [s.step_id for s in result.subtasks
                 if not any(s.step_id in o.dependencies for o in result.subtasks)]
        value = outputs[sinks[0]] if len(sinks) == 1 else {k: outputs[k] for k in sinks}
        outcome = await workflow.execute_activity_method(
            SubtaskActivities.record_result,
            RecordResultInput(run=run, output=value, summary=f"done by nested task {wid}",
                              metrics=result.metrics),
            start_to_close_timeout=policies.STORE_TIMEOUT, retry_policy=policies.STORE_RETRY,
        )
        outcome.metrics = result.metrics
        return outcome

    # -- people ----------------------------------------------------------------------------
    def _reviewed(self) -> bool:
        return (self._people.reviewer is not None
                and self._people.review_policy is not ReviewPolicy.AUTO)

    async def _acquire(self, inp: SubtaskInput) -> str | None:
        """Get an agent with room (waiting QUEUED while there is none); return its id."""
        if not inp.org.enabled:
            return None
        self._attempts += 1
        while True:
            self._slot_free = False  # a wake-up arriving during the call below counts
            got = await workflow.execute_activity_method(
                OrgActivities.assign_subtask,
                AssignInput(task_id=inp.task_id, subtask_id=workflow.info().workflow_id,
                            attempt=self._attempts, required_skills=inp.step.skills,
                            candidates=inp.org.candidates,
                            preferred=self._preferred or inp.step.assignee,
                            reviewer=inp.org.reviewer, score=inp.score),
                start_to_close_timeout=policies.STORE_TIMEOUT,
                retry_policy=policies.STORE_RETRY,
            )
            if not got.org:
                return None
            if got.agent_id is not None:
                self._people = got.people
                self._agents = got.agents
                self._assignee_is_manager = got.is_manager
                return got.agent_id
            self._status, self._detail = Status.QUEUED, got.reason
            # Woken by a finishing subtask's slot; asked again anyway now and then.
            with contextlib.suppress(TimeoutError):
                await workflow.wait_condition(lambda: self._slot_free,
                                              timeout=policies.QUEUE_RECHECK)

    async def _free(self, inp: SubtaskInput) -> None:
        """Give back the slot of the current round (running or still queued); idempotent."""
        if not inp.org.enabled or self._attempts == 0 or self._freed == self._attempts:
            return
        self._freed = self._attempts
        await workflow.execute_activity_method(
            OrgActivities.release_slot,
            ReleaseInput(subtask_id=workflow.info().workflow_id, attempt=self._attempts),
            start_to_close_timeout=policies.STORE_TIMEOUT, retry_policy=policies.STORE_RETRY,
        )

    async def _note(self, inp: SubtaskInput, kind: str, *, status: Status | None = None,
                    waiting_for: str | None = None, data: dict[str, object] | None = None
                    ) -> None:
        if not inp.org.enabled:
            return
        self._notes += 1
        me = workflow.info().workflow_id
        await workflow.execute_activity_method(
            OrgActivities.note_subtask,
            NoteInput(task_id=inp.task_id, subtask_id=me, status=status,
                      waiting_for=waiting_for, kind=kind, key=f"{me}:{kind}:{self._notes}",
                      data=data or {}),
            start_to_close_timeout=policies.STORE_TIMEOUT, retry_policy=policies.STORE_RETRY,
        )

    async def _record_failure(self, inp: SubtaskInput, error: str) -> None:
        self._error, self._status = error, Status.FAILED
        await workflow.execute_activity_method(
            SubtaskActivities.fail_subtask,
            FailSubtaskInput(task_id=inp.task_id, subtask_id=workflow.info().workflow_id,
                             status=Status.FAILED, error=error),
            start_to_close_timeout=policies.STORE_TIMEOUT,
            retry_policy=policies.STORE_RETRY,
        )

    # -- review ----------------------------------------------------------------------------
    async def _review(self, inp: SubtaskInput, outcome: StepOutcome, round_no: int
                      ) -> ReviewInput:
        people = self._people
        if not self._reviewed() or people.reviewer is None:
            return ReviewInput(reviewer_id=people.reviewer or "auto", decision=Decision.APPROVE)
        self._status, self._detail = Status.REVIEWING, f"waiting for {people.reviewer}"
        self._round = round_no
        self._reviews += 1
        await self._note(inp, "review_requested", status=Status.REVIEWING,
                         waiting_for=people.reviewer, data={"round": round_no})
        verdict: ReviewInput | None
        if people.review_policy is ReviewPolicy.LLM:
            verdict = await workflow.execute_activity_method(
                OrgActivities.review_with_llm,
                ReviewRequest(task_id=inp.task_id, subtask_id=workflow.info().workflow_id,
                              reviewer_id=people.reviewer, round=round_no, seq=self._reviews,
                              output_preview=str(outcome.output.output)[:4000],
                              description=f"{inp.step.title}\n{inp.step.description}"),
                task_queue=inp.routing.llm_queue,
                start_to_close_timeout=policies.LLM_STEP_TIMEOUT,
                retry_policy=policies.LLM_RETRY,
            )
        else:
            self._awaiting_review = True
            await workflow.wait_condition(lambda: self._verdict is not None)
            self._awaiting_review = False
            verdict, self._verdict = self._verdict, None
        if verdict is None:  # the wait above only ends with one
            raise ApplicationError("review ended without a verdict", non_retryable=True)
        await self._note(inp, f"review_{verdict.decision.value}", data={
            "round": round_no, "reviewer": verdict.reviewer_id, "feedback": verdict.feedback})
        return verdict

    @workflow.update(name="review")
    async def review(self, verdict: ReviewInput) -> ReviewAck:
        """Approve the result, or reject it with feedback (which reruns the step)."""
        self._verdict = verdict
        return ReviewAck(subtask_id=workflow.info().workflow_id, round=self._round,
                         decision=verdict.decision)

    @review.validator
    def _check_review(self, verdict: ReviewInput) -> None:
        if not self._awaiting_review or self._verdict is not None:
            raise ValueError(f"{workflow.info().workflow_id} is not waiting for a review "
                             f"(status {self._status})")
        if verdict.reviewer_id != self._people.reviewer:
            raise ValueError(f"only {self._people.reviewer} may review "
                             f"{workflow.info().workflow_id}, not {verdict.reviewer_id}")

    # -- escalation ------------------------------------------------------------------------
    async def _escalate(self, inp: SubtaskInput, reason: EscalationReason, error: str
                        ) -> ResolveEscalation | None:
        """Climb the chain until someone decides; None when there is no chain at all."""
        chain = self._people.escalation_chain
        if not inp.org.enabled or not chain:
            return None
        self._escalations += 1
        self._decision = None  # nothing said before this escalation counts for it
        level = 0
        while True:
            holder = chain[level]
            top = level == len(chain) - 1
            esc = Escalation(
                subtask_id=workflow.info().workflow_id, task_id=inp.task_id,
                seq=self._escalations, reason=reason, error=error, holder=holder,
                level=level, chain=chain, opened_at=workflow.now())
            self._escalation = esc
            self._status, self._detail = Status.BLOCKED, f"escalated to {holder}"
            await workflow.execute_activity_method(
                OrgActivities.record_escalation, EscalationRequest(escalation=esc),
                start_to_close_timeout=policies.STORE_TIMEOUT, retry_policy=policies.STORE_RETRY,
            )
            policy = self._people.policies.get(holder, ReviewPolicy.HUMAN)
            decision: ResolveEscalation | None = None
            if policy is ReviewPolicy.LLM:
                decision = await workflow.execute_activity_method(
                    OrgActivities.decide_escalation_with_llm,
                    EscalationRequest(escalation=esc, description=f"{inp.step.title}\n"
                                      f"{inp.step.description}"),
                    task_queue=inp.routing.llm_queue,
                    start_to_close_timeout=policies.LLM_STEP_TIMEOUT,
                    retry_policy=policies.LLM_RETRY,
                )
                if self._decision is not None:  # a person answered meanwhile: theirs wins
                    decision, self._decision = self._decision, None
                elif decision.action is Action.ESCALATE and top:
                    decision = None  # the root's model passes: a person decides
            elif policy is ReviewPolicy.AUTO and not top:
                level += 1  # an 'auto' manager passes trouble up
                continue
            if decision is None:
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
            self._escalation = None
            self._decision = None
            await workflow.execute_activity_method(
                OrgActivities.close_escalation,
                CloseEscalation(escalation_id=esc.id, decision=decision),
                start_to_close_timeout=policies.STORE_TIMEOUT, retry_policy=policies.STORE_RETRY,
            )
            return decision

    async def _act_on(self, inp: SubtaskInput, decision: ResolveEscalation, error: str
                      ) -> StepOutcome | None:
        """Carry out a decision: None means work on the step again."""
        self._detail = f"{decision.by} decided: {decision.action.value}"
        if decision.action is Action.RETRY:
            return None
        if decision.action is Action.REASSIGN:
            self._preferred = decision.assignee
            return None
        if decision.action is Action.SKIP:
            await self._record_failure(inp, f"skipped by {decision.by}: {error}")
            raise ApplicationError(f"step {inp.step.id} was skipped by {decision.by}",
                                   type="Skipped", non_retryable=True)
        # REPLAN: a new sub-plan replaces the step; its output is the step's output.
        plan = decision.plan
        if plan is None:  # the validator requires one
            return None
        run_id = workflow.info().workflow_id
        self._status, self._detail = Status.RUNNING, f"running {decision.by}'s new plan"
        task = TaskInput(plan=plan, title=f"replan of {inp.step.id}", parent_subtask=run_id,
                         assignee=decision.by, depth=inp.org.depth + 1,
                         token_budget=inp.budgets.task_tokens)
        try:
            return await self._nested(
                StepRun(task_id=inp.task_id, subtask_id=run_id, step=inp.step,
                        hold_for_review=self._reviewed()), task, suffix="replan")
        except ChildWorkflowError as e:
            if isinstance(e.cause, CancelledError):
                raise asyncio.CancelledError from e
            raise ReplanFailed(f"the new plan for {inp.step.id} failed: "
                               f"{failure_message(e)}") from e

    @workflow.update(name="resolve_escalation")
    async def resolve_escalation(self, decision: ResolveEscalation) -> Escalation:
        """Decide an open escalation: retry, reassign, replan, skip or escalate further."""
        esc = self._escalation
        self._decision = decision
        if esc is None:  # the validator refuses this
            raise ApplicationError("no open escalation")
        return esc

    @resolve_escalation.validator
    def _check_decision(self, decision: ResolveEscalation) -> None:
        esc = self._escalation
        if esc is None or self._decision is not None:
            raise ValueError(f"{workflow.info().workflow_id} has no open escalation")
        allowed = esc.chain[esc.level:]
        if decision.by not in allowed:
            raise ValueError(f"{decision.by} cannot decide this escalation; it is held by "
                             f"{esc.holder} (or above: {', '.join(allowed[1:]) or 'nobody'})")
        if (decision.action is Action.REASSIGN and self._agents
                and decision.assignee not in self._agents):
            raise ValueError(f"cannot reassign to {decision.assignee!r}: not an active agent")
        if decision.action is Action.ESCALATE and esc.level == len(esc.chain) - 1:
            raise ValueError(f"{esc.holder} is at the top: decide retry, reassign, replan "
                             "or skip")

    @workflow.query(name="escalation")
    def open_escalation(self) -> Escalation | None:
        return self._escalation

    def _progress(self, fraction: float, detail: str) -> None:
        self._fraction, self._detail = fraction, detail

    async def _execute(self, inp: SubtaskInput, run: StepRun) -> StepOutcome:
        step = run.step
        if step.type is StepType.TOOL:
            try:
                return await self._tool(inp, run)
            except ACTIVITY_FAILURES as first:
                if not step.fallback_tool:
                    raise
                self._progress(0.5, f"{step.tool} failed; trying {step.fallback_tool}")
                fallback = step.model_copy(update={
                    "tool": step.fallback_tool,
                    "args": step.args if step.fallback_args is None else step.fallback_args,
                })
                try:
                    return await self._tool(inp, run.model_copy(update={"step": fallback}))
                except ACTIVITY_FAILURES as second:
                    raise ApplicationError(
                        f"tool {step.tool} failed ({failure_message(first)}), and so did "
                        f"fallback {step.fallback_tool} ({failure_message(second)})",
                        type="ToolFailed", non_retryable=True,
                    ) from second
        if step.type is StepType.CODE:
            if step.cells:
                return await run_code(inp, run)
            return await write_and_run_code(inp, run, self._progress)
        if step.type in (StepType.SEARCH, StepType.WRITE):
            return await run_agent(inp, run, self._progress)
        raise ApplicationError(f"no handler for step type {step.type!r}",
                               type="UnknownStepType", non_retryable=True)

    async def _tool(self, inp: SubtaskInput, run: StepRun) -> StepOutcome:
        if inp.routing.local_tools:
            return await workflow.execute_local_activity_method(
                ToolActivities.run_tool_step, run,
                start_to_close_timeout=policies.TOOL_TIMEOUT,
                retry_policy=policies.TOOL_RETRY,
            )
        return await workflow.execute_activity_method(
            ToolActivities.run_tool_step, run,
            task_queue=inp.routing.tool_queue,
            start_to_close_timeout=policies.TOOL_TIMEOUT,
            retry_policy=policies.TOOL_RETRY,
        )

    async def _release(self, notify: list[str], output: StepOutput) -> list[str]:
        """Signal each dependent that this step is done; return those that got it.

        The signals are awaited before the workflow completes: a signal sent in the same
        workflow task as completion would never be delivered. A dependent that does not
        exist yet is left to the parent, which hands it the output when it starts it.
        """

        async def send(child_id: str) -> str | None:
            handle = workflow.get_external_workflow_handle(child_id)
            try:
                await handle.signal(SubtaskWorkflow.dependency_done, DependencyDone(output=output))
            except FailureError:
                return None
            return child_id

        results = await asyncio.gather(*(send(c) for c in notify))
        return [c for c in results if c is not None]


class DeadlinePassed(Exception):
    """The step's deadline passed while it ran (its work was cancelled)."""


class ReplanFailed(Exception):
    """The sub-plan a manager chose failed too: it goes back up the chain."""


def child_id(task_id: str, step_id: str) -> str:
    return subtask_id(task_id, step_id)
