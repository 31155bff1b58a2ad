"""Replay recorded histories against today's workflow code: upgrades must not break running tasks.

The rule: a change to workflow code (workflows/) must replay every history under
tests/histories, sandboxed and unsandboxed, or be guarded with `workflow.patched(...)` so
that old histories take the old path. Never re-record to make this test pass after such a
change: the fixtures stand for tasks already running when a worker is upgraded.

Record a new shape, or re-record after a deliberate break (every old task gone), with the
suite's real servers:

    python -m tests.record_histories tests/histories             # every shape
    python -m tests.record_histories tests/histories -k diamond  # one shape

Each shape's folder holds the history of the TaskWorkflow and of every workflow beneath
it (SubtaskWorkflows, nested TaskWorkflows), one file per workflow id ("/" written "__").
The replay needs no server.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterable
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
SHAPES = [
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
]


def file_name(workflow_id: str) -> str:
    assert SEP not in workflow_id, workflow_id
    return workflow_id.replace("/", SEP) + ".json"


def workflow_id_of(path: Path) -> str:
    return path.stem.replace(SEP, "/")


def load(shape: str) -> dict[str, WorkflowHistory]:
    """The shape's histories by file name; fails if the shape has none."""
    files = sorted((HISTORIES / shape).glob("*.json"))
    assert files, f"no recorded histories for shape {shape!r} in {HISTORIES / shape}"
    return {f.name: WorkflowHistory.from_json(workflow_id_of(f), f.read_text()) for f in files}


def started_children(history: WorkflowHistory) -> Iterable[str]:
    for e in history.events:
        if e.HasField("start_child_workflow_execution_initiated_event_attributes"):
            yield e.start_child_workflow_execution_initiated_event_attributes.workflow_id


def workflow_type(history: WorkflowHistory) -> str:
    return history.events[0].workflow_execution_started_event_attributes.workflow_type.name


@pytest.mark.parametrize("shape", SHAPES)
def test_every_shape_holds_its_task_and_every_workflow_beneath_it(shape: str) -> None:
    histories = load(shape)
    roots = [n for n, h in histories.items()
             if workflow_type(h) == "TaskWorkflow" and "/" not in h.workflow_id]
    assert roots, f"{shape}: no top-level TaskWorkflow history"
    for name, h in histories.items():
        assert workflow_type(h) in {"TaskWorkflow", "SubtaskWorkflow"}, name
        for child in started_children(h):
            assert file_name(child) in histories, f"{shape}/{name} started {child}: no history"


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
@pytest.mark.parametrize("shape", SHAPES)
async def test_recorded_histories_replay(shape: str, runner: type[WorkflowRunner]) -> None:
    # SandboxedWorkflowRunner() is the Replayer's (and the worker's) default.
    replayer = Replayer(workflows=[TaskWorkflow, SubtaskWorkflow],
                        data_converter=pydantic_data_converter, workflow_runner=runner())
    failures = await _replay(load(shape), replayer)
    assert not failures, f"{shape}: " + "\n".join(failures)
