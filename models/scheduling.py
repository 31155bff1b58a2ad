"""Who works on what, in which order: priority scores, assignee choice, rebalancing.

Pure and deterministic: no I/O and no wall clock (`now` is always a parameter), so
workflow code may call these functions.

Scores. `priority_score` adds up:

| part | points |
|---|---|
| priority weight x 10 | low 10, medium 20, high 30, urgent 50 |
| deadline under 24 h away (or past) / under 72 h / under 168 h | +50 / +30 / +10 |
| the work is a subtask | +5 |
| each task it blocks | +3 |
| aging: each full minute waited, at most `AGING_CAP` (60) | +1 |

Aging keeps low-priority work from starving: a low item that has waited 21 minutes
(10 + 21 = 31) outranks a fresh high one (30), after 41 minutes a fresh urgent one (50),
and after an hour it carries 70 points, as much as medium work due within a day. The cap
keeps work that is actually due (high and due within 24 h: 80) ahead of mere age.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence, Set
from datetime import UTC, datetime, timedelta
from enum import StrEnum

from pydantic import BaseModel, ConfigDict, Field

from models.org import Candidate
from models.task import Priority

PRIORITY_WEIGHT: dict[Priority, int] = {
    Priority.LOW: 1,
    Priority.MEDIUM: 2,
    Priority.HIGH: 3,
    Priority.URGENT: 5,
}
# (deadline closer than this, bonus); the first band that matches wins.
DEADLINE_BANDS: tuple[tuple[timedelta, int], ...] = (
    (timedelta(hours=24), 50),
    (timedelta(hours=72), 30),
    (timedelta(hours=168), 10),
)
SUBTASK_BONUS = 5
BLOCKS_BONUS = 3
AGING_PER_MINUTE = 1
AGING_CAP = 60
# Lowest score for Temporal priority_key 1, 2, 3, 4; anything lower gets 5. Plain priorities
# land on their own level: urgent 2, high 3, medium 4, low 5; due-soon urgent/high work on 1.
TEMPORAL_KEY_FLOORS: tuple[float, ...] = (75, 45, 25, 15)
REBALANCE_HIGH = 1.5
REBALANCE_LOW = 0.5


def _aware(t: datetime) -> datetime:
    return t if t.tzinfo is not None else t.replace(tzinfo=UTC)


def aging_bonus(waiting_s: float) -> int:
    """Return the points for having waited `waiting_s` seconds (capped)."""
    if waiting_s <= 0:
        return 0
    return min(int(waiting_s // 60) * AGING_PER_MINUTE, AGING_CAP)


def deadline_bonus(deadline: datetime | None, now: datetime) -> int:
    """Return the points for how close the deadline is (a past deadline counts as closest)."""
    if deadline is None:
        return 0
    left = _aware(deadline) - _aware(now)
    for within, points in DEADLINE_BANDS:
        if left < within:
            return points
    return 0


def priority_score(
    *,
    priority: Priority | str,
    deadline: datetime | None,
    now: datetime,
    is_subtask: bool = False,
    blocks: int = 0,
    waiting_s: float = 0.0,
) -> float:
    """Return how urgent a piece of work is: higher runs first (see the module table)."""
    weight = PRIORITY_WEIGHT[Priority(priority)]
    return float(
        weight * 10
        + deadline_bonus(deadline, now)
        + (SUBTASK_BONUS if is_subtask else 0)
        + BLOCKS_BONUS * max(blocks, 0)
        + aging_bonus(waiting_s)
    )


def temporal_priority_key(score: float) -> int:
    """Return Temporal's `priority_key` (1 = most urgent .. 5) for a score."""
    for key, floor in enumerate(TEMPORAL_KEY_FLOORS, start=1):
        if score >= floor:
            return key
    return len(TEMPORAL_KEY_FLOORS) + 1


class QueueItem(BaseModel):
    """A piece of work waiting for (or assigned to) an agent, as ordering sees it."""

    model_config = ConfigDict(frozen=True)

    id: str
    score: float = 0.0
    deadline: datetime | None = None
    created_at: datetime | None = None
    seq: int = Field(0, description="creation order when created_at ties or is missing")
    agent_id: str | None = None
    required_skills: tuple[str, ...] = ()
    candidates: tuple[str, ...] | None = Field(None, description="who may take it; None: anyone")


def queue_key(item: QueueItem) -> tuple[float, int, float, float, int, str]:
    """Return the sort key: score desc, deadline asc (None last), created asc, seq, id."""
    deadline = _aware(item.deadline).timestamp() if item.deadline else 0.0
    created = _aware(item.created_at).timestamp() if item.created_at else float("inf")
    return (-item.score, item.deadline is None, deadline, created, item.seq, item.id)


def ordered(items: Iterable[QueueItem]) -> list[QueueItem]:
    """Return the items in the order they should run (see `queue_key`)."""
    return sorted(items, key=queue_key)


class Choice(BaseModel):
    """Who gets a piece of work and why. `agent_id` None means: wait (stay QUEUED).

    While waiting, `queue_for` names the best-matching agent the work waits on (None when no
    candidate is active at all).
    """

    agent_id: str | None
    reason: str
    queue_for: str | None = None
    matched: int = 0
    required: int = 0


def _fmt(skills: Iterable[str]) -> str:
    return "[" + ", ".join(skills) + "]"


def pick_assignee(
    required_skills: Iterable[str],
    candidates: Sequence[Candidate],
    loads: Mapping[str, int],
) -> Choice:
    """Return the agent that should take work needing `required_skills`, with the reason.

    Skill match decides first, over every active candidate whether busy or not: the agents
    with all the skills, else those with the most of them, else everyone. Among that group
    the one with the lowest load relative to capacity (then the lowest id) with a free slot
    wins. When the whole group is at capacity the work waits for it rather than going to a
    worse-matched agent: `agent_id` is None and `queue_for` is the group's least loaded.
    """
    required = list(dict.fromkeys(s.strip().lower() for s in required_skills))
    active = [c for c in candidates if c.active]
    if not active:
        return Choice(agent_id=None, reason="no active agent among the candidates",
                      required=len(required))

    def matched(c: Candidate) -> int:
        return sum(1 for s in required if s in c.skills)

    best = max(matched(c) for c in active)
    group = sorted(
        (c for c in active if matched(c) == best),
        key=lambda c: (loads.get(c.id, 0) / c.capacity, loads.get(c.id, 0), c.id),
    )
    free = [c for c in group if loads.get(c.id, 0) < c.capacity]
    chosen = free[0] if free else group[0]
    load = f"load {loads.get(chosen.id, 0)}/{chosen.capacity}"
    verb = "chose" if free else "waiting for"
    if not required:
        why = f"no skills required; {verb} {chosen.id}, the least loaded ({load})"
    elif best == len(required):
        why = (f"{verb} {chosen.id}: has all of {_fmt(required)}, least loaded of "
               f"{len(group)} ({load})")
    elif best > 0:
        why = (f"no agent has all of {_fmt(required)}; {verb} {chosen.id} with "
               f"{best}/{len(required)} skills ({load})")
    else:
        why = f"no agent has any of {_fmt(required)}; {verb} {chosen.id}, the least loaded ({load})"
    if free:
        return Choice(agent_id=chosen.id, reason=why, matched=best, required=len(required))
    return Choice(
        agent_id=None,
        queue_for=chosen.id,
        reason=f"{why}; all {len(group)} such agents are at capacity",
        matched=best,
        required=len(required),
    )


class Move(BaseModel):
    """Pending work to hand from one agent to another."""

    model_config = ConfigDict(frozen=True)

    item_id: str
    from_agent: str
    to_agent: str
    reason: str


def plan_rebalance(
    pending: Sequence[QueueItem],
    candidates: Sequence[Candidate],
    loads: Mapping[str, int],
) -> list[Move]:
    """Return moves of pending work from overloaded agents to idle ones able to do it.

    `loads` counts everything an agent holds (running and pending); `pending` is the work
    not started yet, each item with its `agent_id`. The average is over the active
    candidates. An agent above `REBALANCE_HIGH` x average gives its pending work, most
    urgent first, to agents below `REBALANCE_LOW` x average (least loaded first, then id)
    that have at least as many of the item's required skills as the giver and that the
    item allows, until it is no longer above, or nobody can take it.
    """
    active = {c.id: c for c in candidates if c.active}
    if not active:
        return []
    load = {i: loads.get(i, 0) for i in active}
    average = sum(load.values()) / len(active)
    if average == 0:
        return []
    high, low = REBALANCE_HIGH * average, REBALANCE_LOW * average

    def matched(agent: str, skills: Sequence[str]) -> int:
        have: Set[str] = active[agent].skills if agent in active else frozenset()
        return sum(1 for s in skills if s in have)

    by_agent: dict[str, list[QueueItem]] = {}
    for item in ordered(pending):
        if item.agent_id is not None:
            by_agent.setdefault(item.agent_id, []).append(item)
    moves: list[Move] = []
    for giver in sorted(load, key=lambda i: (-load[i], i)):
        for item in by_agent.get(giver, []):
            if load[giver] <= high:
                break
            need = matched(giver, item.required_skills)
            takers = sorted(
                (
                    t for t in active
                    if t != giver and load[t] < low
                    and (item.candidates is None or t in item.candidates)
                    and matched(t, item.required_skills) >= need
                ),
                key=lambda t: (load[t], t),
            )
            if not takers:
                continue
            taker = takers[0]
            moves.append(Move(
                item_id=item.id,
                from_agent=giver,
                to_agent=taker,
                reason=(f"rebalanced from {giver} (load {load[giver]}, over "
                        f"{REBALANCE_HIGH:g}x the average {average:.2f}) to {taker} "
                        f"(load {load[taker]}) with "
                        f"{matched(taker, item.required_skills)}/{len(item.required_skills)} "
                        "of the skills"),
            ))
            load[giver] -= 1
            load[taker] += 1
    return moves


class AssignmentState(StrEnum):
    QUEUED = "queued"
    RUNNING = "running"
    DONE = "done"


class Assignment(BaseModel):
    """A subtask's place in the org: who has it (or waits for it) and why."""

    subtask_id: str
    task_id: str
    agent_id: str | None
    state: AssignmentState
    required_skills: list[str] = Field(default_factory=list)
    candidates: list[str] | None = None
    score: float = 0.0
    reason: str = ""
    created_at: datetime | None = None
    started_at: datetime | None = None
    finished_at: datetime | None = None
