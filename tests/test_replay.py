"""Replay recorded histories against today's workflow code: upgrades must not break running tasks.

The rule: a change to workflow code (workflows/) must replay every history under
tests/histories, sandboxed and unsandboxed, or be guarded with `workflow.patched(...)` so
that old histories take the old path. Never re-record to make this test pass after such a
change: the fixtures stand for tasks already running when a worker is upgraded.

The histories come in generations, each recorded from one version of the workflow code
(`GENERATIONS`); a generation is never re-recorded or added to. When the workflow code
gains a path no generation holds (typically a `workflow.patched` branch), record a new
generation of every shape into a new folder with the suite's real servers, then list it
below:

    python -m tests.record_histories tests/histories/gen3             # every shape
    python -m tests.record_histories tests/histories/gen3 -k diamond  # one shape

Each shape's folder holds the history of the TaskWorkflow and of every workflow beneath
it (SubtaskWorkflows, nested TaskWorkflows), one file per workflow id ("/" written "__").
The replay needs no server.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterable
from dataclasses import dataclass
from pathlib import Path

import pytest
from temporalio.client import WorkflowHistory
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.worker import (
    Replayer,
    UnsandboxedWorkflowRunner,
    WorkflowRunner,
)
from temporalio.worker.workflow_sandbox import SandboxedWorkflowRunner

from workflows.subtask import SubtaskWorkflow
from workflows.task import TaskWorkflow

HISTORIES = Path(__file__).resolve().parent / "histories"
SEP = "__"
# The shapes the first generation holds.
FIRST_SHAPES = (
    "diamond",
    "wide_fan_out",
    "failure_blocked",
    "cancel",
    "agent_tools",
    "review_reject_approve",
    "escalation_replan",
    "delegation_two_levels",
    "queued_capacity",
    "tool_fallback",
)
# The shapes tests/record_histories.py records (into a new generation's folder).
SHAPES = (
    *FIRST_SHAPES,
    "search_attributes",
    "model_retry_cap",
    "model_failure_climbs",
    "past_deadline",
)


@dataclass(frozen=True)
class Generation:
    """Histories recorded from one version of the workflow code: tasks it started."""

    name: str
    folder: Path
    shapes: tuple[str, ...]


GENERATIONS = (
    # Committed in fcc28f7 (tool_fallback in daffad5) at the top of tests/histories, from
    # workflow code before any `workflow.patched` branch: they take none.
    Generation("gen1", HISTORIES, FIRST_SHAPES),
    # Recorded from c3c7f27's workflow code, which takes every patch: report-waits-to-parent
    # (the org shapes signal `step_state`), search-attributes, escalation-model-retry-cap,
    # escalation-model-failure-climbs, past-deadline-escalates-at-once.
    Generation("gen2", HISTORIES / "gen2", SHAPES),
)
CASES = [pytest.param(g, shape, id=f"{g.name}-{shape}")
         for g in GENERATIONS for shape in g.shapes]


def file_name(workflow_id: str) -> str:
    assert SEP not in workflow_id, workflow_id
    return workflow_id.replace("/", SEP) + ".json"


def workflow_id_of(path: Path) -> str:
    return path.stem.replace(SEP, "/")


def load(generation: Generation, shape: str) -> dict[str, WorkflowHistory]:
    """The shape's histories by file name; fails if the shape has none."""
    folder = generation.folder / shape
    files = sorted(folder.glob("*.json"))
    assert files, f"no recorded histories for shape {shape!r} in {folder}"
    return {f.name: WorkflowHistory.from_json(workflow_id_of(f), f.read_text()) for f in files}


def started_children(history: WorkflowHistory) -> Iterable[str]:
    for e in history.events:
        if e.HasField("start_child_workflow_execution_initiated_event_attributes"):
            yield e.start_child_workflow_execution_initiated_event_attributes.workflow_id


def workflow_type(history: WorkflowHistory) -> str:
    return history.events[0].workflow_execution_started_event_attributes.workflow_type.name


@pytest.mark.parametrize(("generation", "shape"), CASES)
def test_every_shape_holds_its_task_and_every_workflow_beneath_it(
    generation: Generation, shape: str
) -> None:
    histories = load(generation, shape)
    where = f"{generation.name}/{shape}"
    roots = [n for n, h in histories.items()
             if workflow_type(h) == "TaskWorkflow" and "/" not in h.workflow_id]
    assert roots, f"{where}: no top-level TaskWorkflow history"
    for name, h in histories.items():
        assert workflow_type(h) in {"TaskWorkflow", "SubtaskWorkflow"}, f"{where}/{name}"
        for child in started_children(h):
            assert file_name(child) in histories, f"{where}/{name} started {child}: no history"


@pytest.mark.parametrize("generation", GENERATIONS, ids=[g.name for g in GENERATIONS])
def test_every_recorded_folder_is_a_shape_the_generation_lists(generation: Generation) -> None:
    others = {g.folder for g in GENERATIONS}
    folders = {f.name for f in generation.folder.iterdir() if f.is_dir() and f not in others}
    assert folders == set(generation.shapes), f"{generation.name} in {generation.folder}"


async def _replay(histories: dict[str, WorkflowHistory], replayer: Replayer) -> list[str]:
    by_run = {h.run_id: name for name, h in histories.items()}

    async def each() -> AsyncIterator[WorkflowHistory]:
        for h in histories.values():
            yield h

    failures, replayed = [], 0
    async with replayer.workflow_replay_iterator(each()) as results:
        async for result in results:
            replayed += 1
            if result.replay_failure is not None:
                failures.append(f"{by_run[result.history.run_id]}: {result.replay_failure!r}")
    assert replayed == len(histories)
    return failures


@pytest.mark.parametrize("runner", [SandboxedWorkflowRunner, UnsandboxedWorkflowRunner],
                         ids=["sandboxed", "unsandboxed"])
@pytest.mark.parametrize(("generation", "shape"), CASES)
async def test_recorded_histories_replay(
    generation: Generation, shape: str, runner: type[WorkflowRunner]
) -> None:
    # SandboxedWorkflowRunner() is the Replayer's (and the worker's) default.
    replayer = Replayer(workflows=[TaskWorkflow, SubtaskWorkflow],
                        data_converter=pydantic_data_converter, workflow_runner=runner())
    failures = await _replay(load(generation, shape), replayer)
    assert not failures, f"{generation.name}/{shape}: " + "\n".join(failures)
