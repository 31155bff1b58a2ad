"""The board's pages and form posts: sign-in, tasks, a task, a step, start, reviews,
escalations, org chart, costs, artifacts, and the live event stream."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from datetime import datetime
from typing import Any
from urllib.parse import quote, urlencode

from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import (
    RedirectResponse,
    Response,
    StreamingResponse,
)

from board import actions, queries
from board.accounts import Person
from board.errors import BoardError, Invalid
from board.graph import dot_quote, draw, steps_from_rows
from board.handling import (
    back,
    checked_form,
    csrf_token,
    flash,
    local_path,
    page,
    text,
    upload,
)
from board.live import RESYNC, Change
from board.render import bar_chart, climbs_at
from board.state import Board


async def login(request: Request) -> Response:
    board: Board = request.app.state.board
    nxt = local_path(request.query_params.get("next", "/tasks"), "/tasks")
    if request.method == "GET":
        return page(request, "login.html", next=nxt, error=None,
                    no_accounts=await board.accounts.count() == 0)
    form = await checked_form(request)
    name, password = text(form, "name").strip(), text(form, "password")
    ip = request.client.host if request.client else "?"
    keys = (f"ip:{ip}", f"name:{name}")
    if board.limiter.blocked(*keys):
        return page(request, "login.html", status_code=429, next=nxt, no_accounts=False,
                    error="too many failed sign-ins: wait a minute and try again")
    person = await board.accounts.verify(name, password)
    if person is None:
        board.limiter.failed(*keys)
        return page(request, "login.html", status_code=401, next=nxt, no_accounts=False,
                    error="wrong name or password")
    request.session.clear()  # a fresh session (and CSRF token) on every sign-in
    request.session["person"] = person.name
    csrf_token(request)
    return RedirectResponse(nxt, status_code=303)


async def logout(request: Request) -> Response:
    await checked_form(request)
    request.session.clear()
    return RedirectResponse("/login", status_code=303)


# -- pages ------------------------------------------------------------------------------------
def _cursor(value: str) -> tuple[datetime, str] | None:
    stamp, _, task_id = value.partition("|")
    try:
        return datetime.fromisoformat(stamp), task_id
    except ValueError:
        return None


async def tasks_page(request: Request, person: Person) -> Response:
    board: Board = request.app.state.board
    q = request.query_params
    f = queries.TaskFilter(
        status=q.get("status", "") if q.get("status", "") in queries.STATUSES else "",
        priority=q.get("priority", "") if q.get("priority", "") in queries.PRIORITIES else "",
        assignee=q.get("assignee", "")[:100], text=q.get("q", "")[:200],
        nested=q.get("nested") == "1", before=_cursor(q.get("before", "")))
    result = await queries.list_tasks(board.pool, f, limit=board.board.page_size)
    base = {k: v for k, v in (("status", f.status), ("priority", f.priority),
                              ("assignee", f.assignee), ("q", f.text)) if v}
    if f.nested:
        base["nested"] = "1"
    next_url = None
    if result.next_cursor:
        stamp, last = result.next_cursor
        next_url = "/tasks?" + urlencode(base | {"before": f"{stamp.isoformat()}|{last}"})
    return page(request, "tasks.html", f=f, result=result, statuses=queries.STATUSES,
                priorities=queries.PRIORITIES, agents=await queries.task_assignees(board.pool),
                next_url=next_url, first_url="/tasks?" + urlencode(base),
                all_url="/tasks?" + urlencode({k: v for k, v in base.items() if k != "status"}),
                topic="all")


async def task_page(request: Request, person: Person) -> Response:
    board: Board = request.app.state.board
    task_id = request.query_params.get("id", "")
    view = await queries.task_view(board.pool, task_id)
    if view is None:
        # Just started: the worker has not stored it yet. The page waits for it, live.
        run_id = await board.run_id(task_id) if task_id else None
        if run_id is None:
            raise HTTPException(404, f"no task {task_id!r}")
        return page(request, "task_pending.html", task_id=task_id, run_id=run_id,
                    topic=f"task:{task_id}")
    steps = steps_from_rows(view.steps, view.nested)
    try:
        picture = await draw(steps, board.layouts)
        graph_error = None
    except BoardError as e:
        picture, graph_error = None, str(e)
    return page(request, "task.html", view=view, t=view.task, picture=picture,
                graph_error=graph_error, topic=f"task:{task_id}",
                terminal=queries.TERMINAL)


async def step_page(request: Request, person: Person) -> Response:
    board: Board = request.app.state.board
    sub_id = request.query_params.get("id", "")
    view = await queries.step_view(board.pool, sub_id)
    if view is None:
        raise HTTPException(404, f"no step {sub_id!r}")
    audit = [dict(r) for r in await board.pool.fetch(
        "SELECT person, agent, action, payload, outcome, at FROM board_audit"
        " WHERE workflow_id = $1 ORDER BY at, id", sub_id)]
    run_id = await board.run_id(sub_id) if view.step["status"] not in ("PENDING",) else None
    open_esc = next((e for e in view.escalations if e["status"] == "open"), None)
    may_decide = [a for a in (open_esc["chain"][open_esc["level"]:] if open_esc else [])
                  if person.may_act_for(a)]
    return page(request, "step.html", v=view, s=view.step, audit=audit, run_id=run_id,
                open_esc=open_esc, may_decide=may_decide,
                may_review=view.step["status"] == "REVIEWING"
                and person.may_act_for(view.step["reviewer"] or ""),
                tool_calls=_tool_calls(view.transcript), topic=f"subtask:{sub_id}",
                cells=_cells(view.step.get("spec") or {}),
                agents=await queries.task_assignees(board.pool))


def _cells(spec: dict[str, Any]) -> list[str]:
    code = spec.get("code")
    if isinstance(code, str):
        return [code]
    return [c for c in code if isinstance(c, str)] if isinstance(code, list) else []


def _tool_calls(transcript: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Pair each tool call in a transcript with the result the tool sent back."""
    results = {m.get("tool_call_id"): m.get("content") for m in transcript
               if m.get("role") == "tool"}
    calls = []
    for m in transcript:
        for c in m.get("tool_calls") or []:
            fn = c.get("function") or {}
            calls.append({"name": fn.get("name", "?"), "arguments": fn.get("arguments", ""),
                          "result": results.get(c.get("id"))})
    return calls


async def start_page(request: Request, person: Person) -> Response:
    board: Board = request.app.state.board
    agents = await queries.task_assignees(board.pool)
    form = actions.StartForm()
    errors: list[str] = []
    if request.method == "POST":
        data = await checked_form(request)
        plan_text, plan_name = await upload(data, "plan")
        form = actions.StartForm(
            prompt=text(data, "prompt"), plan_text=plan_text, plan_name=plan_name,
            title=text(data, "title"), priority=text(data, "priority") or "medium",
            deadline=text(data, "deadline"), assignee=text(data, "assignee"),
            budget=text(data, "budget"))
        try:
            task = actions.task_input(form, person, board.settings, agents)
            task_id = await actions.start_task(await board.temporal(), board.settings,
                                               board.accounts, person, task)
        except Invalid as e:
            errors = e.errors
        except actions.Refused as e:
            errors = [str(e)]
        else:
            flash(request, "ok", f"started {task_id}")
            return RedirectResponse("/task?id=" + quote(task_id, safe=""), status_code=303)
    return page(request, "start.html", status_code=400 if errors else 200, form=form,
                errors=errors, agents=agents, priorities=queries.PRIORITIES,
                llm=board.settings.llm_configured)


async def reviews_page(request: Request, person: Person) -> Response:
    board: Board = request.app.state.board
    rows = await queries.waiting_reviews(board.pool, list(person.acts_for))
    return page(request, "reviews.html", rows=rows, topic="reviews")


async def review_post(request: Request, person: Person) -> Response:
    board: Board = request.app.state.board
    form = await checked_form(request)
    sub_id, agent = text(form, "subtask"), text(form, "agent")
    decision, feedback = text(form, "decision"), text(form, "feedback")
    try:
        ack = await actions.review(await board.temporal(), board.accounts, person,
                                   subtask_id=sub_id, agent=agent, decision=decision,
                                   feedback=feedback)
    except Invalid as e:
        flash(request, "error", f"{sub_id}: " + "; ".join(e.errors))
    except actions.Refused as e:
        flash(request, "error", f"{sub_id}: refused by the workflow: {e}")
    else:
        done = {"approve": "approved", "reject": "rejected"}[ack.decision.value]
        flash(request, "ok", f"{ack.subtask_id}: round {ack.round + 1} {done} as {agent}")
    return back(request, "/reviews")


async def escalations_page(request: Request, person: Person) -> Response:
    board: Board = request.app.state.board
    rows = await queries.open_escalations(board.pool)
    for r in rows:
        r["climbs_at"] = climbs_at(r["opened_at"], r["level"], len(r["chain"]),
                                   board.settings.escalation_timeout_s)
        r["may_decide"] = [a for a in r["chain"][r["level"]:] if person.may_act_for(a)]
    return page(request, "escalations.html", rows=rows, topic="escalations",
                agents=await queries.task_assignees(board.pool))


async def resolve_post(request: Request, person: Person) -> Response:
    board: Board = request.app.state.board
    form = await checked_form(request)
    sub_id = text(form, "subtask")
    plan_text, plan_name = await upload(form, "plan")
    try:
        esc = await actions.resolve(
            await board.temporal(), board.accounts, person, board.settings, subtask_id=sub_id,
            agent=text(form, "agent"), action=text(form, "action"),
            assignee=text(form, "assignee"), plan_text=plan_text, plan_name=plan_name,
            note=text(form, "note"))
    except Invalid as e:
        flash(request, "error", f"{sub_id}: " + "; ".join(e.errors))
    except actions.Refused as e:
        flash(request, "error", f"{sub_id}: refused by the workflow: {e}")
    else:
        flash(request, "ok", f"escalation {esc.id}: {text(form, 'action')} "
                             f"as {text(form, 'agent')}")
    return back(request, "/escalations")


async def org_page(request: Request, person: Person) -> Response:
    board: Board = request.app.state.board
    rows = await queries.org_rows(board.pool)
    picture = None
    if rows:
        source = _org_dot(rows)
        try:
            picture = await board.layouts.svg(source)
        except BoardError:
            picture = None
    return page(request, "org.html", rows=rows, picture=picture, topic="all")


def _org_dot(rows: list[dict[str, Any]]) -> str:
    lines = ["digraph org {", '  graph [rankdir=TB, bgcolor="transparent"];',
             '  node [shape=box, style="rounded,filled", fillcolor="#f8fafc",'
             ' fontname="Helvetica", fontsize=10];']
    ids = {r["id"] for r in rows}
    for r in rows:
        label = "\\n".join(dot_quote(x)[1:-1] for x in [
            r["id"], r["name"] or "", f"{r['review_policy']} review · cap {r['capacity']}"] if x)
        fill = "#f8fafc" if r["active"] else "#fecaca"
        lines.append(f"  {dot_quote(r['id'])} [label=\"{label}\", fillcolor=\"{fill}\"];")
    for r in rows:
        if r["reports_to"] in ids:
            lines.append(f"  {dot_quote(r['reports_to'])} -> {dot_quote(r['id'])};")
    lines.append("}")
    return "\n".join(lines)


async def costs_page(request: Request, person: Person) -> Response:
    board: Board = request.app.state.board
    c = await queries.costs(board.pool)
    chart = bar_chart([(f"{d['day']:%m-%d}", d["cost"]) for d in c.by_day], unit="$")
    token_chart = bar_chart([(f"{d['day']:%m-%d}", float(d["tokens"])) for d in c.by_day],
                            fmt="{:,.0f}")
    return page(request, "costs.html", c=c, chart=chart, token_chart=token_chart)


async def blob(request: Request, person: Person) -> Response:
    board: Board = request.app.state.board
    row = await board.pool.fetchrow("SELECT name, mime, data FROM blobs WHERE id = $1",
                                    request.query_params.get("id", ""))
    if row is None:
        raise HTTPException(404, "no such artifact")
    inline = row["mime"] == "image/png"
    name = quote(row["name"], safe="")
    return Response(bytes(row["data"]),
                    media_type="image/png" if inline else "application/octet-stream",
                    headers={"Content-Disposition": f"{'inline' if inline else 'attachment'};"
                             f" filename*=UTF-8''{name}"})


async def _changes(q: asyncio.Queue[Change | None], topic: str) -> AsyncIterator[str]:
    """The SSE text of each change on `q` that concerns `topic`, with keepalives."""
    yield "retry: 1000\n: connected\n\n"
    while True:
        try:
            change = await asyncio.wait_for(q.get(), timeout=15)
        except TimeoutError:
            yield ": keepalive\n\n"
            continue
        if change is None:
            return
        if change is RESYNC or change.concerns(topic):
            yield "data: " + json.dumps(change.__dict__) + "\n\n"


async def events(request: Request, person: Person) -> Response:
    """Server-sent events: one per change that concerns the page's topic."""
    board: Board = request.app.state.board
    topic = request.query_params.get("topic", "all")

    async def stream() -> AsyncIterator[str]:
        async with board.hub.subscribe() as q:
            board.metrics.streams.inc()
            try:
                async for chunk in _changes(q, topic):
                    yield chunk
            finally:
                board.metrics.streams.dec()

    return StreamingResponse(stream(), media_type="text/event-stream",
                             headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})
