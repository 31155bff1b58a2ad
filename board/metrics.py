"""Prometheus metrics of the board (and of the town it shows) on their own port.

Off unless BEESTOWN_BOARD_METRICS_PORT is set. The town's figures (steps by status and
type, open escalations, tokens and cost by model) are read from PostgreSQL every
`REFRESH_S` by one task, never per scrape.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator, Callable

import asyncpg
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, start_http_server
from starlette.types import ASGIApp, Message, Scope

from board.middleware import ResponseStartHook

log = logging.getLogger(__name__)

REFRESH_S = 15.0  # a dashboard's usual scrape interval; the queries cost a few ms


class BoardMetrics:
    """The board's own registry (so tests can run several boards in one process)."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.requests = Counter("beestown_board_requests", "HTTP requests served",
                                ["route", "code"], registry=r)
        self.latency = Histogram("beestown_board_request_seconds", "time to the response's "
                                 "headers", ["route"], registry=r,
                                 buckets=(.005, .01, .025, .05, .1, .15, .25, .5, 1, 2.5))
        self.streams = Gauge("beestown_board_event_streams", "open live-update streams",
                             registry=r)
        self.notices = Counter("beestown_board_notices", "store changes heard", registry=r)
        self.steps = Gauge("beestown_steps", "subtasks by status and type",
                           ["status", "type"], registry=r)
        self.tasks = Gauge("beestown_tasks", "tasks by status", ["status"], registry=r)
        self.escalations = Gauge("beestown_escalations_open", "open escalations by reason",
                                 ["reason"], registry=r)
        self.tokens = Gauge("beestown_tokens", "tokens spent by model and kind",
                            ["model", "kind"], registry=r)
        self.cost = Gauge("beestown_cost_usd", "cost by model", ["model"], registry=r)
        self.queued = Gauge("beestown_assignments_queued", "steps waiting for an agent's slot",
                            registry=r)

    async def refresh(self, pool: asyncpg.Pool) -> None:
        """Read the town's figures from the store into the gauges."""
        for gauge, sql, labels in (
            (self.steps, "SELECT status, type, count(*) AS n FROM subtasks GROUP BY 1, 2",
             ("status", "type")),
            (self.tasks, "SELECT status, count(*) AS n FROM tasks GROUP BY 1", ("status",)),
            (self.escalations, "SELECT reason, count(*) AS n FROM escalations"
             " WHERE status = 'open' GROUP BY 1", ("reason",)),
        ):
            gauge.clear()
            for row in await pool.fetch(sql):
                gauge.labels(*(row[k] for k in labels)).set(row["n"])
        self.tokens.clear()
        self.cost.clear()
        for row in await pool.fetch(
                "SELECT model, sum(prompt_tokens) AS p, sum(completion_tokens) AS c,"
                " sum(cost_usd) AS usd FROM usage GROUP BY 1"):
            self.tokens.labels(row["model"], "prompt").set(row["p"])
            self.tokens.labels(row["model"], "completion").set(row["c"])
            self.cost.labels(row["model"]).set(row["usd"])
        self.queued.set(await pool.fetchval(
            "SELECT count(*) FROM assignments WHERE state = 'queued'"))

    @contextlib.asynccontextmanager
    async def serving(self, pool: asyncpg.Pool, *, host: str, port: int
                      ) -> AsyncIterator[int]:
        """Serve /metrics on (host, port) and keep the gauges fresh; yield the port."""
        server, thread = start_http_server(port, addr=host, registry=self.registry)

        async def loop() -> None:
            while True:
                try:
                    await self.refresh(pool)
                except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError) as e:
                    log.warning("metrics refresh failed: %s", e)
                await asyncio.sleep(REFRESH_S)

        task = asyncio.create_task(loop(), name="board-metrics")
        try:
            yield int(server.server_address[1])
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
            server.shutdown()
            thread.join(timeout=5)


class RequestMetrics(ResponseStartHook):
    """Counts and times each request by its route's path (not the raw URL)."""

    def __init__(self, app: ASGIApp, metrics: BoardMetrics) -> None:
        super().__init__(app)
        self.metrics = metrics

    def on_start(self, scope: Scope) -> Callable[[Message], None]:
        start = time.perf_counter()
        path = scope["path"]
        route = path if path.count("/") <= 1 and not path.startswith("/static") else "other"

        def observe(message: Message) -> None:
            self.metrics.latency.labels(route).observe(time.perf_counter() - start)
            self.metrics.requests.labels(route, str(message["status"])).inc()

        return observe
