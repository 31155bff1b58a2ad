"""Scheduling: scores, ordering, who gets the work, rebalancing, capacity under concurrency."""

from __future__ import annotations

import asyncio
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from models.org import Candidate, OrgChart
from models.scheduling import (
    AGING_CAP,
    QueueItem,
    ordered,
    pick_assignee,
    plan_rebalance,
    priority_score,
    temporal_priority_key,
)
from models.task import Priority
from runtime.documents import parse_org
from runtime.org_store import OrgStore
from worker import Deps

NOW = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
H = timedelta(hours=1)


def score(priority: str = "medium", deadline: datetime | None = None, **kw: Any) -> float:
    return priority_score(priority=priority, deadline=deadline, now=NOW, **kw)


# -- scores ---------------------------------------------------------------------------
@pytest.mark.parametrize(("priority", "expected"), [
    ("low", 10), ("medium", 20), ("high", 30), ("urgent", 50), (Priority.HIGH, 30),
])
def test_priority_weights_times_ten(priority: str, expected: float) -> None:
    assert score(priority) == expected


@pytest.mark.parametrize(("deadline", "bonus"), [
    (None, 0),
    (NOW - 5 * H, 50),                       # past due counts as under 24 h
    (NOW, 50),
    (NOW + 24 * H - timedelta(seconds=1), 50),
    (NOW + 24 * H, 30),
    (NOW + 72 * H - timedelta(seconds=1), 30),
    (NOW + 72 * H, 10),
    (NOW + 168 * H - timedelta(seconds=1), 10),
    (NOW + 168 * H, 0),
    (NOW + 1000 * H, 0),
    (datetime(2026, 3, 1, 20, 0), 50),       # naive is taken as UTC
])
def test_deadline_bands(deadline: datetime | None, bonus: int) -> None:
    assert score("low", deadline) == 10 + bonus


def test_subtask_blocks_and_aging_add_up() -> None:
    assert score("medium", is_subtask=True) == 25
    assert score("medium", blocks=4) == 32
    assert score("medium", waiting_s=59) == 20          # whole minutes only
    assert score("medium", waiting_s=10 * 60 + 30) == 30
    assert score("medium", waiting_s=10**6) == 20 + AGING_CAP
    assert score("high", NOW + 2 * H, is_subtask=True, blocks=2, waiting_s=300) == (
        30 + 50 + 5 + 6 + 5
    )


def test_aging_lets_low_work_overtake_fresh_high_work() -> None:
    fresh_high = score("high")
    assert score("low", waiting_s=19 * 60) < fresh_high
    assert score("low", waiting_s=20 * 60) == fresh_high
    assert score("low", waiting_s=21 * 60) > fresh_high
    assert score("low", waiting_s=41 * 60) > score("urgent")
    # the cap keeps work that is actually due ahead of mere age
    assert score("low", waiting_s=10**6) < score("high", NOW + 3 * H)
    waited = QueueItem(id="old-low", score=score("low", waiting_s=30 * 60))
    fresh = QueueItem(id="new-high", score=fresh_high)
    assert [i.id for i in ordered([fresh, waited])] == ["old-low", "new-high"]


@pytest.mark.parametrize(("value", "key"), [
    (200, 1), (75, 1), (74.9, 2), (50, 2), (45, 2), (30, 3), (25, 3), (20, 4), (15, 4),
    (10, 5), (0, 5),
])
def test_temporal_priority_key_bands(value: float, key: int) -> None:
    assert temporal_priority_key(value) == key


def test_plain_priorities_map_to_their_own_temporal_level() -> None:
    keys = [temporal_priority_key(score(p)) for p in ("urgent", "high", "medium", "low")]
    assert keys == [2, 3, 4, 5]
    assert temporal_priority_key(score("high", NOW + H)) == 1


def test_order_breaks_ties_by_deadline_then_creation_then_id() -> None:
    t0 = NOW - 10 * H
    items = [
        QueueItem(id="no-deadline", score=40),
        QueueItem(id="late", score=40, deadline=NOW + 9 * H),
        QueueItem(id="soon", score=40, deadline=NOW + H),
        QueueItem(id="top", score=41),
        QueueItem(id="b-created-later", score=30, created_at=t0 + H),
        QueueItem(id="c-created-first", score=30, created_at=t0),
        QueueItem(id="z-same-time", score=30, created_at=t0 + H),
        QueueItem(id="y-no-time", score=30),
        QueueItem(id="x-no-time", score=30),
        QueueItem(id="seq2", score=5, seq=2),
        QueueItem(id="seq1", score=5, seq=1),
    ]
    assert [i.id for i in ordered(items)] == [
        "top", "soon", "late", "no-deadline", "c-created-first", "b-created-later",
        "z-same-time", "x-no-time", "y-no-time", "seq1", "seq2",
    ]
    assert ordered(reversed(items)) == ordered(items)


# -- who gets the work ----------------------------------------------------------------
def cand(id: str, *skills: str, capacity: int = 2, active: bool = True) -> Candidate:
    return Candidate(id=id, skills=frozenset(skills), capacity=capacity, active=active)


TEAM = [
    cand("w1", "python", "data", capacity=2),
    cand("w2", "python", "data", "search", capacity=4),
    cand("w3", "writing", capacity=1),
    cand("w4", "python", "data", "search", "writing", active=False),
]


def test_agent_with_every_skill_and_least_relative_load_wins() -> None:
    c = pick_assignee(["Python", "data"], TEAM, {"w1": 1, "w2": 1})  # 1/2 vs 1/4
    assert c.agent_id == "w2"
    assert c.reason == "chose w2: has all of [python, data], least loaded of 2 (load 1/4)"
    # same share of capacity (1/2, 2/4): fewer running wins; then the id
    assert pick_assignee(["python"], TEAM, {"w1": 1, "w2": 2}).agent_id == "w1"
    assert pick_assignee(["python"], TEAM, {"w1": 0, "w2": 0}).agent_id == "w1"


def test_partial_match_falls_back_to_most_skills_with_reason() -> None:
    c = pick_assignee(["python", "search", "writing"], TEAM, {})
    assert (c.agent_id, c.matched, c.required) == ("w2", 2, 3)  # w4 has all but is inactive
    assert c.reason == ("no agent has all of [python, search, writing]; chose w2 with 2/3 "
                        "skills (load 0/4)")


def test_no_matching_skill_falls_back_to_least_loaded() -> None:
    c = pick_assignee(["cooking"], TEAM, {"w1": 1, "w2": 3, "w3": 0})
    assert c.agent_id == "w3"
    assert c.reason == "no agent has any of [cooking]; chose w3, the least loaded (load 0/1)"
    c = pick_assignee([], TEAM, {"w1": 1, "w2": 3, "w3": 0})
    assert c.reason == "no skills required; chose w3, the least loaded (load 0/1)"


def test_full_agents_are_not_eligible_and_work_waits_for_the_best_match() -> None:
    c = pick_assignee(["writing"], TEAM, {"w3": 1})
    assert c.agent_id is None
    assert c.queue_for == "w3"
    assert c.reason == ("waiting for w3: has all of [writing], least loaded of 1 (load 1/1); "
                        "all 1 such agents are at capacity")
    c = pick_assignee(["python"], TEAM, {"w1": 2, "w2": 3})
    assert c.agent_id == "w2"  # w1 full, w2 has room
    c = pick_assignee(["python"], TEAM, {"w1": 2, "w2": 4})
    assert c.agent_id is None
    assert c.queue_for == "w1"
    c = pick_assignee(["python"], [cand("x", active=False)], {})
    assert c.agent_id is None
    assert c.queue_for is None
    assert c.reason == "no active agent among the candidates"


# -- rebalancing ----------------------------------------------------------------------
def test_rebalance_moves_pending_work_to_idle_agents_with_the_skills() -> None:
    team = [cand("a", "x"), cand("b", "x"), cand("c", "y"), cand("d", "x", "y")]
    pending = [QueueItem(id=f"p{i}", score=i, agent_id="a", required_skills=("x",))
               for i in range(6)]
    # a holds 8 (2 running + 6 pending); average 2.5: above 3.75 gives, below 1.25 takes
    moves = plan_rebalance(pending, team, {"a": 8, "b": 1, "c": 0, "d": 1})
    assert [(m.item_id, m.from_agent, m.to_agent) for m in moves] == [
        ("p5", "a", "b"), ("p4", "a", "d"),  # most urgent first; c lacks x; b, d by id
    ]
    assert moves[0].reason == ("rebalanced from a (load 8, over 1.5x the average 2.50) to b "
                               "(load 1) with 1/1 of the skills")
    # then b and d hold 2, not below 1.25: a stays over, as nobody idle can take its work
    assert plan_rebalance(pending, team, {"a": 2, "b": 2, "c": 2, "d": 2}) == []


def test_rebalance_respects_candidates_and_never_worsens_the_skill_match() -> None:
    team = [cand("a", "x"), cand("b", "x"), cand("c"), cand("d")]
    items = [
        QueueItem(id="only-a", agent_id="a", required_skills=("x",), candidates=("a",)),
        QueueItem(id="needs-x", agent_id="a", required_skills=("x",), candidates=("a", "c")),
        QueueItem(id="nothing", agent_id="a", score=-1),
    ]
    moves = plan_rebalance(items, team, {"a": 9, "b": 3})
    assert [(m.item_id, m.to_agent) for m in moves] == [("nothing", "c")]


# -- the store: capacity, idempotence, promotion, rebalancing ----------------------------
def team_chart(prefix: str, workers: list[tuple[str, list[str], int]]) -> OrgChart:
    return parse_org({
        "agents": [{"id": f"{prefix}boss"}] + [
            {"id": f"{prefix}{name}", "reports_to": f"{prefix}boss", "skills": skills,
             "capacity": cap}
            for name, skills, cap in workers
        ],
    })


def max_overlap(intervals: list[tuple[datetime, datetime]]) -> int:
    events = sorted([(s, 1) for s, _ in intervals] + [(e, -1) for _, e in intervals],
                    key=lambda ev: (ev[0], ev[1]))  # an end sorts before a start at a tie
    peak = cur = 0
    for _, d in events:
        cur += d
        peak = max(peak, cur)
    return peak


async def test_fifty_concurrent_assigns_never_overbook_an_agent(deps: Deps) -> None:
    store = OrgStore(deps.pool)
    p = f"c{uuid.uuid4().hex[:8]}-"
    caps = {f"{p}a": 1, f"{p}b": 2, f"{p}c": 3}
    await store.save_org(team_chart(p, [("a", ["x"], 1), ("b", ["x"], 2), ("c", ["x"], 3),
                                        ("idle", ["y"], 10)]))
    who = [*caps, f"{p}idle"]
    task = f"{p}task"
    subs = [f"{task}/s{i:02d}" for i in range(50)]
    calls = [store.assign(s, task, ["x"], who, float(i % 7)) for i, s in enumerate(subs)]
    calls += [store.assign(s, task, ["x"], who, 0.0) for s in subs[:20]]  # retries, racing
    results = await asyncio.gather(*calls)

    started = {r.subtask_id: r for r in results if r is not None}
    assert len(started) == sum(caps.values())
    for r in results[50:]:  # a retry sees exactly what its twin recorded
        twin = started.get(r.subtask_id) if r is not None else None
        assert r == twin
    loads = await store.loads()
    assert {a: loads[a] for a in who} == {**caps, f"{p}idle": 0}  # idle lacks the skill
    rows = await deps.pool.fetch("SELECT * FROM assignments WHERE task_id = $1", task)
    assert sorted(r["subtask_id"] for r in rows) == subs  # each subtask recorded once
    assert sum(r["state"] == "queued" for r in rows) == 50 - sum(caps.values())

    # churn: finish, promote and more (repeated) assigns at once until everything ran
    async def worker() -> None:
        while True:
            running = await deps.pool.fetch(
                "SELECT subtask_id FROM assignments WHERE task_id = $1 AND state = 'running'",
                task,
            )
            if not running and not await deps.pool.fetchval(
                "SELECT count(*) FROM assignments WHERE task_id = $1 AND state = 'queued'",
                task,
            ):
                return
            for r in running[:2]:
                await store.finish(r["subtask_id"])
            await asyncio.gather(store.promote_queued(task_id=task),
                                 store.assign(subs[0], task, ["x"], who, 0.0))

    await asyncio.wait_for(asyncio.gather(*(worker() for _ in range(6))), 20)
    rows = await deps.pool.fetch("SELECT * FROM assignments WHERE task_id = $1", task)
    assert all(r["state"] == "done" and r["started_at"] is not None for r in rows)
    assert len(rows) == 50
    for agent, cap in caps.items():
        spans = [(r["started_at"], r["finished_at"]) for r in rows if r["agent_id"] == agent]
        assert spans, agent
        assert max_overlap(spans) <= cap, agent
    assert not any(r["agent_id"] == f"{p}idle" for r in rows)


async def test_assign_is_idempotent_and_finish_frees_the_slot(deps: Deps) -> None:
    store = OrgStore(deps.pool)
    p = f"i{uuid.uuid4().hex[:8]}-"
    await store.save_org(team_chart(p, [("solo", ["x"], 1)]))
    first = await store.assign(f"{p}t/1", f"{p}t", ["x"], None, 10)
    assert first is not None
    assert first.agent_id == f"{p}solo"
    assert first.state == "running"
    assert await store.assign(f"{p}t/1", f"{p}t", ["x"], None, 99) == first
    assert await store.assign(f"{p}t/2", f"{p}t", ["x"], None, 10) is None
    queued = await store.get(f"{p}t/2")
    assert queued is not None
    assert queued.state == "queued"
    assert queued.agent_id == f"{p}solo"
    assert "at capacity" in queued.reason
    assert await store.assign(f"{p}t/2", f"{p}t", ["x"], None, 10) is None
    assert await store.finish(f"{p}t/1")
    assert not await store.finish(f"{p}t/1")
    assert (await store.loads())[f"{p}solo"] == 0
    promoted = await store.promote_queued(task_id=f"{p}t")
    assert [a.subtask_id for a in promoted] == [f"{p}t/2"]
    assert promoted[0].reason.startswith(f"chose {p}solo: has all of [x]")
    assert await store.promote_queued(task_id=f"{p}t") == []
    done = await store.assign(f"{p}t/1", f"{p}t", ["x"], None, 10)
    assert done is not None
    assert done.state == "done"
    nobody = await store.assign(f"{p}t/3", f"{p}t", ["x"], [f"{p}ghost"], 10)
    assert nobody is None
    ghost = await store.get(f"{p}t/3")
    assert ghost is not None
    assert ghost.agent_id is None
    assert ghost.reason == f"no active agent among the candidates [{p}ghost]"
    await store.finish(f"{p}t/2")
    await store.finish(f"{p}t/3")


async def test_queued_work_is_promoted_most_urgent_first_with_aging(deps: Deps) -> None:
    store = OrgStore(deps.pool)
    p = f"q{uuid.uuid4().hex[:8]}-"
    await store.save_org(team_chart(p, [("x", ["x"], 1), ("y", ["y"], 1)]))
    task = f"{p}t"
    assert await store.assign(f"{task}/run", task, ["x"], None, 0) is not None
    for name, s in [("low", 10), ("high", 30), ("mid", 20), ("old-low", 10)]:
        assert await store.assign(f"{task}/{name}", task, ["x"], None, s) is None
    await deps.pool.execute(  # old-low has waited 25 minutes: 10 + 25 beats high's 30
        "UPDATE assignments SET created_at = created_at - interval '25 minutes'"
        " WHERE subtask_id = $1", f"{task}/old-low",
    )
    # x is full, but y-work is not stuck behind it
    assert await store.assign(f"{task}/y-run", task, ["y"], None, 0) is not None
    assert await store.assign(f"{task}/y-next", task, ["y"], None, 0) is None
    await store.finish(f"{task}/y-run")
    assert [a.subtask_id for a in await store.promote_queued(task_id=task)] == [
        f"{task}/y-next"
    ]

    order = []
    current = f"{task}/run"
    for _ in range(4):
        await store.finish(current)
        promoted = await store.promote_queued(task_id=task)
        assert len(promoted) == 1
        assert promoted[0].agent_id == f"{p}x"
        current = promoted[0].subtask_id
        order.append(current.rsplit("/", 1)[1])
    assert order == ["old-low", "high", "mid", "low"]
    await store.finish(current)
    await store.finish(f"{task}/y-next")


async def test_rebalance_moves_queued_work_to_a_new_idle_agent(deps: Deps) -> None:
    store = OrgStore(deps.pool)
    p = f"r{uuid.uuid4().hex[:8]}-"
    before = team_chart(p, [("a", ["x"], 1), ("c", ["z"], 1)])
    await store.save_org(before)
    task = f"{p}t"
    for i in range(6):
        await store.assign(f"{task}/{i}", task, ["x"], None, float(i))
    assert (await store.loads())[f"{p}a"] == 1
    await store.save_org(team_chart(p, [("a", ["x"], 1), ("c", ["z"], 1), ("b", ["x"], 1)]))
    # a holds 6 (1 running, 5 queued); average 2: b (0) takes until it reaches 1; c lacks x
    moves = await store.rebalance(task_id=task)
    assert [(m.item_id, m.from_agent, m.to_agent) for m in moves] == [
        (f"{task}/5", f"{p}a", f"{p}b")
    ]
    moved = await store.get(f"{task}/5")
    assert moved is not None
    assert moved.agent_id == f"{p}b"
    assert moved.state == "queued"
    assert moved.reason.startswith(f"rebalanced from {p}a")
    assert await store.rebalance(task_id=task) == []  # b is no longer below half the average
    started = await store.promote_queued(task_id=task)
    assert [(a.subtask_id, a.agent_id) for a in started] == [(f"{task}/5", f"{p}b")]
    for i in range(6):
        await store.finish(f"{task}/{i}")
