"""The board's ASGI app (Starlette): routes, middleware, error pages.

    board.state     Board (what one process holds)
    board.handling  per-request helpers (sign-in, CSRF, pages, redirects)
    board.pages     the pages and posts
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.middleware.sessions import SessionMiddleware
from starlette.requests import Request
from starlette.responses import (
    PlainTextResponse,
    RedirectResponse,
    Response,
)
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles
from starlette.types import Message, Scope

from board.errors import Forbidden
from board.handling import (
    page,
    signed_in,
)
from board.metrics import RequestMetrics
from board.middleware import ResponseStartHook
from board.pages import (
    blob,
    costs_page,
    escalations_page,
    events,
    login,
    logout,
    org_page,
    resolve_post,
    review_post,
    reviews_page,
    start_page,
    step_page,
    task_page,
    tasks_page,
)
from board.render import STATIC
from board.state import SESSION_COOKIE, Board

__all__ = ["Board", "build_app"]

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
