"""Per-request helpers: who is signed in, CSRF-checked forms, uploads, rendering a page,
flashes and safe redirects."""

from __future__ import annotations

import hmac
import re
import secrets
from collections.abc import Awaitable, Callable
from typing import Any
from urllib.parse import urlencode, urlsplit

from starlette.datastructures import FormData, UploadFile
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import (
    HTMLResponse,
    PlainTextResponse,
    RedirectResponse,
    Response,
)

from board.accounts import Person
from board.state import PARTIAL_HEADER, Board


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
