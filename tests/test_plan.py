"""Plan parsing and validation: what a model or a plan file may get wrong."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from models.plan import InvalidPlan, find_cycle
from models.task import InvalidTransition, Status, check_transition
from runtime.documents import load_plan as load_plan_file
from runtime.documents import parse_plan, parse_plan_text

GOOD = {"steps": [
    {"id": "a", "type": "tool", "tool": "echo", "args": {"value": 1}},
    {"id": "b", "type": "code", "code": "print(1)", "deps": ["a"]},
]}


def errors_of(data: object, max_steps: int = 10) -> list[str]:
    with pytest.raises(InvalidPlan) as info:
        parse_plan(data, max_steps=max_steps)
    return info.value.errors


def test_valid_plan_parses_with_dependency_aliases() -> None:
    data = {"steps": [{"id": "a", "type": "write"},
                      {"id": "b", "type": "write", "dependencies": ["a"]}]}
    plan = parse_plan(data, max_steps=10)
    assert plan.steps[1].deps == ["a"]


def test_reply_wrapped_in_prose_and_fences_is_tolerated() -> None:
    text = "Sure! Here is the plan:\n```json\n" + json.dumps(GOOD) + "\n```\nGood luck."
    assert [s.id for s in parse_plan_text(text, max_steps=10).steps] == ["a", "b"]


def test_reply_with_prose_and_no_fence_is_tolerated() -> None:
    text = "The plan is " + json.dumps(GOOD) + " as requested."
    assert len(parse_plan_text(text, max_steps=10).steps) == 2


def test_reply_without_json_is_refused() -> None:
    with pytest.raises(InvalidPlan, match="no JSON"):
        parse_plan_text("I cannot help with that.", max_steps=10)


def test_cycle_is_named() -> None:
    errs = errors_of({"steps": [
        {"id": "a", "type": "write", "deps": ["c"]},
        {"id": "b", "type": "write", "deps": ["a"]},
        {"id": "c", "type": "write", "deps": ["b"]},
    ]})
    assert any("cycle" in e and "a" in e and "c" in e for e in errs), errs


def test_unknown_dependency_duplicate_and_self_dependency_are_all_reported() -> None:
    errs = errors_of({"steps": [
        {"id": "a", "type": "write", "deps": ["ghost"]},
        {"id": "a", "type": "write"},
        {"id": "s", "type": "write", "deps": ["s"]},
    ]})
    assert any("unknown step 'ghost'" in e for e in errs)
    assert any("'a' is used more than once" in e for e in errs)
    assert any("'s' depends on itself" in e for e in errs)


def test_too_many_steps_is_refused() -> None:
    steps = [{"id": f"s{i}", "type": "write"} for i in range(6)]
    assert any("more than the cap of 5" in e for e in errors_of({"steps": steps}, max_steps=5))


def test_missing_fields_per_type_are_named() -> None:
    errs = errors_of({"steps": [{"id": "c", "type": "code"}, {"id": "t", "type": "tool"}]})
    assert errs == ["tool step 't' names no tool"]  # a code step without code: model writes it


def test_bad_type_and_bad_id_are_named() -> None:
    errs = errors_of({"steps": [{"id": "a/b", "type": "dance"}]})
    assert any(e.startswith("steps.0.id") for e in errs)
    assert any(e.startswith("steps.0.type") for e in errs)


def test_empty_plan_is_refused() -> None:
    assert errors_of({"steps": []})


def test_find_cycle_none_on_dag() -> None:
    assert find_cycle(parse_plan(GOOD, max_steps=10)) is None


def test_plan_file_yaml_and_json(tmp_path: Path) -> None:
    y = tmp_path / "p.yaml"
    y.write_text("steps:\n  - id: a\n    type: tool\n    tool: echo\n    args: {value: 2}\n")
    assert load_plan_file(y, max_steps=5).steps[0].args == {"value": 2}
    j = tmp_path / "p.json"
    j.write_text(json.dumps(GOOD))
    assert len(load_plan_file(j, max_steps=5).steps) == 2


def test_plan_file_errors_name_the_file(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("steps: [{id: a, type: write, deps: [a]}]")
    with pytest.raises(InvalidPlan, match=r"bad\.yaml"):
        load_plan_file(bad, max_steps=5)
    with pytest.raises(InvalidPlan, match="cannot read"):
        load_plan_file(tmp_path / "missing.yaml", max_steps=5)


def test_example_plans_are_valid() -> None:
    root = Path(__file__).resolve().parent.parent / "examples"
    files = sorted(f for f in root.glob("*.yaml") if f.name not in {"org.yaml", "tools.yaml"})
    assert files
    for f in files:
        load_plan_file(f, max_steps=50)


@pytest.mark.parametrize(("old", "new"), [
    (Status.COMPLETED, Status.RUNNING),
    (Status.CANCELLED, Status.READY),
    (Status.PENDING, Status.COMPLETED),
    (Status.COMPLETED, Status.QUEUED),
])
def test_senseless_transitions_are_refused(old: Status, new: Status) -> None:
    with pytest.raises(InvalidTransition):
        check_transition(old, new)


@pytest.mark.parametrize(("old", "new"), [
    (Status.PENDING, Status.RUNNING),
    (Status.RUNNING, Status.COMPLETED),
    (Status.RUNNING, Status.RUNNING),
    (Status.RUNNING, Status.REVIEWING),
    (Status.REVIEWING, Status.RUNNING),
    (Status.FAILED, Status.READY),
])
def test_sensible_transitions_are_allowed(old: Status, new: Status) -> None:
    check_transition(old, new)


def test_thousand_step_chain_is_checked_without_recursion() -> None:
    steps = [{"id": f"s{i}", "type": "write", "deps": [f"s{i-1}"] if i else []}
             for i in range(1000)]
    assert find_cycle(parse_plan({"steps": steps}, max_steps=1000)) is None
    steps[0]["deps"] = ["s999"]
    with pytest.raises(InvalidPlan, match="cycle"):
        parse_plan({"steps": steps}, max_steps=1000)


def test_unknown_fields_are_named() -> None:
    errs = errors_of({"steps": [{"id": "a", "type": "write", "dependson": ["b"]}],
                      "extra": 1})
    assert "steps.0: unknown field 'dependson'" in errs
    assert "unknown field 'extra' in the plan" in errs
