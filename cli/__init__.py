"""Operate BeesTown from a shell: tasks and their trees, reviews, escalations, the org chart.

    beestown run --plan examples/demo.yaml --wait     # start a task (same as starter.py)
    beestown tasks                                    # recent tasks, newest first
    beestown tree TASK_ID                             # subtasks, nested tasks, tokens
    beestown review TASK_ID/STEP --reviewer eng-lead --approve
    beestown escalations                              # open escalations
    beestown resolve TASK_ID/STEP --by ceo --action retry
    beestown cancel TASK_ID --wait
    beestown org load examples/org.yaml && beestown org show

Settings come from the environment (TEMPORAL_ADDRESS, TEMPORAL_NAMESPACE, DATABASE_URL,
...; see README). Listings take --json for scripts. Exit codes: 0 ok, 1 the operation was
refused or failed (e.g. an update's validator said no), 2 bad usage or configuration.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path

from pydantic import ValidationError
from rich.console import Console
from rich.markup import escape

from cli import org, review, run, tasks
from cli.session import EXIT_USAGE, CliError, Session
from client import exit_now
from models.review import Action
from models.task import Priority
from runtime.settings import Settings

__all__ = ["build_parser", "dispatch", "main", "parse_args"]

EPILOG = """\
the same with the plain `temporal` CLI (a subtask's workflow id is TASK_ID/STEP_ID):
  temporal workflow update execute -w T/a --name review \\
      --input '{"reviewer_id": "eng-lead", "decision": "approve"}'
  temporal workflow update execute -w T/a --name review \\
      --input '{"reviewer_id": "eng-lead", "decision": "reject", "feedback": "cite sources"}'
  temporal workflow update execute -w T/a --name resolve_escalation \\
      --input '{"by": "ceo", "action": "retry", "note": "try again"}'
  temporal workflow query -w T/a --name escalation
  temporal workflow query -w T --name progress
  temporal workflow cancel -w T
  temporal workflow list --query 'WorkflowType="TaskWorkflow"'
"""

Command = Callable[[argparse.Namespace, Session], Awaitable[int]]


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="beestown", description=__doc__, epilog=EPILOG,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def command(name: str, func: Command, help_: str,
                description: str | None = None) -> argparse.ArgumentParser:
        c = sub.add_parser(name, help=help_, description=description or help_, epilog=EPILOG,
                           formatter_class=argparse.RawDescriptionHelpFormatter)
        c.set_defaults(func=func, command_parser=c)  # its usage line, for errors
        return c

    c = command("run", run.cmd_run, "start a task and, with --wait, follow it to the end",
                run.__doc__)
    c.add_argument("prompt", nargs="?", help="the job, in plain language (split by the LLM)")
    c.add_argument("--plan", type=Path, help="run this YAML/JSON plan instead; no LLM needed")
    c.add_argument("--id", dest="task_id", help="task id (default: generated)")
    c.add_argument("--title", default="")
    c.add_argument("--priority", choices=[x.value for x in Priority], default="medium")
    c.add_argument("--project", metavar="ID",
                   help="the project it belongs to (default: its parent task's, else 'default')")
    c.add_argument("--file", dest="related_files", action="append", default=[], metavar="PATH",
                   help="a file under BEESTOWN_WORKSPACE the agents read (repeatable)")
    c.add_argument("--agent", dest="related_agents", action="append", default=[],
                   metavar="ID", help="an agent whose role and skills the agents see "
                   "(repeatable)")
    c.add_argument("--parent", metavar="TASK_ID", help="the task this one follows up on")
    c.add_argument("--wait", action="store_true", help="follow the task until it ends")
    c.add_argument("--json", action="store_true",
                   help="print the final result as one JSON object (implies --wait)")

    c = command("tasks", tasks.cmd_tasks, "list tasks, newest first")
    c.add_argument("--limit", type=int, default=50, metavar="N")
    c.add_argument("--json", action="store_true", help="one JSON array")

    c = command("tree", tasks.cmd_tree, "show a task, its subtasks and the tasks nested in them")
    c.add_argument("task_id", metavar="TASK_ID")
    c.add_argument("--json", action="store_true", help="one JSON object")
    c.add_argument("--no-live", action="store_true",
                   help="do not ask running workflows for their progress")

    c = command("review", review.cmd_review, "approve or reject a subtask waiting for review")
    c.add_argument("subtask_id", metavar="SUBTASK_ID", help="TASK_ID/STEP_ID")
    c.add_argument("--reviewer", required=True, metavar="ID")
    verdict = c.add_mutually_exclusive_group(required=True)
    verdict.add_argument("--approve", action="store_true")
    verdict.add_argument("--reject", action="store_true")
    c.add_argument("--feedback", metavar="TEXT", help="what to change (needed to reject)")
    c.add_argument("--timeout", type=float, default=60.0, metavar="S")
    c.add_argument("--json", action="store_true")

    c = command("escalations", review.cmd_escalations, "list open escalations")
    c.add_argument("--all", action="store_true", help="resolved ones too")
    c.add_argument("--json", action="store_true", help="one JSON array")

    c = command("resolve", review.cmd_resolve, "decide a subtask's open escalation")
    c.add_argument("subtask_id", metavar="SUBTASK_ID", help="TASK_ID/STEP_ID")
    c.add_argument("--by", required=True, metavar="ID", help="the holder or someone above")
    c.add_argument("--action", required=True, choices=[a.value for a in Action])
    c.add_argument("--assignee", metavar="ID", help="with reassign: the new assignee")
    c.add_argument("--plan", type=Path, metavar="FILE",
                   help="with replan: the plan replacing the step")
    c.add_argument("--note", default="", metavar="TEXT")
    c.add_argument("--timeout", type=float, default=60.0, metavar="S")
    c.add_argument("--json", action="store_true")

    c = command("beneath", review.cmd_beneath,
                "a manager's view: the work of everyone beneath it, and reports sent to it")
    c.add_argument("agent_id", metavar="AGENT_ID")
    c.add_argument("--all", action="store_true", help="finished work too")
    c.add_argument("--limit", type=int, default=50)
    c.add_argument("--json", action="store_true")

    c = command("cancel", tasks.cmd_cancel, "request cancellation of a task")
    c.add_argument("task_id", metavar="TASK_ID")
    c.add_argument("--wait", action="store_true",
                   help="wait for it to close and print its final status (exit 0: CANCELLED)")
    c.add_argument("--timeout", type=float, default=120.0, metavar="S")
    c.add_argument("--json", action="store_true", help="with --wait: the final TaskResult")

    group = sub.add_parser("org", help="load or show the org chart")
    org_sub = group.add_subparsers(dest="org_command", required=True, metavar="COMMAND")
    c = org_sub.add_parser("load", help="check an org chart file and store it")
    c.set_defaults(func=org.cmd_org_load, command_parser=c)
    c.add_argument("file", type=Path, metavar="FILE")
    c.add_argument("--json", action="store_true", help="what changed, as JSON")
    c = org_sub.add_parser("show", help="the stored org chart, with each agent's load")
    c.set_defaults(func=org.cmd_org_show, command_parser=c)
    c.add_argument("--json", action="store_true")

    from board.commands import register as register_board  # web, user, graph, watch

    register_board(sub)
    return p


def parse_args(argv: Sequence[str]) -> argparse.Namespace:
    """Parse `argv`; what argparse alone cannot check exits 2 with a usage line too."""
    top = build_parser()
    args = top.parse_args(argv)
    # Each command's own parser, so its usage line is the one printed (the board's
    # commands register their own and may not name one).
    parser: argparse.ArgumentParser = getattr(args, "command_parser", top)
    if args.command == "run":
        run.check_args(parser, args)
    if getattr(args, "reject", False) and not (args.feedback or "").strip():
        parser.error("--reject needs --feedback saying what to change")
    if args.command == "resolve":
        if args.action == Action.REASSIGN.value and not args.assignee:
            parser.error("--action reassign needs --assignee")
        if args.action == Action.REPLAN.value and args.plan is None:
            parser.error("--action replan needs --plan FILE")
    return args


async def dispatch(args: argparse.Namespace, settings: Settings) -> int:
    """Run the parsed command; return its exit code (a `CliError` printed, not raised)."""
    session = Session(settings=settings, out=Console(), err=Console(stderr=True))
    func: Command = args.func
    try:
        return await func(args, session)
    except CliError as e:
        session.err.print(f"[red]{escape(e.message)}[/]", soft_wrap=True)
        return e.code
    finally:
        await session.close()


def main(argv: Sequence[str] | None = None) -> None:
    """The `beestown` console script: parse, run, and exit with the command's code."""
    args = parse_args(list(sys.argv[1:] if argv is None else argv))
    try:
        settings = Settings()
    except ValidationError as e:  # pydantic names the variable that is wrong
        sys.stderr.write(f"beestown: bad configuration: {e}\n")
        exit_now(EXIT_USAGE)
    exit_now(asyncio.run(dispatch(args, settings)))
