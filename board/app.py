"""The board's ASGI app (Starlette): pages, sign-in, CSRF, and the live event stream."""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import json
import logging
import re
import secrets
import time
from collections import OrderedDict
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any
from urllib.parse import quote, urlencode, urlsplit

import asyncpg
from jinja2 import Environment
from starlette.applications import Starlette
from starlette.datastructures import FormData, UploadFile
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.middleware.sessions import SessionMiddleware
from starlette.requests import Request
from starlette.responses import (
    HTMLResponse,
    PlainTextResponse,
    RedirectResponse,
    Response,
    StreamingResponse,
)
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles
from starlette.types import Message, Scope
from temporalio.client import Client
from temporalio.service import RPCError

from board import actions, queries
from board.accounts import Accounts, Person, SignInLimiter
from board.errors import BoardError, Forbidden, Invalid
from board.graph import Layouts, dot_quote, draw, steps_from_rows
from board.live import RESYNC, Change, Hub
from board.metrics import BoardMetrics, RequestMetrics
from board.middleware import ResponseStartHook
from board.render import STATIC, bar_chart, climbs_at, make_env
from board.settings import BoardSettings
from client import TemporalUnreachable, connect
from runtime.settings import Settings

log = logging.getLogger(__name__)

SESSION_COOKIE = "beestown_board"
TEMPORAL_RETRY_S = 15.0  # after a failed connect, pages skip Temporal this long
PARTIAL_HEADER = "x-board-partial"


@dataclass
class Board:
    """Everything the pages share: settings, the pool, Temporal, the listener, caches."""

    settings: Settings
    board: BoardSettings
    pool: asyncpg.Pool
    hub: Hub
    secret: str
    accounts: Accounts = field(init=False)
    limiter: SignInLimiter = field(init=False)
    layouts: Layouts = field(default_factory=Layouts)
    env: Environment = field(default_factory=make_env)
    client: Client | None = None
    url: str = ""
    metrics: BoardMetrics = field(default_factory=BoardMetrics)
    _client_lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    _run_ids: OrderedDict[str, str] = field(default_factory=OrderedDict)
    _down_since: float | None = None

    def __post_init__(self) -> None:
        self.accounts = Accounts(self.pool)
        self.limiter = SignInLimiter(self.board.signin_attempts, self.board.signin_window_s)

    async def temporal(self) -> Client:
        """Return the Temporal client, connecting on first use (pages that only read the
        store work while Temporal is down)."""
        async with self._client_lock:
            if self.client is None:
                s = self.settings
                # While Temporal is down, pages do not each wait for a connect to time out.
                if self._down_since and time.monotonic() - self._down_since < TEMPORAL_RETRY_S:
                    raise actions.Refused(f"Temporal at {s.temporal_address} is unreachable")
                try:
                    self.client = await connect(s, timeout_s=10)
                except TemporalUnreachable as e:
                    self._down_since = time.monotonic()
                    raise actions.Refused(str(e)) from e
                self._down_since = None
            return self.client

    def ui_link(self, workflow_id: str, run_id: str | None) -> str:
        """The Temporal Web UI page of a workflow's history."""
        base = self.settings.temporal_ui_url.rstrip("/")
        ns = quote(self.settings.temporal_namespace, safe="")
        link = f"{base}/namespaces/{ns}/workflows/{quote(workflow_id, safe='')}"
        return f"{link}/{quote(run_id, safe='')}/history" if run_id else link

    async def run_id(self, workflow_id: str) -> str | None:
        """A subtask's run id (not stored), asked of Temporal once and kept; None when
        Temporal does not answer quickly."""
        if workflow_id in self._run_ids:
            return self._run_ids[workflow_id]
        async def describe() -> str:
            client = await self.temporal()
            desc = await client.get_workflow_handle(workflow_id).describe(
                rpc_timeout=timedelta(seconds=2))
            return desc.run_id

        try:  # a link without its run id beats a page waiting on Temporal
            run_id = await asyncio.wait_for(describe(), timeout=2.5)
        except (actions.Refused, RPCError, TimeoutError):
            return None
        self._run_ids[workflow_id] = run_id
        while len(self._run_ids) > 10_000:
            self._run_ids.popitem(last=False)
        return run_id


# -- identity ---------------------------------------------------------------------------------
async def current_person(request: Request) -> Person | None:
    board: Board = request.app.state.board
    header = board.board.trusted_header
    if header and (name := request.headers.get(header)):
        return await board.accounts.get(name.strip())
    name = request.session.get("person")
    return await board.accounts.get(name) if isinstance(name, str) else None


def csrf_token(request: Request) -> str:
    token = request.session.get("csrf")
    if not isinstance(token, str):
        token = secrets.token_urlsafe(32)
        request.session["csrf"] = token
    return token


async def checked_form(request: Request) -> FormData:
    """Return the POSTed form after checking its CSRF token (403 when it is wrong)."""
    form = await request.form(max_files=2, max_fields=50, max_part_size=2 * 1024 * 1024)
    sent = form.get("csrf")
    expected = request.session.get("csrf")
    if not (isinstance(sent, str) and isinstance(expected, str)
            and hmac.compare_digest(sent, expected)):
        raise HTTPException(403, "bad or missing CSRF token: reload the page and try again")
    return form


def text(form: FormData, key: str) -> str:
    v = form.get(key)
    return v if isinstance(v, str) else ""


async def upload(form: FormData, key: str) -> tuple[str, str]:
    f = form.get(key)
    if isinstance(f, UploadFile) and f.filename:
        data = await f.read()
        try:
            return data.decode("utf-8"), f.filename
        except UnicodeDecodeError:
            return "\x00", f.filename  # refused by the YAML reader, with its name
    return "", ""


Handler = Callable[[Request, Person], Awaitable[Response]]


def signed_in(handler: Handler) -> Callable[[Request], Awaitable[Response]]:
    """Run `handler` for a signed-in person; others go to the sign-in page."""

    async def endpoint(request: Request) -> Response:
        person = await current_person(request)
        if person is None:
            if request.url.path == "/events":
                return PlainTextResponse("sign in first", status_code=401)
            target = request.url.path + (f"?{request.url.query}" if request.url.query else "")
            return RedirectResponse("/login?" + urlencode({"next": target}), status_code=303)
        request.state.person = person
        return await handler(request, person)

    return endpoint


def page(request: Request, name: str, status_code: int = 200, **ctx: Any) -> HTMLResponse:
    """Render a page; with the partial header, only its live block (for live refresh)."""
    board: Board = request.app.state.board
    person = getattr(request.state, "person", None)
    tmpl = board.env.get_template(name)
    partial = bool(request.headers.get(PARTIAL_HEADER)) and "live" in tmpl.blocks
    # A live refresh racing a form's redirect must not take the message meant for the page.
    message = None if partial else request.session.pop("flash", None)
    ctx.update(request=request, person=person, csrf=csrf_token(request), flash=message,
               ui=board.ui_link)
    body = ("".join(tmpl.blocks["live"](tmpl.new_context(ctx))) if partial
            else tmpl.render(ctx))
    return HTMLResponse(body, status_code=status_code)


def flash(request: Request, kind: str, message: str) -> None:
    request.session["flash"] = {"kind": kind, "message": message}


def local_path(target: str, fallback: str) -> str:
    """Return `target` if it is a path on this site (never another origin), else fallback."""
    if re.fullmatch(r"/(?![/\\])[^\s]*", target):
        return target
    return fallback


def back(request: Request, fallback: str) -> RedirectResponse:
    """Redirect to the page the form was posted from, when it is one of ours."""
    ref = urlsplit(request.headers.get("referer", ""))
    target = fallback
    if ref.netloc == request.url.netloc and ref.path:
        target = local_path(ref.path + (f"?{ref.query}" if ref.query else ""), fallback)
    return RedirectResponse(target, status_code=303)


# -- sign in ----------------------------------------------------------------------------------
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


async def index(request: Request) -> Response:
    return RedirectResponse("/tasks", status_code=303)


async def health(request: Request) -> Response:
    board: Board = request.app.state.board
    await board.pool.fetchval("SELECT 1")
    return PlainTextResponse("ok")


async def forbidden(request: Request, exc: Exception) -> Response:
    with contextlib.suppress(Exception):
        return page(request, "error.html", status_code=403, title="Forbidden", message=str(exc))
    return PlainTextResponse(str(exc), status_code=403)


async def http_error(request: Request, exc: Exception) -> Response:
    code = exc.status_code if isinstance(exc, HTTPException) else 500
    detail = exc.detail if isinstance(exc, HTTPException) else "error"
    return page(request, "error.html", status_code=code, title=str(code), message=detail)


class SecurityHeaders(ResponseStartHook):
    """Headers on every response: no framing, no sniffing, scripts only from the board."""

    HEADERS = [
        (b"content-security-policy",
         b"default-src 'self'; img-src 'self' data:; style-src 'self' 'unsafe-inline'; "
         b"script-src 'self'; frame-ancestors 'none'; form-action 'self'; base-uri 'none'"),
        (b"x-content-type-options", b"nosniff"),
        (b"x-frame-options", b"DENY"),
        (b"referrer-policy", b"same-origin"),
    ]

    def on_start(self, scope: Scope) -> Callable[[Message], None]:
        def add_headers(message: Message) -> None:
            message["headers"] = [*message.get("headers", []), *self.HEADERS]

        return add_headers


class ServerTiming(ResponseStartHook):
    """`Server-Timing: app;dur=MS` on every response: time spent before its headers left."""

    def on_start(self, scope: Scope) -> Callable[[Message], None]:
        start = time.perf_counter()

        def add_timing(message: Message) -> None:
            ms = (time.perf_counter() - start) * 1000
            message["headers"] = [*message.get("headers", []),
                                  (b"server-timing", f"app;dur={ms:.2f}".encode())]

        return add_timing


def build_app(board: Board) -> Starlette:
    """Return the board's ASGI app over an opened `Board`."""
    routes = [
        Route("/", index),
        Route("/healthz", health),
        Route("/login", login, methods=["GET", "POST"]),
        Route("/logout", logout, methods=["POST"]),
        Route("/tasks", signed_in(tasks_page)),
        Route("/task", signed_in(task_page)),
        Route("/step", signed_in(step_page)),
        Route("/start", signed_in(start_page), methods=["GET", "POST"]),
        Route("/reviews", signed_in(reviews_page)),
        Route("/review", signed_in(review_post), methods=["POST"]),
        Route("/escalations", signed_in(escalations_page)),
        Route("/resolve", signed_in(resolve_post), methods=["POST"]),
        Route("/org", signed_in(org_page)),
        Route("/costs", signed_in(costs_page)),
        Route("/blob", signed_in(blob)),
        Route("/events", signed_in(events)),
        Mount("/static", app=StaticFiles(directory=STATIC), name="static"),
    ]
    app = Starlette(
        routes=routes,
        middleware=[
            Middleware(RequestMetrics, metrics=board.metrics),
            Middleware(ServerTiming),
            Middleware(SecurityHeaders),
            Middleware(SessionMiddleware, secret_key=board.secret,
                       session_cookie=SESSION_COOKIE, max_age=board.board.session_max_age_s,
                       same_site="lax", https_only=board.board.secure_cookies),
        ],
        exception_handlers={Forbidden: forbidden, HTTPException: http_error},
    )
    app.state.board = board
    return app
