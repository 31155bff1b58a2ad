"""One PostgreSQL LISTEN per board process, fanned out to every open page.

The store's writes to tasks, subtasks and escalations fire `board_notify()` (see
`board.db`); PostgreSQL delivers on commit. The hub keeps one dedicated connection
listening, and hands each notice to every subscriber's bounded queue. A subscriber that
falls behind loses notices, never blocks the others: each page re-reads the store anyway.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any

import asyncpg

from board.db import CHANNEL

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Change:
    """One row that changed: which table, task, subtask, and its new status."""

    table: str
    task: str
    subtask: str | None = None
    status: str | None = None

    def concerns(self, topic: str) -> bool:
        """Return True when a page following `topic` should refresh.

        Topics: `all`; `task:ID` (the task, its steps and the tasks nested in them);
        `subtask:ID`; `reviews` and `escalations` (any step or escalation).
        """
        if topic == "all":
            return True
        kind, _, key = topic.partition(":")
        if kind == "task":
            return self.task == key or self.task.startswith(key + "/")
        if kind == "subtask":
            return self.subtask == key or self.task.startswith(key + "/") or (
                self.table == "tasks" and self.task == key.rsplit("/", 1)[0])
        if kind in ("reviews", "escalations"):
            return self.table in ("subtasks", "escalations")
        return False


RESYNC = Change(table="*", task="*")  # the listener reconnected: notices may have been lost


class Hub:
    """Listens once on CHANNEL; every `subscribe()` gets its own queue of Changes."""

    def __init__(self, dsn: str, *, queue_size: int = 256,
                 on_notice: Callable[[], None] | None = None) -> None:
        self.on_notice = on_notice
        self.dsn = dsn
        self.queue_size = queue_size
        self._subscribers: set[asyncio.Queue[Change | None]] = set()
        self._conn: asyncpg.Connection | None = None
        self._task: asyncio.Task[None] | None = None
        self._ready = asyncio.Event()
        self._closing = False
        self.delivered = 0

    async def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="board-listener")
        await asyncio.wait_for(self._ready.wait(), timeout=20)

    async def close(self) -> None:
        self._closing = True
        for q in list(self._subscribers):
            with contextlib.suppress(asyncio.QueueFull):
                q.put_nowait(None)
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        if self._conn is not None and not self._conn.is_closed():
            await self._conn.close()

    @property
    def subscribers(self) -> int:
        return len(self._subscribers)

    async def _run(self) -> None:
        """Keep one listening connection; reconnect (and tell pages to resync) if it drops."""
        backoff = 0.5
        while not self._closing:
            try:
                lost = asyncio.Event()
                self._conn = await asyncpg.connect(self.dsn)
                self._conn.add_termination_listener(lambda _c, lost=lost: lost.set())
                await self._conn.add_listener(CHANNEL, self._on_notify)
                if self._ready.is_set():
                    self._publish(RESYNC)
                self._ready.set()
                backoff = 0.5
                await lost.wait()
            except asyncio.CancelledError:
                raise
            except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError) as e:
                log.warning("board listener lost PostgreSQL (%s); reconnecting", e)
            await asyncio.sleep(backoff)
            backoff = min(backoff * 2, 10.0)

    def _on_notify(self, _conn: Any, _pid: int, _channel: str, payload: object) -> None:
        try:
            data = json.loads(str(payload))
            change = Change(table=data["table"], task=data["task"], subtask=data.get("subtask"),
                            status=data.get("status"))
        except (ValueError, KeyError, TypeError):
            log.warning("ignoring a malformed notice: %.200s", payload)
            return
        if self.on_notice is not None:
            self.on_notice()
        self._publish(change)

    def _publish(self, change: Change) -> None:
        for q in self._subscribers:
            # A slow page loses notices: it re-reads everything on the next one it gets.
            with contextlib.suppress(asyncio.QueueFull):
                q.put_nowait(change)
        self.delivered += 1

    @contextlib.asynccontextmanager
    async def subscribe(self) -> AsyncIterator[asyncio.Queue[Change | None]]:
        """Yield a queue of Changes (None: the hub is closing) until the block exits."""
        q: asyncio.Queue[Change | None] = asyncio.Queue(self.queue_size)
        self._subscribers.add(q)
        try:
            yield q
        finally:
            self._subscribers.discard(q)
