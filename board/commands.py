"""`beestown web`, `beestown user ...`, `beestown graph` and `beestown watch`.

`register(subparsers)` adds them to the `beestown` parser; each handler takes the parsed
arguments and the CLI's session (settings, consoles, a lazily opened pool).
"""

from __future__ import annotations

import argparse
import asyncio
import getpass
import sys
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, Protocol

import asyncpg
from rich.console import Console
from rich.live import Live
from rich.markup import escape
from rich.table import Table

from board.accounts import Accounts
from board.db import CHANNEL, migrate_board
from board.errors import BoardError, Invalid
from board.graph import Layouts, draw, steps_from_rows
from board.queries import TERMINAL, task_view
from board.settings import BoardSettings
from runtime.settings import Settings

EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2
STYLE = {"COMPLETED": "green", "FAILED": "red", "BLOCKED": "yellow", "RUNNING": "cyan",
         "CANCELLED": "magenta", "REVIEWING": "blue", "QUEUED": "dim"}


class Session(Protocol):
    """What the handlers need of the CLI's session."""

    settings: Settings
    out: Console
    err: Console

    async def pool(self) -> asyncpg.Pool: ...


Handler = Callable[[argparse.Namespace, Any], Awaitable[int]]


# -- web ---------------------------------------------------------------------------------------
async def cmd_web(args: argparse.Namespace, s: Session) -> int:
    from board.server import serve

    board = BoardSettings()
    host = args.host or board.host
    try:
        await serve(s.settings, board, host=host, port=args.port,
                    on_url=lambda url: s.out.print(f"board: [bold]{url}[/]", soft_wrap=True))
    except BoardError as e:
        s.err.print(f"[red]{escape(str(e))}[/]")
        return EXIT_USAGE
    except OSError as e:
        s.err.print(f"[red]cannot listen on {escape(host)}: {escape(str(e))}[/]")
        return EXIT_USAGE
    return EXIT_OK


# -- user --------------------------------------------------------------------------------------
def _password(args: argparse.Namespace) -> str:
    if args.password_stdin:
        return sys.stdin.readline().rstrip("\n")
    first = getpass.getpass(f"password for {args.name}: ")
    if first != getpass.getpass("again: "):
        raise Invalid(["the passwords differ"])
    return first


async def cmd_user_add(args: argparse.Namespace, s: Session) -> int:
    pool = await s.pool()
    await migrate_board(pool)
    agents = [a.strip() for a in (args.acts_for or "").split(",") if a.strip()]
    known = {r["id"] for r in await pool.fetch("SELECT id FROM agents WHERE removed_at IS NULL")}
    unknown = [a for a in agents if known and a not in known]
    if unknown:
        s.err.print(f"[red]unknown agents: {escape(', '.join(unknown))}[/] "
                    f"(the org chart has {escape(', '.join(sorted(known)))})")
        return EXIT_USAGE
    try:
        await Accounts(pool).add(args.name, _password(args), agents, replace=args.replace)
    except Invalid as e:
        s.err.print("[red]" + escape("; ".join(e.errors)) + "[/]")
        return EXIT_USAGE
    s.out.print(f"{escape(args.name)} acts for {escape(', '.join(agents) or 'nobody')}")
    return EXIT_OK


async def cmd_user_list(args: argparse.Namespace, s: Session) -> int:
    pool = await s.pool()
    await migrate_board(pool)
    rows = await Accounts(pool).list()
    if not rows:
        s.out.print("no accounts: beestown user add NAME --acts-for AGENT,...")
    for r in rows:
        s.out.print(f"{escape(r['name'])}  acts for {escape(', '.join(r['acts_for']) or '-')}")
    return EXIT_OK


async def cmd_user_remove(args: argparse.Namespace, s: Session) -> int:
    pool = await s.pool()
    await migrate_board(pool)
    if not await Accounts(pool).remove(args.name):
        s.err.print(f"[red]no account {escape(args.name)}[/]")
        return EXIT_FAILED
    s.out.print(f"removed {escape(args.name)}")
    return EXIT_OK


# -- graph -------------------------------------------------------------------------------------
async def cmd_graph(args: argparse.Namespace, s: Session) -> int:
    pool = await s.pool()
    view = await task_view(pool, args.task_id)
    if view is None:
        s.err.print(f"[red]no task {escape(args.task_id)!r} in the database[/]")
        return EXIT_FAILED
    if not view.steps:
        s.err.print(f"[red]{escape(args.task_id)} has no plan yet ({view.task['status']})[/]")
        return EXIT_FAILED
    base = (args.link_base or "").rstrip("/")
    try:
        picture = await draw(steps_from_rows(view.steps, view.nested), Layouts(),
                             href=(lambda st: f"{base}/step?id={st.subtask_id}")
                             if base else None)
    except BoardError as e:
        s.err.print(f"[red]{escape(str(e))}[/]")
        return EXIT_USAGE
    svg = '<?xml version="1.0" encoding="UTF-8"?>\n' + picture.svg
    if str(args.svg) == "-":
        sys.stdout.write(svg)
    else:
        args.svg.write_text(svg)
        s.out.print(f"{escape(str(args.svg))}: {len(view.steps)} steps, critical path "
                    f"{escape(' → '.join(picture.critical))}")
    return EXIT_OK


# -- watch -------------------------------------------------------------------------------------
def watch_table(view: Any) -> Table:
    t = view.task
    table = Table(title=f"{t['id']}  [{STYLE.get(t['status'], '')}]{t['status']}[/]  "
                        f"{escape(t['title'] or '')}", title_justify="left")
    for col in ("step", "type", "status", "assignee", "reviewer", "tokens", "time",
                "waiting for"):
        table.add_column(col, overflow="fold")
    for r in view.steps:
        u = view.usage.get(r["id"], {})
        style = STYLE.get(r["status"], "")
        secs = r["actual_duration_s"]
        table.add_row(
            escape(r["step_id"]) + ("  ▸" if view.nested.get(r["id"]) else ""),
            escape(r["type"]),
            f"[{style}]{r['status']}[/]" if style else r["status"],
            escape(r["assignee"] or ""), escape(r["reviewer"] or ""),
            str(int(u.get("tokens", 0))), f"{secs:.1f}s" if secs is not None else "",
            escape(r["waiting_for"] or ""))
    return table


async def cmd_watch(args: argparse.Namespace, s: Session) -> int:
    """Redraw the task's table on every change PostgreSQL reports, until it ends."""
    pool = await s.pool()
    await migrate_board(pool)  # the NOTIFY triggers
    changed = asyncio.Event()
    changed.set()

    def on_notify(_c: Any, _p: int, _ch: str, payload: object) -> None:
        if args.task_id in str(payload):
            changed.set()

    async with pool.acquire() as conn:
        await conn.add_listener(CHANNEL, on_notify)
        try:
            with Live(console=s.out, auto_refresh=False) as live:
                while True:
                    await changed.wait()
                    changed.clear()
                    await asyncio.sleep(0.05)  # gather a burst of changes into one redraw
                    view = await task_view(pool, args.task_id)
                    if view is None:
                        s.err.print(f"[red]no task {escape(args.task_id)!r}[/]")
                        return EXIT_FAILED
                    live.update(watch_table(view), refresh=True)
                    if view.task["status"] in TERMINAL or args.once:
                        return EXIT_OK if view.task["status"] == "COMPLETED" or args.once \
                            else EXIT_FAILED
        finally:
            await conn.remove_listener(CHANNEL, on_notify)


# -- the parser --------------------------------------------------------------------------------
def register(sub: Any) -> None:
    """Add web, user, graph and watch to the `beestown` subparsers."""

    def command(parent: Any, name: str, func: Handler, help_: str) -> argparse.ArgumentParser:
        c: argparse.ArgumentParser = parent.add_parser(name, help=help_, description=help_)
        c.set_defaults(func=func)
        return c

    c = command(sub, "web", cmd_web, "serve the board (default http://127.0.0.1:8377)")
    c.add_argument("--host", help="address to listen on (BEESTOWN_BOARD_HOST; default "
                   "127.0.0.1; any other needs accounts)")
    c.add_argument("--port", type=int, help="BEESTOWN_BOARD_PORT (default 8377; 0: any free)")

    user = sub.add_parser("user", help="accounts of people who use the board")
    user_sub = user.add_subparsers(dest="user_command", required=True, metavar="COMMAND")
    c = command(user_sub, "add", cmd_user_add, "add a person (asks for a password)")
    c.add_argument("name", metavar="NAME")
    c.add_argument("--acts-for", default="", metavar="AGENT,...",
                   help="the agents this person reviews and decides for")
    c.add_argument("--password-stdin", action="store_true",
                   help="read the password from the first line of stdin")
    c.add_argument("--replace", action="store_true", help="update an existing account")
    command(user_sub, "list", cmd_user_list, "list accounts")
    c = command(user_sub, "remove", cmd_user_remove, "remove an account")
    c.add_argument("name", metavar="NAME")

    c = command(sub, "graph", cmd_graph, "draw a task's plan as SVG (the board's picture)")
    c.add_argument("task_id", metavar="TASK_ID")
    c.add_argument("--svg", type=Path, required=True, metavar="FILE", help="'-' for stdout")
    c.add_argument("--link-base", metavar="URL", help="make nodes link to this board")

    c = command(sub, "watch", cmd_watch, "follow a task live in the terminal until it ends")
    c.add_argument("task_id", metavar="TASK_ID")
    c.add_argument("--once", action="store_true", help="draw once and exit")
