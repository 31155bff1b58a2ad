"""A burst of code steps: never more sandboxes at once than the limit; the rest wait in
Temporal as scheduled activities, not in the worker."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio
from temporalio.api.enums.v1 import PendingActivityState
from temporalio.client import Client

from models.io import TaskInput
from models.task import Status
from runtime.capacity import sandbox_slots
from runtime.settings import Settings
from tests.conftest import make_settings, temporal_address
from tests.helpers import outcome, plan_of, start_task
from worker import Deps, build_workers

pytestmark = pytest.mark.timeout(300)

LIMIT = 3
BURST = 100


class Counting:
    """A sandbox factory that counts the sessions open at once."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner
        self.open_now = 0
        self.most = 0
        self.opened = 0

    async def open(self, **kwargs: Any) -> Any:
        session = await self.inner.open(**kwargs)
        self.open_now += 1
        self.opened += 1
        self.most = max(self.most, self.open_now)
        close = session.close

        async def counted_close() -> None:
            if session in sessions:
                sessions.discard(session)
                self.open_now -= 1
            await close()

        sessions.add(session)
        session.close = counted_close
        return session

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)


sessions: set[Any] = set()


@pytest_asyncio.fixture
async def limited(client: Client, deps: Deps, database_url: str, fake_llm: Any,
                  tmp_path: Path) -> AsyncIterator[tuple[Settings, Counting]]:
    settings = make_settings(tmp_path, database_url, fake_llm.base_url,
                             temporal_address(client), max_sandboxes=LIMIT,
                             max_plan_steps=BURST)
    counting = Counting(deps.sandbox)
    mine = dataclasses.replace(deps, sandbox=counting)  # type: ignore[arg-type]
    async with contextlib.AsyncExitStack() as stack:
        for w in build_workers(client, settings, mine):
            await stack.enter_async_context(w)
        yield settings, counting


def test_the_limit_never_passes_what_memory_holds() -> None:
    assert sandbox_slots(None, memory_mb=1024, host_mb=8192, cpus=16) == 6
    assert sandbox_slots(None, memory_mb=256, host_mb=8192, cpus=2) == 8
    assert sandbox_slots(50, memory_mb=1024, host_mb=8192, cpus=2) == 6
    assert sandbox_slots(3, memory_mb=1024, host_mb=8192, cpus=2) == 3
    assert sandbox_slots(None, memory_mb=4096, host_mb=2048, cpus=2) == 1


async def test_a_burst_of_code_steps_waits_in_temporal_not_in_the_worker(
    client: Client, limited: tuple[Settings, Counting]
) -> None:
    settings, counting = limited
    steps = [{"id": f"c{i}", "type": "code", "code": "import time\ntime.sleep(0.3)\nprint(1)"}
             for i in range(BURST)]
    handle = await start_task(client, settings, TaskInput(plan=plan_of(*steps)))
    # While the burst runs, look at every step's pending activity now and then.
    most_waiting = 0
    for _ in range(40):
        states: list[int] = []
        for desc in await asyncio.gather(*(
                client.get_workflow_handle(f"{handle.id}/c{i}").describe()
                for i in range(BURST)), return_exceptions=True):
            if not isinstance(desc, BaseException):  # else not started: waiting too
                states += [a.state for a in desc.raw_description.pending_activities]
        started = states.count(PendingActivityState.PENDING_ACTIVITY_STATE_STARTED)
        assert started <= LIMIT, states
        most_waiting = max(most_waiting, states.count(
            PendingActivityState.PENDING_ACTIVITY_STATE_SCHEDULED))
        if most_waiting >= BURST // 2:
            break
        await asyncio.sleep(0.3)
    assert most_waiting >= BURST // 2  # the rest waited in Temporal
    result = await asyncio.wait_for(outcome(handle), timeout=280)
    assert result.status is Status.COMPLETED, result.error
    assert counting.opened == BURST
    assert counting.most == LIMIT  # reached, never passed
