"""What one board process holds: settings, the pool, the Temporal client, accounts, the
live hub, graph layouts."""

from __future__ import annotations

import asyncio
import logging
import time
from collections import OrderedDict
from dataclasses import dataclass, field
from datetime import timedelta
from urllib.parse import quote

import asyncpg
from jinja2 import Environment
from temporalio.client import Client
from temporalio.service import RPCError

from board import actions
from board.accounts import Accounts, SignInLimiter
from board.graph import Layouts
from board.live import Hub
from board.metrics import BoardMetrics
from board.render import make_env
from board.settings import BoardSettings
from client import TemporalUnreachable, connect
from runtime.settings import Settings

log = logging.getLogger(__name__)

SESSION_COOKIE = "beestown_board"
TEMPORAL_RETRY_S = 15.0  # after a failed connect, pages skip Temporal this long
PARTIAL_HEADER = "x-board-partial"


@dataclass
class Board:
    """Everything the pages share: settings, the pool, Temporal, the listener, caches."""

    settings: Settings
    board: BoardSettings
    pool: asyncpg.Pool
    hub: Hub
    secret: str
    accounts: Accounts = field(init=False)
    limiter: SignInLimiter = field(init=False)
    layouts: Layouts = field(default_factory=Layouts)
    env: Environment = field(default_factory=make_env)
    client: Client | None = None
    url: str = ""
    metrics: BoardMetrics = field(default_factory=BoardMetrics)
    _client_lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    _run_ids: OrderedDict[str, str] = field(default_factory=OrderedDict)
    _down_since: float | None = None

    def __post_init__(self) -> None:
        self.accounts = Accounts(self.pool)
        self.limiter = SignInLimiter(self.board.signin_attempts, self.board.signin_window_s)

    async def temporal(self) -> Client:
        """Return the Temporal client, connecting on first use (pages that only read the
        store work while Temporal is down)."""
        async with self._client_lock:
            if self.client is None:
                s = self.settings
                # While Temporal is down, pages do not each wait for a connect to time out.
                if self._down_since and time.monotonic() - self._down_since < TEMPORAL_RETRY_S:
                    raise actions.Refused(f"Temporal at {s.temporal_address} is unreachable")
                try:
                    self.client = await connect(s, timeout_s=10)
                except TemporalUnreachable as e:
                    self._down_since = time.monotonic()
                    raise actions.Refused(str(e)) from e
                self._down_since = None
            return self.client

    def ui_link(self, workflow_id: str, run_id: str | None) -> str:
        """The Temporal Web UI page of a workflow's history."""
        base = self.settings.temporal_ui_url.rstrip("/")
        ns = quote(self.settings.temporal_namespace, safe="")
        link = f"{base}/namespaces/{ns}/workflows/{quote(workflow_id, safe='')}"
        return f"{link}/{quote(run_id, safe='')}/history" if run_id else link

    async def run_id(self, workflow_id: str) -> str | None:
        """A subtask's run id (not stored), asked of Temporal once and kept; None when
        Temporal does not answer quickly."""
        if workflow_id in self._run_ids:
            return self._run_ids[workflow_id]
        async def describe() -> str:
            client = await self.temporal()
            desc = await client.get_workflow_handle(workflow_id).describe(
                rpc_timeout=timedelta(seconds=2))
            return desc.run_id

        try:  # a link without its run id beats a page waiting on Temporal
            run_id = await asyncio.wait_for(describe(), timeout=2.5)
        except (actions.Refused, RPCError, TimeoutError):
            return None
        self._run_ids[workflow_id] = run_id
        while len(self._run_ids) > 10_000:
            self._run_ids.popitem(last=False)
        return run_id


# -- identity ---------------------------------------------------------------------------------
