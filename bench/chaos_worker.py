"""A BeesTown worker process for fault benches and tests: `python -m bench.chaos_worker`.

It is worker.py's worker (same settings, same shutdown), plus a journal of every unit of
work it starts and ends, written outside the sandbox so a repeat can be counted:

- the tool `work(key, seconds)`: sleeps, and journals `start key` / `end key`;
- a code cell carrying the comment `# chaos:KEY`: journaled around its run.

The journal is the file named by CHAOS_JOURNAL (one line per event, appended and flushed
at once, so a kill -9 loses nothing written before it).
"""

from __future__ import annotations

import asyncio
import logging
import os
import re
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from hosting.lifecycle import supervise
from runtime.settings import Settings
from runtime.tools.registry import ToolRegistry, builtin_tools
from worker import Deps, serve

_MARK = re.compile(r"#\s*chaos:(\S+)")


class Journal:
    """Append-only lines `<monotonic> <pid> <event> <key>`."""

    def __init__(self, path: str | None) -> None:
        self.fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644) if path else -1

    def write(self, event: str, key: str) -> None:
        if self.fd >= 0:
            os.write(self.fd, f"{time.time():.3f} {os.getpid()} {event} {key}\n".encode())


JOURNAL = Journal(os.environ.get("CHAOS_JOURNAL"))


def chaos_tools() -> ToolRegistry:
    registry = builtin_tools()

    @registry.tool
    async def work(key: str, seconds: float = 0.1) -> str:
        """Sleep `seconds`, journaled under `key`; return the key."""
        JOURNAL.write("start", key)
        await asyncio.sleep(seconds)
        JOURNAL.write("end", key)
        return key

    return registry


class _JournaledSession:
    def __init__(self, inner: Any) -> None:
        self._inner = inner

    async def run_cell(self, code: str, **kwargs: Any) -> Any:
        m = _MARK.search(code)
        if m:
            JOURNAL.write("start", m.group(1))
        result = await self._inner.run_cell(code, **kwargs)
        if m and result.error is None and not result.timed_out:
            JOURNAL.write("end", m.group(1))
        return result

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)


class _JournaledFactory:
    def __init__(self, inner: Any) -> None:
        self._inner = inner

    async def open(self, **kwargs: Any) -> Any:
        return _JournaledSession(await self._inner.open(**kwargs))

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)


def journaled(deps: Deps) -> None:
    if deps.sandbox is not None:
        deps.sandbox = _JournaledFactory(deps.sandbox)  # type: ignore[assignment]


def main() -> None:
    logging.basicConfig(level=logging.INFO,
                        format="%(asctime)s [%(process)d] %(levelname)s %(name)s: %(message)s")
    settings = Settings()

    def run() -> None:
        asyncio.run(serve(settings, registry=chaos_tools(), adjust=journaled))

    if settings.supervise:
        raise SystemExit(supervise(run))
    run()


if __name__ == "__main__":
    main()
