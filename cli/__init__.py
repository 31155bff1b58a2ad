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

RUN_EPILOG = """\
the same with the plain `temporal` CLI:
  temporal workflow start --type TaskWorkflow --task-queue beestown -w my-task \\
      --input '{"plan": {"steps": [{"id": "a", "type": "tool", "tool": "echo"}]}}'
  temporal workflow query -w my-task --name progress
"""
TREE_EPILOG = """\
the same with the plain `temporal` CLI:
  temporal workflow query -w TASK_ID --name progress
  temporal workflow list --query "BeesTownStatus='REVIEWING'"
"""
REVIEW_EPILOG = """\
the same with the plain `temporal` CLI:
  temporal workflow update execute -w T/a --name review \\
      --input '{"reviewer_id": "eng-lead", "decision": "approve", "round": 1}'
  temporal workflow update execute -w T/a --name review \\
      --input '{"reviewer_id": "eng-lead", "decision": "reject", "feedback": "cite sources"}'
"""
RESOLVE_EPILOG = """\
what each action does to the step:
  retry     the step is worked again by the same assignee
  reassign  the step is worked again by --assignee
  replan    --plan FILE runs as a nested task in the step's place; its output is the step's
  skip      the step ends FAILED ("skipped by ..."); the steps that depend on it end
            BLOCKED; the rest of the task runs on, and the task ends FAILED
  escalate  the escalation climbs to the next manager up (refused at the top)

the same with the plain `temporal` CLI:
  temporal workflow query -w T/a --name escalation
  temporal workflow update execute -w T/a --name resolve_escalation \\
      --input '{"by": "ceo", "action": "retry", "escalation_id": "T/a#1"}'
"""

Command = Callable[[argparse.Namespace, Session], Awaitable[int]]


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="beestown", description=__doc__, epilog=EPILOG,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def command(name: str, func: Command, help_: str, description: str | None = None,
                epilog: str | None = None) -> argparse.ArgumentParser:
        c = sub.add_parser(name, help=help_, description=description or help_, epilog=epilog,
                           formatter_class=argparse.RawDescriptionHelpFormatter)
        c.set_defaults(func=func, command_parser=c)  # its usage line, for errors
        return c

    c = command("run", run.cmd_run, "start a task and, with --wait, follow it to the end",
                run.__doc__, epilog=RUN_EPILOG)
    c.add_argument("prompt", nargs="?", help="the job, in plain language (split by the LLM)")
    c.add_argument("--plan", type=Path, help="run this YAML/JSON plan instead; no LLM needed")
    c.add_argument("--id", dest="task_id", help="task id (default: generated)")
    c.add_argument("--title", default="", help="a title for lists and the Web UI "
                   "(default: the plan's title)")
    c.add_argument("--priority", choices=[x.value for x in Priority], default="medium",
                   help="orders work when workers are busy (default: medium)")
    c.add_argument("--project", metavar="ID",
                   help="the project it belongs to, a search attribute in the Web UI "
                   "(default: its parent task's, else 'default')")
    c.add_argument("--file", dest="related_files", action="append", default=[], metavar="PATH",
                   help="a file under BEESTOWN_WORKSPACE the agents read (repeatable)")
    c.add_argument("--agent", dest="related_agents", action="append", default=[],
                   metavar="ID", help="an agent whose role and skills the agents see "
                   "(repeatable)")
    c.add_argument("--parent", metavar="TASK_ID", help="the task this one follows up on")
    c.add_argument("--wait", action="store_true",
                   help="follow the task until it ends, showing whom each step waits for "
                   "and the command that unblocks it")
    c.add_argument("--json", action="store_true",
                   help="print the final result as one JSON object (implies --wait)")

    c = command("tasks", tasks.cmd_tasks, "list tasks, newest first")
    c.add_argument("--limit", type=int, default=50, metavar="N",
                   help="at most N tasks (default: 50)")
    c.add_argument("--json", action="store_true", help="one JSON array")

    c = command("tree", tasks.cmd_tree, "show a task, its subtasks and the tasks nested in them",
                epilog=TREE_EPILOG)
    c.add_argument("task_id", metavar="TASK_ID", help="as `beestown tasks` lists it")
    c.add_argument("--json", action="store_true", help="one JSON object")
    c.add_argument("--no-live", action="store_true",
                   help="do not ask running workflows for their progress")

    c = command("review", review.cmd_review, "approve or reject a subtask waiting for review",
                review.REVIEW_HELP, epilog=REVIEW_EPILOG)
    c.add_argument("subtask_id", metavar="SUBTASK_ID", help="TASK_ID/STEP_ID")
    c.add_argument("--reviewer", required=True, metavar="ID",
                   help="who reviews: the reviewer the step waits for")
    verdict = c.add_mutually_exclusive_group(required=True)
    verdict.add_argument("--approve", action="store_true", help="accept the result")
    verdict.add_argument("--reject", action="store_true",
                         help="send it back to be done again, with --feedback")
    c.add_argument("--feedback", metavar="TEXT", help="what to change (needed to reject)")
    c.add_argument("--round", type=int, metavar="N",
                   help="the review round this answers (default: the one open now); a "
                   "verdict for a round already over is refused as stale")
    c.add_argument("--timeout", type=float, default=60.0, metavar="S",
                   help="give up when no worker answers within S seconds (default: 60)")
    c.add_argument("--json", action="store_true", help="the acknowledgement as JSON")

    c = command("escalations", review.cmd_escalations, "list open escalations",
                "List open escalations; each id is what `beestown resolve` takes.")
    c.add_argument("--all", action="store_true", help="resolved ones too")
    c.add_argument("--json", action="store_true", help="one JSON array")

    c = command("resolve", review.cmd_resolve, "decide a subtask's open escalation",
                review.RESOLVE_HELP, epilog=RESOLVE_EPILOG)
    c.add_argument("subtask_id", metavar="ESCALATION_ID",
                   help="TASK_ID/STEP_ID#N as `beestown escalations` lists it (or "
                   "TASK_ID/STEP_ID: the escalation open now)")
    c.add_argument("--by", required=True, metavar="ID", help="the holder or someone above")
    c.add_argument("--action", required=True, choices=[a.value for a in Action],
                   help="what happens to the step (see below)")
    c.add_argument("--assignee", metavar="ID", help="with reassign: the new assignee")
    c.add_argument("--plan", type=Path, metavar="FILE",
                   help="with replan: the plan replacing the step")
    c.add_argument("--note", default="", metavar="TEXT", help="why, for the record")
    c.add_argument("--timeout", type=float, default=60.0, metavar="S",
                   help="give up when no worker answers within S seconds (default: 60)")
    c.add_argument("--json", action="store_true", help="the escalation and decision as JSON")

    c = command("beneath", review.cmd_beneath,
                "a manager's view: the work of everyone beneath it, and reports sent to it")
    c.add_argument("agent_id", metavar="AGENT_ID", help="an agent of the org chart")
    c.add_argument("--all", action="store_true", help="finished work too")
    c.add_argument("--limit", type=int, default=50, metavar="N",
                   help="at most N rows of work and of reports (default: 50)")
    c.add_argument("--json", action="store_true", help="one JSON object")

    c = command("cancel", tasks.cmd_cancel, "request cancellation of a task",
                epilog="the same: temporal workflow cancel -w TASK_ID")
    c.add_argument("task_id", metavar="TASK_ID", help="as `beestown tasks` lists it")
    c.add_argument("--wait", action="store_true",
                   help="wait for it to close and print its final status (exit 0: CANCELLED)")
    c.add_argument("--timeout", type=float, default=120.0, metavar="S",
                   help="with --wait: give up after S seconds (default: 120)")
    c.add_argument("--json", action="store_true", help="with --wait: the final TaskResult")

    group = sub.add_parser("org", help="load or show the org chart",
                           description="Load or show the org chart kept in PostgreSQL.")
    org_sub = group.add_subparsers(dest="org_command", required=True, metavar="COMMAND")
    c = org_sub.add_parser(
        "load", help="check an org chart file and store it",
        description="Check an org chart file and store it. Running workers use it for "
        "every task started from then on (no restart), unless started with BEESTOWN_ORG=0.")
    c.set_defaults(func=org.cmd_org_load, command_parser=c)
    c.add_argument("file", type=Path, metavar="FILE", help="YAML or JSON, e.g. examples/org.yaml")
    c.add_argument("--json", action="store_true", help="what changed, as JSON")
    c = org_sub.add_parser("show", help="the stored org chart, with each agent's load",
                           description="Draw the stored org chart, with each agent's load.")
    c.set_defaults(func=org.cmd_org_show, command_parser=c)
    c.add_argument("--json", action="store_true", help="one JSON object")

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
