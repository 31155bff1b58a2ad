"""The org chart: departments and their skills, agents, who reports to whom, and its checks.

An org chart is YAML or JSON::

    departments:
      - {name: engineering, skills: [python, data]}
    agents:
      - {id: ceo, name: Ada, role: Chief executive, reports_to: null}
      - {id: eng, name: Grace, role: Engineering manager, reports_to: ceo,
         department: engineering, capacity: 2, review_policy: llm}

Skills are compared case-insensitively (they are stored stripped and lower-cased).
"""

from __future__ import annotations

from collections.abc import Iterable
from enum import StrEnum
from typing import Any

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    PrivateAttr,
    field_validator,
    model_validator,
)

AGENT_ID_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$"


class ReviewPolicy(StrEnum):
    """Who checks an agent's work before it counts as done."""

    HUMAN = "human"
    LLM = "llm"
    AUTO = "auto"


class InvalidOrg(ValueError):
    """An org chart that cannot be used; `errors` lists every problem, one sentence each."""

    def __init__(self, errors: list[str]) -> None:
        self.errors = errors
        super().__init__("invalid org chart: " + "; ".join(errors))


def _skill_list(value: Any) -> Any:
    if isinstance(value, str):
        value = [value]
    if isinstance(value, list | tuple | set | frozenset):
        out: list[Any] = []
        for v in value:
            s = v.strip().lower() if isinstance(v, str) else v
            if s not in out:
                out.append(s)
        return out
    return value


class Department(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field(min_length=1)
    skills: list[str] = Field(default_factory=list)

    _norm = field_validator("skills", mode="before")(_skill_list)


class Agent(BaseModel):
    """One member of the town; `capacity` is how many subtasks it works on at once."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    id: str = Field(pattern=AGENT_ID_PATTERN)
    name: str = ""
    role: str = ""
    reports_to: str | None = None
    department: str | None = None
    skills: list[str] = Field(default_factory=list, description="personal skills")
    model: str | None = Field(None, description="LLM model; None means the configured default")
    tools: list[str] | None = Field(None, description="allowed tools; None means all")
    capacity: int = Field(1, ge=1)
    review_policy: ReviewPolicy = ReviewPolicy.AUTO
    active: bool = True

    _norm = field_validator("skills", mode="before")(_skill_list)


class Candidate(BaseModel):
    """An agent as the scheduler sees it: every skill it has, its capacity, whether active."""

    model_config = ConfigDict(frozen=True)

    id: str
    skills: frozenset[str] = frozenset()
    capacity: int = Field(1, ge=1)
    active: bool = True


def org_errors(departments: list[Department], agents: list[Agent]) -> list[str]:
    """Return every structural problem: duplicates, unknown names, roots, reporting cycles."""
    errors: list[str] = []
    if not agents:
        errors.append("the org chart has no agents")
    dept_names: set[str] = set()
    for d in departments:
        if d.name in dept_names:
            errors.append(f"department {d.name!r} is declared more than once")
        dept_names.add(d.name)
    ids: set[str] = set()
    for a in agents:
        if a.id in ids:
            errors.append(f"agent id {a.id!r} is used more than once")
        ids.add(a.id)
    for a in agents:
        if a.reports_to == a.id:
            errors.append(f"agent {a.id!r} reports to itself")
        elif a.reports_to is not None and a.reports_to not in ids:
            errors.append(f"agent {a.id!r} reports to unknown manager {a.reports_to!r}")
        if a.department is not None and a.department not in dept_names:
            errors.append(f"agent {a.id!r} is in unknown department {a.department!r}")
    roots = [a.id for a in agents if a.reports_to is None]
    if agents and not roots:
        errors.append("the org chart has no root: every agent reports to someone")
    elif len(roots) > 1:
        errors.append(
            f"the org chart has {len(roots)} roots ({', '.join(roots)}); exactly one agent "
            "may have no manager"
        )
    errors.extend(_cycles(agents))
    return errors


def _cycles(agents: list[Agent]) -> list[str]:
    """Return one error per distinct reporting cycle (self-reports are reported elsewhere)."""
    manager: dict[str, str | None] = {}
    for a in agents:
        manager.setdefault(a.id, a.reports_to)  # a duplicate id is reported elsewhere
    done: set[str] = set()
    out: list[str] = []
    for a in agents:
        path: list[str] = []
        on_path: set[str] = set()
        node: str | None = a.id
        while node is not None and node in manager and node not in done:
            if node in on_path:
                cycle = [*path[path.index(node):], node]
                if len(cycle) > 2:  # a -> a is "reports to itself"
                    out.append("reporting cycle: " + " -> ".join(cycle))
                break
            on_path.add(node)
            path.append(node)
            node = manager[node]
        done.update(path)
    return out


class OrgChart(BaseModel):
    """A checked org chart (building one that is invalid raises) and questions about it."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    departments: list[Department] = Field(default_factory=list)
    agents: list[Agent]

    _by_id: dict[str, Agent] = PrivateAttr(default_factory=dict)
    _reports: dict[str, list[Agent]] = PrivateAttr(default_factory=dict)
    _depts: dict[str, Department] = PrivateAttr(default_factory=dict)

    @model_validator(mode="after")
    def _check(self) -> OrgChart:
        errors = org_errors(self.departments, self.agents)
        if errors:
            raise InvalidOrg(errors)
        return self

    def model_post_init(self, context: Any, /) -> None:
        self._by_id = {a.id: a for a in self.agents}
        self._depts = {d.name: d for d in self.departments}
        self._reports = {a.id: [] for a in self.agents}
        for a in self.agents:
            if a.reports_to is not None and a.reports_to in self._reports:
                self._reports[a.reports_to].append(a)

    # -- lookups ------------------------------------------------------------------------
    def agent(self, agent_id: str) -> Agent:
        """Return the agent with this id; KeyError when there is none."""
        try:
            return self._by_id[agent_id]
        except KeyError:
            raise KeyError(f"no agent {agent_id!r} in the org chart") from None

    def __contains__(self, agent_id: object) -> bool:
        return agent_id in self._by_id

    @property
    def root(self) -> Agent:
        """Return the one agent who reports to nobody."""
        return next(a for a in self.agents if a.reports_to is None)

    def department(self, name: str) -> Department:
        return self._depts[name]

    def manager_of(self, agent_id: str) -> Agent | None:
        """Return the agent's manager, None for the root."""
        a = self.agent(agent_id)
        return None if a.reports_to is None else self._by_id[a.reports_to]

    def reporting_chain(self, agent_id: str) -> list[Agent]:
        """Return the chain of command from the root down to the agent, both included."""
        chain = [self.agent(agent_id)]
        while chain[-1].reports_to is not None:
            chain.append(self._by_id[chain[-1].reports_to])
        return chain[::-1]

    def reports(self, agent_id: str) -> list[Agent]:
        """Return the agent's direct reports, in file order."""
        self.agent(agent_id)
        return list(self._reports[agent_id])

    def subtree(self, agent_id: str) -> list[Agent]:
        """Return everyone beneath the agent (not the agent), breadth first, in file order."""
        out: list[Agent] = []
        frontier = self.reports(agent_id)
        while frontier:
            out.extend(frontier)
            frontier = [r for a in frontier for r in self._reports[a.id]]
        return out

    def is_manager(self, agent_id: str) -> bool:
        """Return True when anyone reports to the agent."""
        self.agent(agent_id)
        return bool(self._reports[agent_id])

    def skills_of(self, agent_id: str) -> frozenset[str]:
        """Return the agent's skills: its department's and its own."""
        a = self.agent(agent_id)
        dept = self._depts[a.department].skills if a.department else []
        return frozenset(dept) | frozenset(a.skills)

    def workers(self) -> list[Agent]:
        """Return the active agents with no active reports: who takes subtasks by default."""
        return [
            a for a in self.agents
            if a.active and not any(r.active for r in self._reports[a.id])
        ]

    def candidates(self, ids: Iterable[str] | None = None) -> list[Candidate]:
        """Return the scheduler's view of the given agents (default: `workers()`)."""
        agents = self.workers() if ids is None else [self.agent(i) for i in ids]
        return [
            Candidate(id=a.id, skills=self.skills_of(a.id), capacity=a.capacity, active=a.active)
            for a in agents
        ]
