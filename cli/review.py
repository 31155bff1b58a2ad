"""`beestown review`, `resolve`, `escalations` and `beneath`: where people decide."""

from __future__ import annotations

import argparse
import asyncio
import difflib
from datetime import timedelta
from typing import Any

from pydantic import BaseModel, ValidationError
from rich import box
from rich.markup import escape
from rich.table import Table
from temporalio.client import (
    WorkflowQueryFailedError,
    WorkflowUpdateFailedError,
    WorkflowUpdateRPCTimeoutOrCancelledError,
)
from temporalio.exceptions import ApplicationError
from temporalio.service import RPCError, RPCStatusCode

from cli.output import cut, emit_json, rest, short_when, styled, when
from cli.session import EXIT_OK, BadUsage, Refused, Session
from models.io import SubtaskView
from models.org import InvalidOrg
from models.payload import PayloadTooLarge, check_payload
from models.plan import InvalidPlan
from models.review import (
    Action,
    Decision,
    Escalation,
    ResolveEscalation,
    ReviewAck,
    ReviewInput,
)
from runtime.documents import describe, load_plan
from workflows.failures import failure_message

REVIEW_HELP = """\
Approve or reject a subtask waiting for review (REVIEWING). `beestown run --wait` and
`beestown tree` show who reviews it and the open round. Approved, the step completes and
its dependents run; rejected, it is worked again with the feedback, and after
BEESTOWN_REVIEW_ROUNDS rejections it escalates to the reviewer's manager."""

RESOLVE_HELP = """\
Decide a subtask's open escalation (the step is BLOCKED waiting for its holder). Give the
escalation id `beestown escalations` lists (TASK_ID/STEP_ID#N): a decision for an
escalation no longer open is refused as stale. The holder or anyone above it may decide."""

PAST = {Decision.APPROVE: "approved", Decision.REJECT: "rejected"}


# -- updates: review and resolve -------------------------------------------------------------
async def _update(s: Session, workflow_id: str, name: str, payload: BaseModel,
                  result_type: type[BaseModel], within_s: float) -> Any:
    try:
        check_payload(payload, what=f"the {name} payload")
    except PayloadTooLarge as e:
        raise BadUsage(str(e)) from e
    handle = (await s.client()).get_workflow_handle(workflow_id)
    try:
        return await asyncio.wait_for(
            handle.execute_update(name, payload, result_type=result_type), timeout=within_s)
    except WorkflowUpdateFailedError as e:
        cause = e.cause
        msg = cause.message if isinstance(cause, ApplicationError) else failure_message(cause)
        raise Refused(f"{name} refused: {msg}") from e
    except RPCError as e:
        if e.status is RPCStatusCode.NOT_FOUND:
            raise Refused(f"no workflow {workflow_id!r} on Temporal at "
                          f"{s.settings.temporal_address} ({s.settings.temporal_namespace}); "
                          "a subtask id is TASK_ID/STEP_ID (beestown tree TASK_ID)") from e
        raise Refused(f"{name} on {workflow_id} failed: {e.message}") from e
    except (TimeoutError, WorkflowUpdateRPCTimeoutOrCancelledError) as e:
        raise Refused(f"{name} on {workflow_id}: no worker answered within {within_s:g} s "
                      "(is a worker running on its task queue?)") from e


async def _step_view(s: Session, subtask_id: str) -> SubtaskView | None:
    """The step's own `progress` query (None when it cannot answer now)."""
    handle = (await s.client()).get_workflow_handle(subtask_id)
    try:
        return await asyncio.wait_for(handle.query(
            "progress", result_type=SubtaskView, rpc_timeout=timedelta(seconds=5)), timeout=6)
    except (RPCError, WorkflowQueryFailedError, TimeoutError):
        return None


async def cmd_review(args: argparse.Namespace, s: Session) -> int:
    round_ = args.round
    if round_ is None:  # the round open now, so that a verdict cannot land on a later one
        view = await _step_view(s, args.subtask_id)
        round_ = view.review_round if view is not None else None
    try:
        verdict = ReviewInput(reviewer_id=args.reviewer,
                              decision=Decision.APPROVE if args.approve else Decision.REJECT,
                              feedback=args.feedback or "", round=round_)
    except ValidationError as e:
        raise BadUsage(describe(e)) from e
    ack: ReviewAck = await _update(s, args.subtask_id, "review", verdict, ReviewAck,
                                   args.timeout)
    if args.json:
        emit_json(ack)
    else:
        s.out.print(f"{escape(ack.subtask_id)}: round {ack.round} "
                    f"[bold]{PAST[ack.decision]}[/] by {escape(args.reviewer)}")
    return EXIT_OK


def split_escalation_id(given: str) -> tuple[str, str | None]:
    """`T/a#2` -> ('T/a', 'T/a#2'); `T/a` -> ('T/a', None)."""
    subtask, sep, seq = given.rpartition("#")
    if sep and subtask and seq.isdigit():
        return subtask, given
    return given, None


async def cmd_resolve(args: argparse.Namespace, s: Session) -> int:
    plan = None
    if args.plan is not None:
        try:
            plan = load_plan(args.plan, max_steps=s.settings.max_plan_steps)
        except InvalidPlan as e:
            raise BadUsage("invalid plan:\n  " + "\n  ".join(e.errors)) from e
    subtask_id, escalation_id = split_escalation_id(args.subtask_id)
    if escalation_id is None:  # the one open now, so that it cannot land on a later one
        view = await _step_view(s, subtask_id)
        escalation_id = view.escalation_id if view is not None else None
    try:
        decision = ResolveEscalation(by=args.by, action=Action(args.action),
                                     assignee=args.assignee, plan=plan, note=args.note,
                                     escalation_id=escalation_id)
    except ValidationError as e:
        raise BadUsage(describe(e)) from e
    esc: Escalation = await _update(s, subtask_id, "resolve_escalation", decision,
                                    Escalation, args.timeout)
    if args.json:
        emit_json({"escalation": esc.model_dump(mode="json") | {"id": esc.id},
                   "decision": decision.model_dump(mode="json", exclude={"plan"})})
    else:
        s.out.print(f"escalation {escape(esc.id)} ({esc.reason.value}, held by "
                    f"{escape(esc.holder)}): [bold]{decision.action.value}[/] "
                    f"by {escape(args.by)}")
    return EXIT_OK


# -- escalations -------------------------------------------------------------------------------
async def cmd_escalations(args: argparse.Namespace, s: Session) -> int:
    rows = await (await s.store()).escalations(only_open=not args.all)
    if args.json:
        emit_json(rows)
        return EXIT_OK
    if not rows:
        s.out.print("no escalations" if args.all else "no open escalations")
        return EXIT_OK
    table = Table(title="escalations" if args.all else "open escalations",
                  title_justify="left", box=box.SIMPLE_HEAD, pad_edge=False)
    # The id is what `beestown resolve` takes: it stays whole; the error gives way.
    cols = ["id", "reason", "holder", "error", "opened"]
    if args.all:
        cols.insert(1, "status")
    # Fixed widths but for the error, which takes what is left (rich: ratio).
    widths = {"id": max(len(r["id"]) for r in rows), "reason": 13 if any(
              r["reason"] == "review_rounds" for r in rows) else 8,
              "holder": min(12, max(len(r["holder"]) for r in rows) + 2), "opened": 11}
    if args.all:
        widths["status"] = 9
    for col in cols:
        table.add_column(col, no_wrap=True, overflow="fold" if col == "id" else "ellipsis",
                         width=widths.get(col, rest(s.out.width, widths)))
    for r in rows:
        # The holder, with "↑" when the escalation has climbed (--json has the chain).
        holder = escape(r["holder"]) + (" ↑" if r["level"] else "")
        cells = [escape(r["id"]), r["reason"], holder, cut(r["error"], 60),
                 short_when(r["opened_at"])]
        if args.all:
            cells.insert(1, r["status"])
        table.add_row(*cells)
    s.out.print(table)
    return EXIT_OK


# -- beneath: a manager's view ---------------------------------------------------------------
async def cmd_beneath(args: argparse.Namespace, s: Session) -> int:
    from runtime.org_store import OrgStore

    pool = await s.pool()
    try:
        chart = await OrgStore(pool).load_org()
    except (InvalidOrg, ValidationError) as e:
        raise BadUsage("no org chart loaded: beestown org load FILE") from e
    if args.agent_id not in chart:
        ids = [a.id for a in chart.agents]
        close = difflib.get_close_matches(args.agent_id, ids, n=1)
        hint = f"; did you mean {close[0]!r}?" if close else f" (agents: {', '.join(ids)})"
        raise Refused(f"there is no agent {args.agent_id!r} in the org chart stored in "
                      f"{s.database}{hint}")
    team = [args.agent_id, *(a.id for a in chart.subtree(args.agent_id))]
    rows = await pool.fetch(
        """
        SELECT s.id, s.assignee, s.status, s.waiting_for, s.updated_at,
               coalesce((SELECT sum(prompt_tokens + completion_tokens) FROM usage u
                         WHERE u.subtask_id = s.id), 0) AS tokens
        FROM subtasks s WHERE s.assignee = ANY($1::text[])
          AND ($2 OR s.status NOT IN ('COMPLETED', 'FAILED', 'CANCELLED', 'BLOCKED')
               OR s.waiting_for IS NOT NULL)
        ORDER BY s.updated_at DESC LIMIT $3
        """,
        team, args.all, args.limit,
    )
    reports = await pool.fetch(
        """
        SELECT subtask_id, data, created_at FROM events
        WHERE kind = 'completed' AND data->>'to' = $1 ORDER BY created_at DESC LIMIT $2
        """,
        args.agent_id, args.limit,
    )
    work = [dict(r) for r in rows]
    received = [{"subtask_id": r["subtask_id"], "at": r["created_at"], **r["data"]}
                for r in reports]
    if args.json:
        emit_json({"agent": args.agent_id, "team": team, "work": work, "reports": received})
        return EXIT_OK
    table = Table(title=f"work beneath {args.agent_id} ({len(team)} agents)",
                  title_justify="left")
    for col in ("subtask", "assignee", "status", "waiting for", "tokens", "updated"):
        table.add_column(col, overflow="fold")
    for w in work:
        table.add_row(escape(w["id"]), escape(w["assignee"] or ""), styled(w["status"]),
                      escape(w["waiting_for"] or ""), str(w["tokens"]), when(w["updated_at"]))
    s.out.print(table)
    if received:
        s.out.print(f"[bold]reports to {escape(args.agent_id)}[/]")
        for r in received:
            s.out.print(f"  {escape(r['subtask_id'])}: {escape(str(r.get('summary', '')))}")
    return EXIT_OK
