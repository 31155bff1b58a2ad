"""A plan: the dependency graph of steps a task is split into, and its validation."""

from __future__ import annotations

from collections.abc import Collection, Iterable
from dataclasses import dataclass
from typing import Any

from pydantic import AliasChoices, BaseModel, ConfigDict, Field, field_validator, model_validator

from models.instants import UtcDatetime
from models.task import Priority, StepType

STEP_ID_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$"

# Names other shapes of a plan use for our fields (the seeds' splitter answers a bare list
# of {"id", "type", "desc", "deps"}). Read wherever a plan is read: files, model replies,
# replans; BeesTown writes only the canonical (first) name.
DESCRIPTION_NAMES = ("description", "desc", "details", "instructions")
DEPS_NAMES = ("deps", "dependencies", "depends_on", "dependsOn", "requires")
STEPS_NAMES = ("steps", "subtasks", "tasks")


class PlanStep(BaseModel):
    """One step of a plan; `code` goes with type code, `tool` and `args` with type tool."""

    # Unknown fields are refused where plans enter (parse_plan), but ignored in history,
    # so a worker one release behind still reads plans that carry a newer field.
    model_config = ConfigDict(extra="ignore", populate_by_name=True)

    id: str = Field(pattern=STEP_ID_PATTERN)
    type: StepType
    title: str = ""
    description: str = Field("", validation_alias=AliasChoices(*DESCRIPTION_NAMES))
    deps: list[str] = Field(default_factory=list, validation_alias=AliasChoices(*DEPS_NAMES))
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

    @field_validator("type", mode="before")
    @classmethod
    def _type_in_any_case(cls, v: Any) -> Any:
        return v.strip().lower() if isinstance(v, str) else v

    @property
    def cells(self) -> list[str]:
        """The step's code as a list of notebook cells (empty when it has none)."""
        if self.code is None:
            return []
        return [self.code] if isinstance(self.code, str) else list(self.code)


class Plan(BaseModel):
    """A titled list of steps; also read from a bare list of steps or a `{"plan": ...}`."""

    model_config = ConfigDict(extra="ignore", populate_by_name=True)

    title: str = ""
    steps: list[PlanStep] = Field(min_length=1, validation_alias=AliasChoices(*STEPS_NAMES))

    @model_validator(mode="before")
    @classmethod
    def _other_shapes(cls, data: Any) -> Any:
        return unwrap_plan(data)


def unwrap_plan(data: Any) -> Any:
    """Return decoded plan data in the shape `Plan` takes (from a bare list of steps, or
    from under a `plan` key)."""
    if isinstance(data, list):
        return {"steps": data}
    if isinstance(data, dict) and "plan" in data and not any(k in data for k in STEPS_NAMES):
        return unwrap_plan(data["plan"])
    return data


class InvalidPlan(ValueError):
    """A plan that cannot run; `errors` lists every problem found, one sentence each."""

    def __init__(self, errors: list[str]) -> None:
        self.errors = errors
        super().__init__("invalid plan: " + "; ".join(errors))


@dataclass(frozen=True)
class Node:
    """What the graph checks need of a step: taken from a Plan, or from raw data that did
    not validate (so a bad field never hides a cycle)."""

    id: str
    deps: tuple[str, ...]
    type: str | None
    tool: str | None


def nodes_of(plan: Plan) -> list[Node]:
    return [Node(s.id, tuple(s.deps), s.type.value, s.tool) for s in plan.steps]


def raw_nodes(data: Any) -> list[Node] | None:
    """Return the graph of decoded plan data as far as it can be read, or None."""
    data = unwrap_plan(data)
    if not isinstance(data, dict):
        return None
    steps = next((data[k] for k in STEPS_NAMES if k in data), None)
    if not isinstance(steps, list):
        return None
    nodes = []
    for step in steps:
        if not isinstance(step, dict) or not isinstance(step.get("id"), str):
            continue
        deps: Any = next((step[k] for k in DEPS_NAMES if k in step), [])
        kind, tool = step.get("type"), step.get("tool")
        nodes.append(Node(
            step["id"], tuple(d for d in deps if isinstance(d, str)) if isinstance(deps, list)
            else (), kind.strip().lower() if isinstance(kind, str) else None,
            tool if isinstance(tool, str) else None))
    return nodes


def graph_errors(plan: Plan | Iterable[Node], *, max_steps: int,
                 tools: Collection[str] | None = None) -> list[str]:
    """Return every structural problem of a plan: ids, dependencies, cycles, size, tools.

    `tools`: the tools a worker knows (None: not checked).
    """
    nodes = nodes_of(plan) if isinstance(plan, Plan) else list(plan)
    errors: list[str] = []
    if len(nodes) > max_steps:
        errors.append(f"plan has {len(nodes)} steps, more than the cap of {max_steps}")
    seen: set[str] = set()
    for n in nodes:
        if n.id in seen:
            errors.append(f"step id {n.id!r} is used more than once")
        seen.add(n.id)
    for n in nodes:
        for d in n.deps:
            if d == n.id:
                errors.append(f"step {n.id!r} depends on itself")
            elif d not in seen:
                errors.append(f"step {n.id!r} depends on unknown step {d!r}")
        if len(set(n.deps)) != len(n.deps):
            errors.append(f"step {n.id!r} lists a dependency twice")
        if n.type == StepType.TOOL.value and not n.tool:
            errors.append(f"tool step {n.id!r} names no tool")
        elif n.type == StepType.TOOL.value and tools is not None and n.tool not in tools:
            errors.append(f"step {n.id!r} names unknown tool {n.tool!r} "
                          f"(known: {', '.join(sorted(tools)) or 'none'})")
    cycle = find_cycle(nodes)
    if cycle:
        errors.append("dependency cycle: " + " -> ".join(cycle))
    return errors


def find_cycle(plan: Plan | Iterable[Node]) -> list[str] | None:
    """Return one dependency cycle as a closed path of step ids, or None.

    Iterative depth-first search: a 1,000-step chain must not hit the recursion limit.
    """
    nodes = nodes_of(plan) if isinstance(plan, Plan) else plan
    deps: dict[str, list[str]] = {}
    for n in nodes:  # a duplicated id keeps its first step's edges
        deps.setdefault(n.id, [d for d in n.deps if d != n.id])
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


def _names(model: type[BaseModel]) -> set[str]:
    return {name for n, f in model.model_fields.items()
            for name in [n, *(f.validation_alias.choices if isinstance(f.validation_alias,
                                                                       AliasChoices) else [])]
            if isinstance(name, str)}


_STEP_FIELDS = _names(PlanStep)
_PLAN_FIELDS = _names(Plan)


def unknown_fields(data: Any) -> list[str]:
    """Return a sentence per field a plan (or one of its steps) does not know."""
    if not isinstance(data, dict):
        return []
    errors = [f"unknown field {k!r} in the plan" for k in data
              if k not in _PLAN_FIELDS]
    steps = next((data[k] for k in STEPS_NAMES if k in data), None)
    for i, step in enumerate(steps if isinstance(steps, list) else []):
        if isinstance(step, dict):
            errors += [f"steps.{i}: unknown field {k!r}" for k in step
                       if k not in _STEP_FIELDS]
    return errors
