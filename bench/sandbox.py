"""Sandbox latency against plain ``python3 -c pass``, measured in the same run.

Run: ``python -m bench.sandbox [--runs N]``. Prints min and median ms and the ratio of
each to the baseline's. Not part of the test suite.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import subprocess
import time

from bench.servers import timed_ms
from runtime.sandbox import SandboxFactory

PLAIN = ["/usr/bin/python3", "-c", "pass"]


async def main(runs: int) -> None:
    factory = SandboxFactory(backend="local")
    started = time.perf_counter()
    await factory.self_test()
    self_test_ms = (time.perf_counter() - started) * 1000

    async def plain() -> None:
        await asyncio.to_thread(subprocess.run, PLAIN, check=True)

    opened = []

    async def cold() -> None:
        opened.append(await factory.open())

    async def cold_first_cell() -> None:
        async with await factory.open() as s:
            await s.run_cell("1")

    session = await factory.open()

    async def warm_cell() -> None:
        await session.run_cell("x = 1\nx + 1")

    async def notebook() -> None:
        async with await factory.open() as s:
            for i in range(20):
                await s.run_cell(f"v{i} = {i} * 2\nprint(v{i})\nv{i}")

    rows = [
        ("python3 -c pass (baseline)", await timed_ms(plain, runs)),
        ("cold session start (open)", await timed_ms(cold, runs)),
        ("close", await timed_ms(lambda: opened.pop().close(), runs)),
        ("open + first cell + close", await timed_ms(cold_first_cell, runs)),
        ("warm cell round trip", await timed_ms(warm_cell, runs * 10)),
        ("20-cell notebook session", await timed_ms(notebook, max(3, runs // 3))),
    ]
    await session.close()
    base_min, base_med = min(rows[0][1]), statistics.median(rows[0][1])
    print(f"self-test: {self_test_ms:.0f} ms; {factory.report.get('session limits')}")
    print(f"{'measure':34} {'min ms':>8} {'median':>8} {'x min':>7} {'x median':>8}")
    for name, values in rows:
        lo, med = min(values), statistics.median(values)
        print(f"{name:34} {lo:8.2f} {med:8.2f} {lo / base_min:7.2f} {med / base_med:8.2f}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--runs", type=int, default=30)
    asyncio.run(main(parser.parse_args().runs))
