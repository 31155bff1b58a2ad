"""A plan: the dependency graph of steps a task is split into, and its validation."""

from __future__ import annotations

import json
import re
from typing import Any

from pydantic import AliasChoices, BaseModel, ConfigDict, Field

from models.instants import UtcDatetime
from models.task import Priority, StepType

STEP_ID_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$"


class PlanStep(BaseModel):
    """One step of a plan; `code` goes with type code, `tool` and `args` with type tool."""

    # Unknown fields are refused where plans enter (parse_plan), but ignored in history,
    # so a worker one release behind still reads plans that carry a newer field.
    model_config = ConfigDict(extra="ignore", populate_by_name=True)

    id: str = Field(pattern=STEP_ID_PATTERN)
    type: StepType
    title: str = ""
    description: str = ""
    deps: list[str] = Field(
        default_factory=list, validation_alias=AliasChoices("deps", "dependencies", "depends_on")
    )
    code: str | list[str] | None = Field(
        None, description="Python for the sandbox; a list runs as notebook cells in one session"
    )
    tool: str | None = None
    args: dict[str, Any] = Field(default_factory=dict)
    fallback_tool: str | None = Field(None, description="tried when `tool` fails for good")
    fallback_args: dict[str, Any] | None = Field(None, description="default: `args`")
    priority: Priority = Priority.MEDIUM
    skills: list[str] = Field(default_factory=list, description="skills the work needs")
    assignee: str | None = Field(None, description="the agent to give it to, if the plan says")
    deadline: UtcDatetime | None = Field(
        None, description="an ISO 8601 instant; without an offset it is read as UTC")
    estimated_duration_s: float | None = None
    tags: list[str] = Field(default_factory=list)
    metadata: dict[str, Any] = Field(default_factory=dict)


    @property
    def cells(self) -> list[str]:
        """The step's code as a list of notebook cells (empty when it has none)."""
        if self.code is None:
            return []
        return [self.code] if isinstance(self.code, str) else list(self.code)


class Plan(BaseModel):
    model_config = ConfigDict(extra="ignore")

    title: str = ""
    steps: list[PlanStep] = Field(min_length=1)


class InvalidPlan(ValueError):
    """A plan that cannot run; `errors` lists every problem found, one sentence each."""

    def __init__(self, errors: list[str]) -> None:
        self.errors = errors
        super().__init__("invalid plan: " + "; ".join(errors))


def graph_errors(plan: Plan, *, max_steps: int) -> list[str]:
    """Return every structural problem of `plan`: ids, dependencies, cycles, size, fields."""
    errors: list[str] = []
    if len(plan.steps) > max_steps:
        errors.append(f"plan has {len(plan.steps)} steps, more than the cap of {max_steps}")
    ids = [s.id for s in plan.steps]
    seen: set[str] = set()
    for i in ids:
        if i in seen:
            errors.append(f"step id {i!r} is used more than once")
        seen.add(i)
    for s in plan.steps:
        for d in s.deps:
            if d == s.id:
                errors.append(f"step {s.id!r} depends on itself")
            elif d not in seen:
                errors.append(f"step {s.id!r} depends on unknown step {d!r}")
        if len(set(s.deps)) != len(s.deps):
            errors.append(f"step {s.id!r} lists a dependency twice")
        if s.type is StepType.TOOL and not s.tool:
            errors.append(f"tool step {s.id!r} names no tool")
    cycle = find_cycle(plan)
    if cycle:
        errors.append("dependency cycle: " + " -> ".join(cycle))
    return errors


def find_cycle(plan: Plan) -> list[str] | None:
    """Return one dependency cycle as a closed path of step ids, or None.

    Iterative depth-first search: a 1,000-step chain must not hit the recursion limit.
    """
    deps = {s.id: [d for d in s.deps if d != s.id] for s in plan.steps}
    state: dict[str, int] = {}  # 1 = on the current path, 2 = done
    for root in deps:
        if root in state:
            continue
        path: list[str] = [root]
        stack = [iter(deps[root])]
        state[root] = 1
        while stack:
            nxt = next(stack[-1], None)
            if nxt is None:
                state[path.pop()] = 2
                stack.pop()
                continue
            if nxt not in deps:
                continue
            if state.get(nxt) == 1:
                return [*path[path.index(nxt):], nxt]
            if nxt not in state:
                state[nxt] = 1
                path.append(nxt)
                stack.append(iter(deps[nxt]))
    return None


def validated(plan: Plan, *, max_steps: int) -> Plan:
    """Return `plan` if it can run, else raise InvalidPlan naming every problem."""
    errors = graph_errors(plan, max_steps=max_steps)
    if errors:
        raise InvalidPlan(errors)
    return plan


_FENCE = re.compile(r"```(?:json|yaml|JSON)?\s*\n(.*?)```", re.DOTALL)


def extract_json(text: str) -> Any:
    """Return the JSON value in a model's reply, tolerating prose around it and fences."""
    candidates = [m.group(1) for m in _FENCE.finditer(text)] + [text]
    decoder = json.JSONDecoder()
    for cand in candidates:
        stripped = cand.strip()
        try:
            return json.loads(stripped)
        except json.JSONDecodeError:
            pass
        for start, ch in enumerate(stripped):
            if ch in "{[":
                try:
                    value, _ = decoder.raw_decode(stripped, start)
                except json.JSONDecodeError:
                    continue
                return value
    raise InvalidPlan(["the reply contains no JSON object"])


def unwrap_plan(data: Any) -> Any:
    """Return decoded plan data in the shape `Plan` takes (from a bare list of steps, or
    from under a `plan` key)."""
    if isinstance(data, list):
        return {"steps": data}
    if isinstance(data, dict) and "plan" in data and "steps" not in data:
        return data["plan"]
    return data


_STEP_FIELDS = {
    name for n, f in PlanStep.model_fields.items()
    for name in [n, *(f.validation_alias.choices if isinstance(f.validation_alias,
                                                               AliasChoices) else [])]
}


def unknown_fields(data: Any) -> list[str]:
    """Return a sentence per field a plan (or one of its steps) does not know."""
    if not isinstance(data, dict):
        return []
    errors = [f"unknown field {k!r} in the plan" for k in data
              if k not in Plan.model_fields]
    steps = data.get("steps")
    for i, step in enumerate(steps if isinstance(steps, list) else []):
        if isinstance(step, dict):
            errors += [f"steps.{i}: unknown field {k!r}" for k in step
                       if k not in _STEP_FIELDS]
    return errors
