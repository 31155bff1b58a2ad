"""Temporal's payload limit (2 MB): every entry point refuses bigger inputs before sending,
with a named error and exit code 2, and what runs produces nothing that big for history."""

from __future__ import annotations

import asyncio
import json
import os
import sys
import uuid
from pathlib import Path
from typing import Any

import pytest
from temporalio.client import Client
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.service import RPCError

from models.io import TaskInput
from models.payload import PAYLOAD_LIMIT, PayloadTooLarge, check_payload, cut_text, payload_size
from models.review import ResolveEscalation, ReviewInput
from models.task import Status
from runtime.settings import Settings
from testkit.fake_llm import FakeLLM
from tests.helpers import by_step, outcome, plan_of, run_plan, start_task

ROOT = Path(__file__).resolve().parent.parent
MB3 = 3_000_000


async def run_script(*argv: str, settings: Settings) -> tuple[int, str]:
    """Run `python <argv>` from the repository as an operator would; return (rc, output)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OPENAI", "BEESTOWN"))}
    env |= {"TEMPORAL_ADDRESS": settings.temporal_address,
            "BEESTOWN_TASK_QUEUE": settings.task_queue, "COLUMNS": "200"}
    proc = await asyncio.create_subprocess_exec(
        sys.executable, *argv, cwd=ROOT, env=env,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT)
    out, _ = await asyncio.wait_for(proc.communicate(), timeout=60)
    return proc.returncode or 0, out.decode()


# -- one measure: the data converter's -------------------------------------------------------
@pytest.mark.parametrize("value", [
    TaskInput(prompt="é" * 1000 + "\u0000 \"quoted\" \\", plan=plan_of(
        {"id": "a", "type": "code", "code": "print('[1, 2]')", "desc": "ünïcode"})),
    ReviewInput(reviewer_id="lead", decision="reject", feedback="x\n" * 500),
    {"nested": [1, 2.5, None, {"k": "v" * 100}]},
    "a plain string",
])
def test_payload_size_is_what_the_data_converter_sends(value: Any) -> None:
    sent = pydantic_data_converter.payload_converter.to_payloads([value])[0]
    assert payload_size(value) == len(sent.data)


@pytest.mark.parametrize(("steps", "biggest"), [
    ([{"id": "a", "type": "code", "code": "x = '" + "a" * MB3 + "'"}], "steps.0.code"),
    ([{"id": "t", "type": "tool", "tool": "echo", "args": {"value": "b" * MB3}}],
     "steps.0.args.value"),
    # no single part is big: the whole is
    ([{"id": f"s{i}", "type": "write", "description": "c" * 40_000} for i in range(50)],
     "description"),
])
def test_check_names_size_limit_and_biggest_part(steps: list[dict[str, Any]],
                                                 biggest: str) -> None:
    task = TaskInput(plan=plan_of(*steps))
    with pytest.raises(PayloadTooLarge) as info:
        check_payload(task, what="the task")
    e = info.value
    assert e.size == payload_size(task) > PAYLOAD_LIMIT
    assert "1.50 MB" in str(e)
    assert f"{e.size / 1e6:.2f} MB" in str(e)
    assert biggest in e.biggest
    assert check_payload(TaskInput(plan=plan_of(steps[0] | {"code": "1", "args": {},
                                                             "description": ""})),
                         what="small") < PAYLOAD_LIMIT


def test_cut_text_keeps_head_and_tail_and_says_how_much_went() -> None:
    text = "HEAD" + "m" * MB3 + "TAIL"
    cut = cut_text(text)
    assert cut.startswith("HEAD")
    assert cut.endswith("TAIL")
    assert f"{len(text) - 8192:,} characters cut" in cut
    assert len(cut) < 8300
    assert cut_text("short") == "short"


# -- entry points: starter, `beestown run`, the CLI's updates ----------------------------------
@pytest.mark.parametrize("entry", [["starter.py"], ["-m", "cli", "run"]])
@pytest.mark.parametrize("shape", ["code", "many steps"])
async def test_starter_refuses_a_task_too_big_before_sending(
    client: Client, settings: Settings, tmp_path: Path, entry: list[str], shape: str
) -> None:
    steps = ([{"id": "a", "type": "code", "code": f"x = '{'a' * MB3}'"}] if shape == "code"
             else [{"id": f"s{i}", "type": "write", "description": "d" * 40_000}
                   for i in range(50)])
    plan = tmp_path / "big.json"
    plan.write_text(json.dumps({"steps": steps}))
    task_id = f"big-{uuid.uuid4().hex[:8]}"
    rc, out = await run_script(*entry, "--plan", str(plan), "--id", task_id,
                               settings=settings)
    assert rc == 2, out
    assert "too large" in out
    assert "1.50 MB" in out
    assert "Traceback" not in out
    assert "Blob data size" not in out
    with pytest.raises(RPCError):  # nothing was sent
        await client.get_workflow_handle(task_id).describe()


async def test_cli_resolve_with_a_replan_too_big_is_refused_before_sending(
    settings: Settings, tmp_path: Path
) -> None:
    plan = tmp_path / "replan.yaml"
    plan.write_text(json.dumps([{"id": "a", "type": "code", "desc": "big",
                                 "code": "y = '" + "z" * MB3 + "'"}]))
    rc, out = await run_script("-m", "cli", "resolve", "no-such-task/a", "--by", "lead",
                               "--action", "replan", "--plan", str(plan), settings=settings)
    assert rc == 2, out
    assert "resolve_escalation payload" in out
    assert "plan.steps.0.code" in out
    assert "Traceback" not in out


async def test_cli_review_with_feedback_too_big_is_refused_before_sending(
    settings: Settings,
) -> None:
    # A 3 MB argument cannot go through argv (128 KB per argument): run the command in-process.
    import cli
    from cli.session import EXIT_USAGE

    args = cli.parse_args(["review", "no-such-task/a", "--reviewer", "lead", "--reject",
                           "--feedback", "f" * MB3, "--timeout", "5"])
    assert await cli.dispatch(args, settings) == EXIT_USAGE


def test_models_sent_as_updates_are_measured_like_any_payload() -> None:
    decision = ResolveEscalation(by="lead", action="replan", plan=plan_of(
        {"id": "a", "type": "write", "description": "w" * MB3}))
    with pytest.raises(PayloadTooLarge, match=r"plan\.steps\.0\.description"):
        check_payload(decision, what="the resolve_escalation payload")


# -- inside: a model's plan, step results --------------------------------------------------------
async def test_a_model_plan_too_big_is_sent_back_for_repair(
    client: Client, worker: Settings, llm: FakeLLM
) -> None:
    huge = {"steps": [{"id": "data", "type": "code", "code": "x = '" + "q" * MB3 + "'"}]}
    small = {"steps": [{"id": "data", "type": "code", "code": "x = 'q' * 3_000_000\nprint(1)"}]}
    llm.script(json.dumps(huge), json.dumps(small))
    result = await outcome(await start_task(client, worker, TaskInput(prompt="data")))
    assert result.status is Status.COMPLETED, result.error
    repair = llm.requests[1]["body"]["messages"][-1]["content"]
    assert "the plan is 3.00 MB" in repair
    assert "steps.0.code" in repair


@pytest.mark.parametrize("step", [
    {"id": "boom", "type": "code", "code": "raise ValueError('E' * 3_000_000)"},
    {"id": "boom", "type": "tool", "tool": "fail", "args": {"message": "F" * 1_400_000}},
])
async def test_a_step_failing_with_a_huge_error_ends_with_the_error_cut(
    client: Client, worker: Settings, step: dict[str, Any]
) -> None:
    result = await asyncio.wait_for(run_plan(client, worker, step), timeout=120)
    assert result.status is Status.FAILED
    boom = by_step(result)["boom"]
    assert boom.error
    assert "characters cut" in boom.error
    assert len(boom.error) < 20_000


async def test_a_huge_step_output_travels_as_a_preview(
    client: Client, worker: Settings
) -> None:
    result = await run_plan(client, worker,
                            {"id": "big", "type": "tool", "tool": "big", "args": {"size": MB3}},
                            {"id": "n", "type": "code", "deps": ["big"],
                             "code": "print(len(inputs['big']))"})
    assert result.status is Status.COMPLETED, result.error
    steps = by_step(result)
    assert steps["big"].truncated
    assert payload_size(steps["big"].output) < 10_000
    assert steps["n"].output.strip() == str(MB3)
