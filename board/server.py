"""Open the board's dependencies and serve it with uvicorn."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
from collections.abc import AsyncIterator, Callable

import uvicorn

from board.app import Board, build_app
from board.db import migrate_board, session_secret
from board.errors import BoardError
from board.live import Hub
from board.metrics import BoardMetrics
from board.settings import BoardSettings, is_loopback
from runtime.db import create_pool, resolve_dsn
from runtime.settings import Settings

log = logging.getLogger(__name__)


def check_bind(host: str, *, accounts: int, board: BoardSettings) -> None:
    """Refuse to listen beyond this machine while nobody could sign in."""
    if not is_loopback(host) and accounts == 0:
        raise BoardError(
            f"refusing to listen on {host}: no accounts exist, so nobody could sign in and "
            "the board would be open to the network. Create one first: "
            "beestown user add NAME --acts-for AGENT,...")


@contextlib.asynccontextmanager
async def open_board(settings: Settings, board: BoardSettings, *, host: str | None = None
                     ) -> AsyncIterator[Board]:
    """Yield a ready Board (pool, schema, listener); `host` is checked against accounts."""
    s = settings
    dsn = await resolve_dsn(s.database_url.get_secret_value() if s.database_url else None,
                            s.state_dir)
    pool = await create_pool(dsn, max_size=10)
    hub: Hub | None = None
    try:
        await migrate_board(pool)
        accounts = int(await pool.fetchval("SELECT count(*) FROM board_people WHERE active"))
        check_bind(host or board.host, accounts=accounts, board=board)
        secret = (board.secret_key.get_secret_value() if board.secret_key
                  else await session_secret(pool))
        metrics = BoardMetrics()
        hub = Hub(dsn, on_notice=metrics.notices.inc)
        await hub.start()
        state = Board(settings=settings, board=board, pool=pool, hub=hub, secret=secret,
                      metrics=metrics)
        async with contextlib.AsyncExitStack() as stack:
            if board.metrics_port:
                port = await stack.enter_async_context(metrics.serving(
                    pool, host=host or board.host, port=board.metrics_port))
                log.info("board metrics on %s:%d/metrics", host or board.host, port)
            yield state
    finally:
        if hub is not None:
            await hub.close()
        await pool.close()


def bind(host: str, port: int) -> socket.socket:
    """Return a listening socket on (host, port); port 0 picks a free one."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host.strip("[]"), port))
    sock.listen(128)
    sock.setblocking(False)
    return sock


async def serve(settings: Settings, board: BoardSettings, *, host: str | None = None,
                port: int | None = None, ready: asyncio.Event | None = None,
                stop: asyncio.Event | None = None,
                on_url: Callable[[str], None] | None = None) -> None:
    """Run the board until `stop` is set (or the process is interrupted)."""
    host = host or board.host
    port = board.port if port is None else port
    async with open_board(settings, board, host=host) as state:
        sock = bind(host, port)
        app = build_app(state)
        config = uvicorn.Config(app, lifespan="off", log_level="warning",
                                timeout_graceful_shutdown=2, proxy_headers=False)
        server = uvicorn.Server(config)
        actual = sock.getsockname()[1]
        state.url = f"http://{host if ':' not in host else f'[{host}]'}:{actual}"
        if on_url is not None:
            on_url(state.url)
        log.info("board listening on %s", state.url)
        runner = asyncio.create_task(server.serve(sockets=[sock]))
        waiter = asyncio.create_task(stop.wait()) if stop else None
        try:
            # uvicorn offers no "started" event to wait on.
            while not server.started and not runner.done():  # noqa: ASYNC110
                await asyncio.sleep(0.02)
            if ready is not None:
                ready.set()
            await asyncio.wait([t for t in (runner, waiter) if t is not None],
                               return_when=asyncio.FIRST_COMPLETED)
        finally:
            server.should_exit = True
            await state.hub.close()  # ends open event streams so shutdown is quick
            await runner
            if waiter is not None:
                waiter.cancel()
            sock.close()
