"""The org chart: validation naming every problem, questions about it, the stored copy."""

from __future__ import annotations

import uuid
from pathlib import Path
from typing import Any

import pytest

from models.org import InvalidOrg, OrgChart, ReviewPolicy
from models.scheduling import pick_assignee
from runtime.documents import load_org, parse_org
from runtime.org_store import OrgStore
from worker import Deps

EXAMPLE = Path(__file__).resolve().parent.parent / "examples" / "org.yaml"


def org(*agents: dict[str, Any], departments: list[dict[str, Any]] | None = None) -> Any:
    return {"departments": departments or [{"name": "eng", "skills": ["python"]}],
            "agents": list(agents)}


def errors_of(data: Any) -> list[str]:
    with pytest.raises(InvalidOrg) as e:
        parse_org(data)
    return e.value.errors


def small(prefix: str = "") -> OrgChart:
    p = prefix
    return parse_org({
        "departments": [{"name": "eng", "skills": ["Python", "code"]},
                        {"name": "research", "skills": ["search"]}],
        "agents": [
            {"id": f"{p}boss", "name": "Boss", "reports_to": None},
            {"id": f"{p}eng", "reports_to": f"{p}boss", "department": "eng"},
            {"id": f"{p}res", "reports_to": f"{p}boss", "department": "research"},
            {"id": f"{p}dev", "reports_to": f"{p}eng", "department": "eng",
             "skills": ["data", "PYTHON"], "capacity": 3, "tools": ["echo"],
             "model": "gpt-x", "review_policy": "llm"},
            {"id": f"{p}intern", "reports_to": f"{p}dev", "skills": ["tea"]},
            {"id": f"{p}writer", "reports_to": f"{p}res", "department": "research",
             "skills": ["writing"], "active": False},
        ],
    })


def test_duplicate_ids_are_named() -> None:
    errs = errors_of(org({"id": "a"}, {"id": "b", "reports_to": "a"}, {"id": "b",
                                                                         "reports_to": "a"}))
    assert errs == ["agent id 'b' is used more than once"]


def test_unknown_manager_is_named() -> None:
    errs = errors_of(org({"id": "a"}, {"id": "b", "reports_to": "ghost"}))
    assert errs == ["agent 'b' reports to unknown manager 'ghost'"]


def test_unknown_department_is_named() -> None:
    errs = errors_of(org({"id": "a", "department": "marketing"}))
    assert errs == ["agent 'a' is in unknown department 'marketing'"]


def test_two_roots_are_refused() -> None:
    errs = errors_of(org({"id": "a"}, {"id": "b"}))
    assert errs == ["the org chart has 2 roots (a, b); exactly one agent may have no manager"]


def test_cycles_are_named_with_their_path() -> None:
    errs = errors_of(org({"id": "root"}, {"id": "a", "reports_to": "c"},
                         {"id": "b", "reports_to": "a"}, {"id": "c", "reports_to": "b"},
                         {"id": "s", "reports_to": "s"}))
    assert errs == ["agent 's' reports to itself", "reporting cycle: a -> c -> b -> a"]


def test_no_root_when_everyone_reports_to_someone() -> None:
    errs = errors_of(org({"id": "a", "reports_to": "b"}, {"id": "b", "reports_to": "a"}))
    assert errs == ["the org chart has no root: every agent reports to someone",
                    "reporting cycle: a -> b -> a"]


def test_every_problem_is_reported_at_once() -> None:
    errs = errors_of(org({"id": "a"}, {"id": "a"}, {"id": "x", "reports_to": "nobody",
                                                    "department": "nope"},
                         departments=[{"name": "d"}, {"name": "d"}]))
    assert errs == [
        "department 'd' is declared more than once",
        "agent id 'a' is used more than once",
        "agent 'x' reports to unknown manager 'nobody'",
        "agent 'x' is in unknown department 'nope'",
        "the org chart has 2 roots (a, a); exactly one agent may have no manager",
    ]


def test_field_errors_name_the_field() -> None:
    errs = errors_of(org({"id": "a", "capacity": 0, "review_policy": "vibes", "extra": 1}))
    assert errs == [
        "agents.0.capacity: Input should be greater than or equal to 1",
        "agents.0.review_policy: Input should be 'human', 'llm' or 'auto'",
        "agents.0.extra: Extra inputs are not permitted",
    ]


def test_bad_file_names_the_file(tmp_path: Path) -> None:
    bad = tmp_path / "org.yaml"
    bad.write_text("agents: [{id: a}, {id: b}]")
    with pytest.raises(InvalidOrg) as e:
        load_org(bad)
    assert e.value.errors == [f"{bad}: the org chart has 2 roots (a, b); exactly one agent "
                              "may have no manager"]
    with pytest.raises(InvalidOrg, match="cannot read org file"):
        load_org(tmp_path / "missing.yaml")


def test_reporting_chain_runs_from_root_to_agent() -> None:
    chart = small()
    assert [a.id for a in chart.reporting_chain("intern")] == ["boss", "eng", "dev", "intern"]
    assert [a.id for a in chart.reporting_chain("boss")] == ["boss"]
    assert chart.manager_of("dev").id == "eng"  # type: ignore[union-attr]
    assert chart.manager_of("boss") is None
    assert chart.root.id == "boss"


def test_reports_subtree_and_managers() -> None:
    chart = small()
    assert [a.id for a in chart.reports("boss")] == ["eng", "res"]
    assert [a.id for a in chart.subtree("boss")] == ["eng", "res", "dev", "writer", "intern"]
    assert [a.id for a in chart.subtree("eng")] == ["dev", "intern"]
    assert chart.subtree("intern") == []
    assert chart.is_manager("dev")
    assert not chart.is_manager("intern")
    # res's only report is inactive, so res takes work itself; dev has an active intern
    assert [a.id for a in chart.workers()] == ["res", "intern"]
    with pytest.raises(KeyError, match="ghost"):
        chart.reports("ghost")


def test_skills_are_department_and_personal_case_insensitive() -> None:
    chart = small()
    assert chart.skills_of("dev") == {"python", "code", "data"}
    assert chart.skills_of("intern") == {"tea"}
    assert chart.skills_of("boss") == frozenset()
    assert chart.agent("dev").skills == ["data", "python"]


def test_example_org_loads_with_three_skill_areas() -> None:
    chart = load_org(EXAMPLE)
    assert chart.root.id == "ceo"
    managers = [a.id for a in chart.reports("ceo")]
    assert len(managers) == 2
    assert all(chart.is_manager(m) for m in managers)
    workers = chart.workers()
    assert len(workers) == 4
    assert all(len(chart.reporting_chain(w.id)) == 3 for w in workers)
    for skill in ("python", "data", "search", "writing", "tools"):
        assert any(skill in chart.skills_of(w.id) for w in workers), skill
    assert {a.review_policy for a in chart.agents} == set(ReviewPolicy)
    # the demo's split: three skills, three different workers
    picks = [pick_assignee(need, chart.candidates(), {}).agent_id
             for need in (["python", "data"], ["search"], ["writing"])]
    assert picks == ["data-eng", "searcher", "writer"]


def test_chart_round_trips_through_json() -> None:
    chart = small()
    assert OrgChart.model_validate_json(chart.model_dump_json()) == chart


async def test_save_and_load_is_idempotent(deps: Deps) -> None:
    store = OrgStore(deps.pool)
    p = f"o{uuid.uuid4().hex[:8]}-"
    chart = small(p)
    first = await store.save_org(chart)
    assert sorted(first.added) == sorted(a.id for a in chart.agents)
    again = await store.save_org(chart)
    assert again.added == again.changed == again.removed == []
    loaded = await store.load_org()
    assert loaded == chart
    assert loaded.skills_of(f"{p}dev") == {"python", "code", "data"}
    assert loaded.agent(f"{p}dev").tools == ["echo"]
    assert loaded.agent(f"{p}intern").tools is None


async def test_agents_removed_from_the_file_become_inactive(deps: Deps) -> None:
    store = OrgStore(deps.pool)
    p = f"o{uuid.uuid4().hex[:8]}-"
    chart = small(p)
    await store.save_org(chart)
    data = chart.model_dump()
    data["agents"] = [a for a in data["agents"] if a["id"] != f"{p}intern"]
    data["agents"][3]["capacity"] = 5  # dev
    change = await store.save_org(OrgChart.model_validate(data))
    # writer moved up a place in the file: its stored position changed too
    assert change.added == []
    assert change.changed == [f"{p}dev", f"{p}writer"]
    assert change.removed == [f"{p}intern"]
    row = await deps.pool.fetchrow("SELECT active, removed_at FROM agents WHERE id = $1",
                                   f"{p}intern")
    assert row is not None
    assert not row["active"]
    assert row["removed_at"] is not None
    loaded = await store.load_org()
    assert f"{p}intern" not in loaded
    assert loaded.agent(f"{p}dev").capacity == 5
    assert not loaded.agent(f"{p}writer").active  # inactive in the file, still in the chart
    # put back in the file: active again
    change = await store.save_org(chart)
    assert change.changed == [f"{p}dev", f"{p}intern", f"{p}writer"]
    assert (await store.load_org()) == chart
