"""Assignment, review and escalation bookkeeping, and the manager's model decisions."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

from pydantic import ValidationError
from temporalio import activity
from temporalio.client import Client, WorkflowExecutionStatus
from temporalio.exceptions import ApplicationError
from temporalio.service import RPCError, RPCStatusCode

from activities import metrics
from activities.boundary import boundary
from activities.errors import BAD_LLM_REPLY
from activities.llm import usage_key
from models.org import InvalidOrg, OrgChart
from models.plan import InvalidPlan
from models.review import (
    AssignInput,
    AssignResult,
    CloseEscalation,
    EscalationRequest,
    NoteInput,
    ReleaseInput,
    ResolveEscalation,
    ReviewInput,
    ReviewRequest,
    people_for,
)
from models.scheduling import AssignmentState
from models.task import Status
from runtime.llm.json_reply import extract_json
from runtime.llm.metered import Charge, MeteredLLM
from runtime.llm.prompts import DECISION_SCHEMA, ESCALATION_SYSTEM, REVIEW_SYSTEM, VERDICT_SCHEMA
from runtime.org_store import OrgStore
from runtime.store import Store

T = TypeVar("T")

# The event a subtask notes when its result is final (SubtaskWorkflow._complete).
COMPLETED_EVENT = "completed"


def _slot_key(subtask_id: str, attempt: int) -> str:
    # Each round of work on a subtask takes its own slot (a rework after a rejection
    # is assigned afresh); the workflow id is what comes before '#'.
    return f"{subtask_id}#{attempt}"


class OrgActivities:
    """Assignment, review and escalation bookkeeping, and the manager's model decisions.

    `client` lets a finished subtask wake the queued subtasks its slot goes to.
    """

    def __init__(
        self, org: OrgStore, store: Store, *, llm: MeteredLLM, client: Client | None
    ) -> None:
        self.org = org
        self.store = store
        self.llm = llm
        self.client = client

    async def _chart(self) -> OrgChart | None:
        try:
            return await self.org.load_org()
        except (InvalidOrg, ValidationError):
            return None

    @activity.defn(name="assign_subtask")
    @boundary
    async def assign_subtask(self, inp: AssignInput) -> AssignResult:
        """Give the subtask to an agent with the skills and room; None: it waits QUEUED."""
        chart = await self._chart()
        if chart is None:
            return AssignResult(reason="no org chart is loaded")
        candidates = inp.candidates
        if inp.preferred and inp.preferred in chart and chart.agent(inp.preferred).active:
            candidates = [inp.preferred]
        key = _slot_key(inp.subtask_id, inp.attempt)
        got = await self.org.assign(key, inp.task_id, inp.required_skills, candidates,
                                    inp.score)
        if (got is None or got.agent_id is None) and await self.reclaim(
                None if candidates is None else list(candidates)):
            # Leaked slots came back: queued work (maybe this one) moves onto them.
            await self._promote_and_wake()
            got = await self.org.get(key)
            if got is not None and got.state is not AssignmentState.RUNNING:
                got = None
        if got is None or got.agent_id is None:
            queued = await self.org.get(key)
            why = queued.reason if queued else "no agent has room"
            waits_for = queued.agent_id if queued else None
            slot = f"a free slot of {waits_for}" if waits_for else "a free slot"
            await self.store.note_subtask(inp.subtask_id, status=Status.QUEUED,
                                          waiting_for=slot)
            return AssignResult(reason=why, org=True, waiting_for=slot)
        people = people_for(chart, got.agent_id, reviewer=inp.reviewer)
        await self.store.note_subtask(inp.subtask_id, status=Status.ASSIGNED,
                                          assignee=got.agent_id, reviewer=people.reviewer)
        await self.store.add_event(
            f"{key}:assigned", task_id=inp.task_id, subtask=inp.subtask_id, kind="assigned",
            data={"agent": got.agent_id, "reason": got.reason})
        return AssignResult(agent_id=got.agent_id, reason=got.reason, people=people, org=True,
                            is_manager=chart.is_manager(got.agent_id),
                            agents=[a.id for a in chart.agents if a.active])

    async def reclaim(self, agent_ids: list[str] | None = None) -> list[str]:
        """Free the slots held by workflows that are closed (terminated, timed out, reset,
        failed: closed without giving their slot back); return the freed assignments.

        A slot is a lease on an agent: it lasts while the workflow holding it runs. This
        runs whenever a step finds no free slot (and such a step asks again every
        `workflows.policies.QUEUE_RECHECK`), so a leaked slot is back within that time,
        whatever became of the worker that held it. Without a Temporal client it does
        nothing."""
        if self.client is None:
            return []
        freed: list[str] = []
        for a in await self.org.running(agent_ids):
            workflow_id = a.subtask_id.split("#", 1)[0]
            try:
                described = await self.client.get_workflow_handle(workflow_id).describe()
            except RPCError as e:
                if e.status is not RPCStatusCode.NOT_FOUND:
                    raise
                status = None
            else:
                status = described.status
            if status is WorkflowExecutionStatus.RUNNING:
                continue
            if await self.org.finish(a.subtask_id):
                activity.logger.warning(
                    "freed %s's slot held by %s: its workflow is %s", a.agent_id,
                    workflow_id, status.name.lower() if status else "gone")
                freed.append(a.subtask_id)
        return freed

    @activity.defn(name="release_slot")
    @boundary
    async def release_slot(self, inp: ReleaseInput) -> list[str]:
        """Free the subtask's slot and wake the queued subtasks that now have room."""
        await self.org.finish(_slot_key(inp.subtask_id, inp.attempt))
        return await self._promote_and_wake()

    async def _promote_and_wake(self) -> list[str]:
        """Hand free slots to queued work and wake its workflows; return those woken."""
        # Pending work moves off overloaded agents before the freed slots are handed out.
        for move in await self.org.rebalance():
            activity.logger.info("rebalanced %s: %s", move.item_id, move.reason)
        woken: list[str] = []
        for _ in range(10):  # bounded: each round frees at least one slot of a gone workflow
            gone = False
            for a in await self.org.promote_queued():
                metrics.queue_wait(a.agent_id, a.created_at, a.started_at)
                workflow_id = a.subtask_id.split("#", 1)[0]
                if self.client is not None:
                    try:
                        await self.client.get_workflow_handle(workflow_id).signal("slot_free")
                    except RPCError as e:
                        # Closed or gone: its slot must not stay taken for ever.
                        activity.logger.info("could not wake %s (%s); freeing its slot",
                                             workflow_id, e.status)
                        await self.org.finish(a.subtask_id)
                        gone = True
                        continue
                woken.append(workflow_id)
            if not gone:
                break
        return woken

    @activity.defn(name="note_subtask")
    @boundary
    async def note_subtask(self, inp: NoteInput) -> None:
        """Record a subtask's status and what it waits for, with an event (idempotent)."""
        await self.store.note_subtask(
                inp.subtask_id, status=Status(inp.status) if inp.status else None,
                waiting_for=inp.waiting_for)
        await self.store.add_event(inp.key, task_id=inp.task_id, subtask=inp.subtask_id,
                                   kind=inp.kind, data=dict(inp.data))
        if inp.kind == COMPLETED_EVENT:
            # Approved (or not reviewed): only now may later agents recall the result.
            await self.store.remember_completed(inp.subtask_id)

    @activity.defn(name="record_escalation")
    @boundary
    async def record_escalation(self, inp: EscalationRequest) -> None:
        """Open (or move up) an escalation; the subtask is BLOCKED on its holder."""
        e = inp.escalation
        if await self.store.open_escalation(
                e.id, task_id=e.task_id, subtask=e.subtask_id, reason=e.reason.value,
                error=e.error, holder=e.holder, level=e.level, chain=e.chain):
            metrics.escalation_opened(e.reason.value)
        await self.store.note_subtask(e.subtask_id, status=Status.BLOCKED,
                                          waiting_for=f"{e.holder} (escalation {e.id})")

    @activity.defn(name="close_escalation")
    @boundary
    async def close_escalation(self, inp: CloseEscalation) -> None:
        """Mark an escalation resolved (with the decision) or cancelled (nobody decided)."""
        decision = inp.decision.model_dump(mode="json") if inp.decision else None
        reason = await self.store.resolve_escalation(inp.escalation_id, decision,
                                                     status=inp.status)
        if reason is not None:
            metrics.escalation_closed(reason, inp.status)

    @activity.defn(name="review_with_llm")
    @boundary
    async def review_with_llm(self, inp: ReviewRequest) -> ReviewInput:
        """Let the reviewing manager's model approve or reject (with feedback)."""
        user = (f"# Step\n{inp.description}\n\n# Result (round {inp.round})\n"
                f"{inp.output_preview}")
        charge = Charge(key=usage_key(), task_id=inp.task_id, subtask_id=inp.subtask_id,
                        purpose="review", budgets=inp.budgets)

        def verdict(data: Any) -> ReviewInput:
            return ReviewInput(reviewer_id=inp.reviewer_id, decision=data["decision"],
                               feedback=str(data.get("feedback", "")))

        return await self._ask(REVIEW_SYSTEM, user, VERDICT_SCHEMA, charge, verdict)

    @activity.defn(name="decide_escalation_with_llm")
    @boundary
    async def decide_escalation_with_llm(self, inp: EscalationRequest) -> ResolveEscalation:
        """Let the holding manager's model decide: retry, skip or escalate."""
        e = inp.escalation
        charge = Charge(key=usage_key(), task_id=e.task_id, subtask_id=e.subtask_id,
                        purpose="escalation", budgets=inp.budgets)
        return await self._ask(
            ESCALATION_SYSTEM, f"# Step\n{inp.description}\n\n# Trouble ({e.reason.value})\n"
            f"{e.error}", DECISION_SCHEMA, charge,
            lambda data: ResolveEscalation(by=e.holder, action=data["action"],
                                           note=str(data.get("note", ""))),
            # No usable decision is no decision: the trouble climbs at once (the ladder
            # counts it as none) instead of asking the same model again and again.
            unusable_is_final=True)

    async def _ask(self, system: str, user: str, schema: dict[str, Any], charge: Charge,
                   read: Callable[[Any], T], *, unusable_is_final: bool = False) -> T:
        """Return what `read` makes of the JSON the manager's model answers with.

        The call is metered like every model call; a reply `read` cannot use is a
        BAD_LLM_REPLY, retried (the model may do better) unless `unusable_is_final`.
        """
        reply, _ = await self.llm.call([{"role": "system", "content": system},
                                        {"role": "user", "content": user}], charge,
                                       schema=schema)
        try:
            return read(extract_json(reply.text))
        except (InvalidPlan, KeyError, TypeError, ValueError) as e:
            raise ApplicationError(f"the {charge.purpose} model gave no usable answer: {e}",
                                   type=BAD_LLM_REPLY, non_retryable=unusable_is_final) from e
