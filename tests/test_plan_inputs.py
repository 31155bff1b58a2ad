"""Plans in the shapes others send (the seeds' splitter, other field names, broken JSON),
read wherever a plan enters: files, model replies, replans; every problem named at once."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from temporalio.client import Client

from models.io import TaskInput
from models.plan import InvalidPlan, Plan
from models.review import Action, ResolveEscalation
from models.task import Status
from runtime.documents import load_plan, parse_plan, parse_plan_text
from runtime.llm.json_reply import UnreadableJSON, read_json
from runtime.settings import Settings
from testkit.fake_llm import FakeLLM
from tests.helpers import by_step, outcome, start_task
from worker import Deps

# Seed 000's splitter answers a bare list of {"id", "type", "desc", "deps"}.
SEED_REPLY = [
    {"id": "hello", "type": "tool", "desc": "say hello", "deps": [], "tool": "echo",
     "args": {"value": "hello"}},
    {"id": "world", "type": "tool", "desc": "add the world", "deps": ["hello"],
     "tool": "concat", "args": {"parts": ["${hello}", " world"]}},
]


def errors_of(data: Any, *, max_steps: int = 10, tools: list[str] | None = None) -> list[str]:
    with pytest.raises(InvalidPlan) as info:
        parse_plan(data, max_steps=max_steps, tools=tools)
    return info.value.errors


# -- item 1: the seeds' names and shapes ------------------------------------------------------
@pytest.mark.parametrize("description", ["description", "desc", "details", "instructions"])
@pytest.mark.parametrize("deps", ["deps", "dependencies", "depends_on", "dependsOn"])
@pytest.mark.parametrize("wrap", ["bare list", "steps", "subtasks", "tasks", "plan key"])
def test_other_names_for_fields_and_shapes_read_as_ours(description: str, deps: str,
                                                        wrap: str) -> None:
    steps = [{"id": "a", "type": "write", description: "first"},
             {"id": "b", "type": "WRITE", description: "second", deps: ["a"]}]
    data: Any = {
        "bare list": steps, "steps": {"steps": steps}, "subtasks": {"subtasks": steps},
        "tasks": {"tasks": steps}, "plan key": {"plan": steps},
    }[wrap]
    for plan in (parse_plan(data, max_steps=10), Plan.model_validate(data)):
        assert [(s.id, s.description, s.deps) for s in plan.steps] == [
            ("a", "first", []), ("b", "second", ["a"])]
        dumped = plan.model_dump(mode="json")
        assert set(dumped) == {"title", "steps"}  # what BeesTown writes: canonical names
        assert dumped["steps"][1]["description"] == "second"
        assert dumped["steps"][1]["deps"] == ["a"]
        assert not {"desc", "dependencies", "details"} & set(dumped["steps"][1])
        assert Plan.model_validate(dumped) == plan


@pytest.mark.parametrize("suffix", [".json", ".yaml"])
def test_plan_file_in_the_seed_shape_loads(tmp_path: Path, suffix: str) -> None:
    f = tmp_path / f"seed{suffix}"
    if suffix == ".json":
        f.write_text(json.dumps(SEED_REPLY))
    else:
        f.write_text("- {id: a, type: search, desc: look it up}\n"
                     "- {id: b, type: write, desc: write it, dependencies: [a]}\n")
    plan = load_plan(f, max_steps=10)
    assert plan.steps[0].description
    assert plan.steps[1].deps == [plan.steps[0].id]


def test_replan_decision_takes_the_seed_shape_and_writes_ours() -> None:
    raw = {"by": "lead", "action": "replan", "plan": SEED_REPLY}
    decision = ResolveEscalation.model_validate(raw)
    assert decision.action is Action.REPLAN
    assert decision.plan is not None
    assert [s.description for s in decision.plan.steps] == ["say hello", "add the world"]
    again = json.loads(decision.model_dump_json())
    assert again["plan"]["steps"][1]["description"] == "add the world"
    assert "desc" not in again["plan"]["steps"][1]
    assert ResolveEscalation.model_validate(again) == decision


# -- item 1: every problem at once ------------------------------------------------------------
CYCLE = [{"id": "a", "type": "write", "deps": ["b"]}, {"id": "b", "type": "write", "deps": ["a"]}]


@pytest.mark.parametrize(("bad_step", "field_error"), [
    ({"id": "c", "type": "write", "colour": "red"}, "unknown field 'colour'"),
    ({"id": "c", "type": "dance"}, "steps.2.type"),
    ({"id": "c d", "type": "write"}, "steps.2.id"),
    ({"id": "c", "type": "write", "priority": "urgent-ish"}, "steps.2.priority"),
    ({"id": "c", "type": "write", "deps": "a"}, "steps.2.deps"),
])
def test_a_bad_field_does_not_hide_the_graph_problems(bad_step: dict[str, Any],
                                                      field_error: str) -> None:
    errors = errors_of({"steps": [*CYCLE, bad_step]})
    assert any(field_error in e for e in errors), errors
    assert any("dependency cycle" in e for e in errors), errors


def test_every_kind_of_problem_is_reported_in_one_message() -> None:
    steps = [
        *CYCLE,
        {"id": "a", "type": "write"},                          # duplicate id
        {"id": "s", "type": "write", "deps": ["s"]},           # depends on itself
        {"id": "u", "type": "write", "deps": ["nowhere"]},     # unknown dependency
        {"id": "t", "type": "tool", "tool": "nope"},           # unknown tool
        {"id": "n", "type": "tool"},                           # no tool at all
        {"id": "x", "type": "write", "colour": "red"},         # unknown field
        {"id": "y", "type": "dance"},                          # bad value
    ]
    with pytest.raises(InvalidPlan) as info:
        parse_plan({"steps": steps, "mood": "good"}, max_steps=5, tools=["echo"])
    message = str(info.value)
    for expected in ["dependency cycle: a -> b -> a", "step id 'a' is used more than once",
                     "step 's' depends on itself", "unknown step 'nowhere'",
                     "unknown tool 'nope'", "tool step 'n' names no tool",
                     "unknown field 'colour'", "unknown field 'mood' in the plan",
                     "steps.8.type", "9 steps, more than the cap of 5"]:
        assert expected in message, (expected, message)


def test_a_valid_plan_still_checks_its_tools_against_the_worker() -> None:
    plan = {"steps": [{"id": "t", "type": "tool", "tool": "echo"}]}
    assert parse_plan(plan, max_steps=5, tools=["echo"]).steps[0].tool == "echo"
    assert "unknown tool 'echo'" in " ".join(errors_of(plan, tools=["concat"]))


# -- item 10: lenient JSON, read by a library -------------------------------------------------
PLAN_WITH_BRACKETS = {"steps": [
    {"id": "nums", "type": "code", "code": "result = [3, 5, 8]"},
    {"id": "sum", "type": "code", "code": "print(sum(inputs['nums']))", "deps": ["nums"]},
]}
STRICT = json.dumps(PLAN_WITH_BRACKETS, indent=2)


@pytest.mark.parametrize(("broken", "name"), [
    (STRICT.replace('"result = [3, 5, 8]"', '"result = [3, 5, 8]",'), "trailing comma"),
    (STRICT.replace('"deps": [\n        "nums"\n      ]', '"deps": ["nums",]'),
     "trailing comma in a list"),
    (STRICT.replace('"steps": [', '"steps": [ // the steps\n'), "a comment"),
    (STRICT.replace('"id": "nums"', "'id': 'nums'"), "single quotes"),
    (STRICT.replace('"type": "code"', "type: \"code\""), "unquoted key"),
    (STRICT[: STRICT.rindex("]")].rstrip(), "cut off at the end"),
])
@pytest.mark.parametrize("wrapper", ["```json\n{}\n```", "Here you go:\n```\n{}\n```\nBye",
                                     "The plan [as asked]: {}", "{}"])
def test_broken_json_is_repaired_and_never_read_from_inside_a_string(
    broken: str, name: str, wrapper: str
) -> None:
    text = wrapper.replace("{}", broken)
    reading = read_json(text)
    assert isinstance(reading.value, dict), (name, reading.value)
    assert reading.problem is not None
    assert "line" in reading.problem
    plan = parse_plan_text(text, max_steps=10)
    assert [s.id for s in plan.steps] == ["nums", "sum"]
    assert plan.steps[0].code == "result = [3, 5, 8]"


def test_strict_json_is_read_as_is_and_the_largest_value_wins() -> None:
    text = 'See [1] and {"x": "[2]"} for context.\n' + STRICT
    reading = read_json(text)
    assert reading.problem is None
    assert reading.value == PLAN_WITH_BRACKETS


@pytest.mark.parametrize("text", ["I cannot help with that.", "", "```\nno json\n```",
                                  'a "string" only'])
def test_a_reply_without_json_says_so(text: str) -> None:
    with pytest.raises(UnreadableJSON, match=r"no JSON|cannot be read"):
        read_json(text)
    with pytest.raises(InvalidPlan, match=r"no JSON|cannot be read"):
        parse_plan_text(text, max_steps=10)


def test_repair_message_names_the_broken_place_and_the_plans_real_problems() -> None:
    reply = ("Plan:\n```json\n{\"steps\": [\n  {\"id\": \"a\", \"type\": \"write\", "
             "\"deps\": [\"zz\"],},\n]}\n```")
    with pytest.raises(InvalidPlan) as info:
        parse_plan_text(reply, max_steps=10)
    first, *rest = info.value.errors
    # the trailing comma after the deps list: line 4 of the reply, column 46
    assert "line 4, column 46: trailing comma before '}'" in first, first
    assert rest == ["step 'a' depends on unknown step 'zz'"]


# -- through the splitter: a model answering in these shapes ----------------------------------
async def test_model_answering_in_the_seed_shape_splits_in_one_round(
    client: Client, worker: Settings, llm: FakeLLM, deps: Deps
) -> None:
    llm.script(json.dumps(SEED_REPLY))
    result = await outcome(await start_task(client, worker, TaskInput(prompt="greet")))
    assert result.status is Status.COMPLETED, result.error
    assert by_step(result)["world"].output == "hello world"
    assert len(llm.requests) == 1  # no repair round
    row = await deps.pool.fetchrow("SELECT plan FROM tasks WHERE id = $1", result.task_id)
    assert row is not None
    stored = row["plan"] if isinstance(row["plan"], dict) else json.loads(row["plan"])
    assert stored["steps"][0]["description"] == "say hello"
    assert "desc" not in stored["steps"][0]


async def test_model_with_broken_json_and_a_bad_plan_is_told_where_and_what(
    client: Client, worker: Settings, llm: FakeLLM
) -> None:
    broken = ('```json\n{"steps": [\n {"id": "nums", "type": "code", '
              '"code": "result = [3, 5, 8]",},\n {"id": "t", "type": "tool", "tool": "nope"},'
              '\n]}\n```')
    good = json.dumps({"steps": [{"id": "nums", "type": "code", "code": "result = [3, 5, 8]"}]})
    llm.script(broken, good)
    result = await outcome(await start_task(client, worker, TaskInput(prompt="numbers")))
    assert result.status is Status.COMPLETED, result.error
    assert by_step(result)["nums"].output == [3, 5, 8]
    repair = llm.requests[1]["body"]["messages"][-1]["content"]
    assert "line 3, column 61: trailing comma" in repair
    assert "unknown tool 'nope'" in repair
    # told about the real problems only, not about fields of a fragment
    assert "unknown field" not in repair
    assert "steps:" not in repair
