"""How fast the board answers, against a plain SELECT of the same rows, in the same run.

    python bench/board.py [--tasks 10000] [--steps 200] [--runs 20]

One process: a scratch database (and dev server) from bench/servers.py, seeded with
`--tasks` tasks (3 steps and one usage row each) and one task of `--steps` steps (a layered
graph, mixed statuses); the board served by uvicorn on loopback, read by httpx. Prints,
as min / median / p95 in ms over `--runs`:
  * server time (the Server-Timing header) of the Tasks page (first page, a status filter,
    a text filter, a page deep down) and of the task page of the big plan (its layout
    cached, and right after a status change, which repaints without a new layout), beside
    a plain SELECT of the rows each shows;
  * the delay from a step's status write (commit) to its event on an open /events stream
    of that task, beside a bare LISTEN on its own connection; and to the re-rendered live
    block a page fetches on that event.
Goals (issue 12): pages under 150 ms, event under 1 s.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import re
import statistics
import sys
import time
import uuid
from collections.abc import Awaitable
from pathlib import Path
from typing import Any

import asyncpg
import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.servers import scratch_servers, timed_ms
from board.accounts import Accounts
from board.db import CHANNEL, migrate_board
from board.server import serve
from board.settings import BoardSettings
from runtime.settings import Settings

STATUSES = ["COMPLETED"] * 6 + ["FAILED", "RUNNING", "CANCELLED", "BLOCKED"]


async def seed(pool: asyncpg.Pool, *, tasks: int, steps: int) -> str:
    rows = [(f"bench-{i:06d}", f"bench task {i} about {['sales', 'mail', 'bees'][i % 3]}",
             STATUSES[i % len(STATUSES)], ["low", "medium", "high", "urgent"][i % 4],
             float(tasks - i)) for i in range(tasks)]
    await pool.executemany(
        "INSERT INTO tasks (id, title, status, priority, created_at, assignee)"
        " VALUES ($1, $2, $3, $4, now() - make_interval(secs => $5), 'ceo')", rows)
    await pool.executemany(
        "INSERT INTO subtasks (id, task_id, step_id, type, status)"
        " VALUES ($1, $2, $3, 'tool', 'COMPLETED')",
        [(f"{r[0]}/s{j}", r[0], f"s{j}") for r in rows for j in range(3)])
    await pool.executemany(
        "INSERT INTO usage (id, task_id, subtask_id, model, prompt_tokens, completion_tokens,"
        " cost_usd) VALUES ($1, $2, $3, 'gpt-4o-mini', 100, 20, 0.0001)",
        [(f"u-{r[0]}", r[0], f"{r[0]}/s0") for r in rows])
    big = "bench-big"
    await pool.execute("INSERT INTO tasks (id, title, status) VALUES ($1, 'big plan', 'RUNNING')",
                       big)
    width = 10
    sub_rows = []
    for i in range(steps):
        layer = i // width
        deps = [f"s{(layer - 1) * width + k}" for k in range(width)
                if layer and (k == i % width or k == (i + 1) % width)]
        status = "COMPLETED" if layer < steps // width // 2 else (
            "RUNNING" if layer == steps // width // 2 else "PENDING")
        sub_rows.append((f"{big}/s{i}", big, f"s{i}", f"step {i}", deps, status,
                         1.0 + (i % 7) if status == "COMPLETED" else None))
    await pool.executemany(
        "INSERT INTO subtasks (id, task_id, step_id, title, type, dependencies, status,"
        " actual_duration_s, assignee) VALUES ($1, $2, $3, $4, 'tool', $5, $6, $7, 'tools-eng')",
        sub_rows)
    await pool.execute("ANALYZE")
    return big


def stats(values: list[float]) -> str:
    values = sorted(values)
    p95 = values[min(len(values) - 1, int(len(values) * 0.95))]
    return f"{values[0]:7.1f} / {statistics.median(values):7.1f} / {p95:7.1f}"


async def page_ms(http: httpx.AsyncClient, path: str, runs: int) -> list[float]:
    out = []
    for _ in range(runs):
        r = await http.get(path)
        r.raise_for_status()
        m = re.search(r"dur=([\d.]+)", r.headers["server-timing"])
        assert m is not None
        out.append(float(m.group(1)))
    return out


async def main(args: argparse.Namespace) -> None:
    async with scratch_servers("board-bench") as scratch:
        settings = Settings(database_url=scratch.database_url,
                            temporal_address=scratch.temporal_address, state_dir=scratch.tmp)
        from runtime.db import create_pool

        pool = await create_pool(scratch.database_url)
        await migrate_board(pool)
        t0 = time.perf_counter()
        big = await seed(pool, tasks=args.tasks, steps=args.steps)
        print(f"seeded {args.tasks} tasks and a {args.steps}-step plan in "
              f"{time.perf_counter() - t0:.1f} s")
        await Accounts(pool).add("bench", "bench-password", ["ceo"], replace=True)
        urls: list[str] = []
        ready, stop = asyncio.Event(), asyncio.Event()
        server = asyncio.create_task(serve(
            settings, BoardSettings(secret_key="bench-" + uuid.uuid4().hex), host="127.0.0.1",
            port=0, ready=ready, stop=stop, on_url=urls.append))
        await ready.wait()
        async with httpx.AsyncClient(base_url=urls[0], timeout=60) as http:
            login = await http.get("/login")
            m = re.search(r'name="csrf" value="([^"]+)"', login.text)
            assert m is not None
            await http.post("/login", data={"name": "bench", "password": "bench-password",
                                            "csrf": m.group(1)})
            deep = await pool.fetchrow(
                "SELECT created_at, id FROM tasks ORDER BY created_at DESC, id DESC"
                " OFFSET $1 LIMIT 1", args.tasks // 2)
            assert deep is not None
            deep_q = f"/tasks?before={deep['created_at'].isoformat()}|{deep['id']}"
            pages: list[tuple[str, str, str, list[Any]]] = [
                ("tasks, first page", "/tasks",
                 "SELECT * FROM tasks WHERE parent_subtask IS NULL"
                 " ORDER BY created_at DESC, id DESC LIMIT 50", []),
                ("tasks, status=FAILED", "/tasks?status=FAILED",
                 "SELECT * FROM tasks WHERE status = 'FAILED'"
                 " ORDER BY created_at DESC, id DESC LIMIT 50", []),
                ("tasks, text 'bees'", "/tasks?q=bees",
                 "SELECT * FROM tasks WHERE title ILIKE '%bees%'"
                 " ORDER BY created_at DESC, id DESC LIMIT 50", []),
                (f"tasks, page at {args.tasks // 2}", deep_q.replace("+", "%2B"),
                 "SELECT * FROM tasks WHERE (created_at, id) < ($1, $2)"
                 " ORDER BY created_at DESC, id DESC LIMIT 50",
                 [deep["created_at"], deep["id"]]),
                (f"task page, {args.steps} steps", f"/task?id={big}",
                 "SELECT * FROM subtasks WHERE task_id = $1 ORDER BY created_at, id", [big]),
            ]
            print(f"\nserver time, ms (min / median / p95 of {args.runs}); plain SELECT of the "
                  "same rows beside it")
            print(f"{'page':32} {'board':>25}   {'plain SELECT':>25}")
            for name, path, sql, params in pages:
                await http.get(path)  # warm: the first layout of a plan runs dot
                board_ms = await page_ms(http, path, args.runs)
                def select(sql: str = sql, params: list[Any] = params) -> Awaitable[Any]:
                    return pool.fetch(sql, *params)

                select_ms = await timed_ms(select, args.runs)
                print(f"{name:32} {stats(board_ms):>25}   {stats(select_ms):>25}")
            # A status change repaints the cached layout; a new structure lays out again.
            repaint = []
            for i in range(args.runs):
                await pool.execute("UPDATE subtasks SET status = $2 WHERE id = $1",
                                   f"{big}/s{args.steps - 1}",
                                   "RUNNING" if i % 2 else "PENDING")
                repaint += await page_ms(http, f"/task?id={big}", 1)
            print(f"{'task page after a status change':32} {stats(repaint):>25}")
            relayout = []
            for i in range(min(args.runs, 5)):
                await pool.execute("UPDATE subtasks SET title = $2 WHERE id = $1",
                                   f"{big}/s0", f"renamed {i}")
                relayout += await page_ms(http, f"/task?id={big}", 1)
            print(f"{'task page, new layout (dot)':32} {stats(relayout):>25}")

            # Step completion -> event on an open page, beside a bare LISTEN.
            bare = await asyncpg.connect(scratch.database_url)
            got: asyncio.Queue[tuple[float, str]] = asyncio.Queue()
            await bare.add_listener(CHANNEL, lambda _c, _p, _ch, payload: got.put_nowait(
                (time.perf_counter(), str(payload))))
            event_ms, listen_ms, visible_ms = [], [], []
            async with http.stream("GET", f"/events?topic=task:{big}") as stream:
                lines = stream.aiter_lines()
                await anext(lines)
                await asyncio.sleep(0.2)
                for i in range(args.runs):
                    sub = f"{big}/s{(args.steps // 2) + i}"
                    while not got.empty():
                        got.get_nowait()
                    t0 = time.perf_counter()
                    await pool.execute(
                        "UPDATE subtasks SET status = 'COMPLETED', actual_duration_s = 1"
                        " WHERE id = $1", sub)
                    async for line in lines:
                        if line.startswith("data: ") and json.loads(line[6:])["subtask"] == sub:
                            break
                    t_event = time.perf_counter()
                    r = await http.get(f"/task?id={big}", headers={"X-Board-Partial": "1"})
                    assert f'data-step="s{(args.steps // 2) + i}" data-status="COMPLETED"' \
                        in r.text
                    t_visible = time.perf_counter()
                    while True:
                        at, payload = await got.get()
                        if sub in payload:
                            break
                    event_ms.append((t_event - t0) * 1000)
                    listen_ms.append((at - t0) * 1000)
                    visible_ms.append((t_visible - t0) * 1000)
            await bare.close()
            print(f"\ndelay from a step's status write to ..., ms (min / median / p95 of "
                  f"{args.runs})")
            print(f"{'its event on an open page':32} {stats(event_ms):>25}")
            print(f"{'  a bare LISTEN (the floor)':32} {stats(listen_ms):>25}")
            print(f"{'the refreshed live block':32} {stats(visible_ms):>25}")
        stop.set()
        await server
        await pool.close()


if __name__ == "__main__":
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--tasks", type=int, default=10_000)
    p.add_argument("--steps", type=int, default=200)
    p.add_argument("--runs", type=int, default=20)
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(main(p.parse_args()))
