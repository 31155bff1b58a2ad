"""What a person can do from the board: start a task, review a step, decide an escalation.

Each goes through the same Temporal operation the CLI and the `temporal` CLI use, only
after checking the person acts for the agent named, and leaves an audit row.
"""

from __future__ import annotations

import asyncio
import secrets
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import yaml
from pydantic import BaseModel, ValidationError
from temporalio.client import (
    Client,
    WorkflowUpdateFailedError,
    WorkflowUpdateRPCTimeoutOrCancelledError,
)
from temporalio.common import WorkflowIDReusePolicy
from temporalio.exceptions import ApplicationError, WorkflowAlreadyStartedError
from temporalio.service import RPCError

from board.accounts import Accounts, Person
from board.errors import BoardError, Invalid
from models.io import TaskInput
from models.plan import InvalidPlan, Plan
from models.review import Action, Decision, Escalation, ResolveEscalation, ReviewAck, ReviewInput
from models.task import Priority
from runtime.documents import parse_plan
from runtime.settings import Settings

UPDATE_TIMEOUT_S = 30.0  # a person waits for the worker to accept the update, no longer


class Refused(BoardError):
    """Temporal (the update's validator, or the server) said no; the message says why."""


@dataclass
class StartForm:
    prompt: str = ""
    plan_text: str = ""
    plan_name: str = ""
    title: str = ""
    priority: str = "medium"
    deadline: str = ""  # datetime-local, read as UTC
    assignee: str = ""
    budget: str = ""


def new_task_id() -> str:
    return f"task-{datetime.now(UTC):%Y%m%d-%H%M%S}-{secrets.token_hex(3)}"


def _validation_errors(e: ValidationError) -> list[str]:
    out = []
    for err in e.errors():
        loc = ".".join(str(p) for p in err["loc"])
        msg = err["msg"].removeprefix("Value error, ")
        out.append(f"{loc}: {msg}" if loc else msg)
    return out


def read_plan(text: str, *, name: str, max_steps: int) -> Plan:
    """Return the valid plan in an uploaded YAML/JSON file, or raise Invalid."""
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as e:
        raise Invalid([f"{name} is neither YAML nor JSON: {e}"]) from e
    try:
        return parse_plan(data, max_steps=max_steps)
    except InvalidPlan as e:
        raise Invalid([f"{name}: {err}" for err in e.errors]) from e


def task_input(form: StartForm, person: Person, settings: Settings, agents: list[str]
               ) -> TaskInput:
    """Return the TaskInput a form asks for, or raise Invalid naming every problem."""
    errors: list[str] = []
    prompt = form.prompt.strip()
    plan: Plan | None = None
    if bool(prompt) == bool(form.plan_text.strip()):
        errors.append("give either a prompt or a plan file (not both)")
    elif form.plan_text.strip():
        try:
            plan = read_plan(form.plan_text, name=form.plan_name or "the plan",
                             max_steps=settings.max_plan_steps)
        except Invalid as e:
            errors.extend(e.errors)
    elif not settings.llm_configured:
        errors.append("no LLM endpoint is configured: upload an explicit plan instead")
    if form.priority not in {p.value for p in Priority}:
        errors.append(f"unknown priority {form.priority!r}")
    deadline = None
    if form.deadline.strip():
        try:
            deadline = datetime.fromisoformat(form.deadline.strip())
        except ValueError:
            errors.append(f"deadline {form.deadline!r} is not a date and time")
        else:
            if deadline.tzinfo is None:
                deadline = deadline.replace(tzinfo=UTC)
            if deadline <= datetime.now(UTC):
                errors.append("the deadline has already passed")
    budget = None
    if form.budget.strip():
        try:
            budget = int(form.budget.strip())
            if budget < 1:
                raise ValueError
        except ValueError:
            errors.append("the token budget must be a whole number above 0")
    assignee = form.assignee.strip() or None
    if assignee and agents and assignee not in agents:
        errors.append(f"unknown agent {assignee!r}")
    if len(form.title) > 200:
        errors.append("the title is longer than 200 characters")
    if errors:
        raise Invalid(errors)
    try:
        return TaskInput(prompt=prompt, plan=plan, title=form.title.strip(),
                         priority=Priority(form.priority), deadline=deadline,
                         token_budget=budget, assignee=assignee, creator=person.name)
    except ValidationError as e:
        raise Invalid(_validation_errors(e)) from e


async def start_task(client: Client, settings: Settings, accounts: Accounts, person: Person,
                     task: TaskInput) -> str:
    """Start the task's workflow; return its id (the task id)."""
    task_id = new_task_id()
    try:
        await client.start_workflow(
            "TaskWorkflow", task, id=task_id, task_queue=settings.task_queue,
            id_reuse_policy=WorkflowIDReusePolicy.REJECT_DUPLICATE,
            static_summary=(task.title or (task.plan.title if task.plan else "")
                            or task.prompt)[:200],
        )
    except (RPCError, WorkflowAlreadyStartedError) as e:
        await accounts.audit(person, agent=task.assignee, action="start", workflow_id=task_id,
                             payload=_summary(task), outcome=f"failed: {e}")
        raise Refused(f"could not start the task: {e}") from e
    await accounts.audit(person, agent=task.assignee, action="start", workflow_id=task_id,
                         payload=_summary(task), outcome="ok")
    return task_id


def _summary(task: TaskInput) -> dict[str, Any]:
    data = task.model_dump(mode="json", exclude={"plan"}, exclude_defaults=True)
    if task.plan is not None:
        data["plan_steps"] = [s.id for s in task.plan.steps]
    return data


async def _update(client: Client, workflow_id: str, name: str, payload: BaseModel,
                  result_type: type[BaseModel]) -> Any:
    handle = client.get_workflow_handle(workflow_id)
    try:
        return await asyncio.wait_for(
            handle.execute_update(name, payload, result_type=result_type),
            timeout=UPDATE_TIMEOUT_S)
    except WorkflowUpdateFailedError as e:
        cause = e.cause
        msg = cause.message if isinstance(cause, ApplicationError) else str(cause or e)
        raise Refused(msg) from e
    except RPCError as e:
        raise Refused(f"{name} on {workflow_id} failed: {e.message}") from e
    except (TimeoutError, WorkflowUpdateRPCTimeoutOrCancelledError) as e:
        raise Refused(f"no worker answered within {UPDATE_TIMEOUT_S:g} s "
                      "(is a worker running?)") from e


async def _authorize(accounts: Accounts, person: Person, *, agent: str, action: str,
                     workflow_id: str, payload: dict[str, Any]) -> None:
    """Raise Forbidden (and record the attempt) unless the person acts for `agent`."""
    try:
        person.check(agent)
    except BoardError:
        await accounts.audit(person, agent=agent, action=action, workflow_id=workflow_id,
                             payload=payload, outcome="forbidden")
        raise


async def _audited(accounts: Accounts, person: Person, *, agent: str, action: str,
                   workflow_id: str, payload: dict[str, Any],
                   send: Callable[[], Awaitable[Any]]) -> Any:
    """Send, and record the outcome either way (the person is already authorized)."""
    try:
        result = await send()
    except Refused as e:
        await accounts.audit(person, agent=agent, action=action, workflow_id=workflow_id,
                             payload=payload, outcome=f"refused: {e}")
        raise
    await accounts.audit(person, agent=agent, action=action, workflow_id=workflow_id,
                         payload=payload, outcome="ok")
    return result


async def review(client: Client, accounts: Accounts, person: Person, *, subtask_id: str,
                 agent: str, decision: str, feedback: str) -> ReviewAck:
    """Send the `review` update as `agent` (whom the person must act for)."""
    payload = {"decision": decision, "feedback": feedback}
    await _authorize(accounts, person, agent=agent, action="review", workflow_id=subtask_id,
                     payload=payload)
    try:
        verdict = ReviewInput(reviewer_id=agent or "?", decision=Decision(decision),
                              feedback=feedback)
    except (ValidationError, ValueError) as e:
        errors = (_validation_errors(e) if isinstance(e, ValidationError)
                  else [f"unknown decision {decision!r}"])
        raise Invalid(errors) from e

    async def send() -> ReviewAck:
        ack: ReviewAck = await _update(client, subtask_id, "review", verdict, ReviewAck)
        return ack

    ack: ReviewAck = await _audited(accounts, person, agent=agent, action="review",
                                    workflow_id=subtask_id, payload=payload, send=send)
    return ack


async def resolve(client: Client, accounts: Accounts, person: Person, settings: Settings, *,
                  subtask_id: str, agent: str, action: str, assignee: str, plan_text: str,
                  plan_name: str, note: str) -> Escalation:
    """Send the `resolve_escalation` update as `agent` (whom the person must act for)."""
    await _authorize(accounts, person, agent=agent, action="resolve", workflow_id=subtask_id,
                     payload={"action": action, "assignee": assignee, "note": note})
    plan = None
    if action == Action.REPLAN.value:
        if not plan_text.strip():
            raise Invalid(["replan needs a plan file"])
        plan = read_plan(plan_text, name=plan_name or "the plan",
                         max_steps=settings.max_plan_steps)
    try:
        decision = ResolveEscalation(by=agent, action=Action(action),
                                     assignee=assignee.strip() or None, plan=plan, note=note)
    except (ValidationError, ValueError) as e:
        raise Invalid(_validation_errors(e) if isinstance(e, ValidationError)
                      else [f"unknown action {action!r}"]) from e
    payload = decision.model_dump(mode="json", exclude={"plan"}) | (
        {"plan_steps": [s.id for s in plan.steps]} if plan else {})

    async def send() -> Escalation:
        esc: Escalation = await _update(client, subtask_id, "resolve_escalation", decision,
                                        Escalation)
        return esc

    esc: Escalation = await _audited(accounts, person, agent=agent, action="resolve",
                                     workflow_id=subtask_id, payload=payload, send=send)
    return esc
