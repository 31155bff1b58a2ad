"""An MCP stdio server that misbehaves on purpose, for bench/chaos.py.

    python -m bench.chaos_mcp --mode die|slow|hang --journal FILE [--state DIR]

Its one tool, `work(key, seconds)`, journals `start key` / `end key` like the chaos
worker's. The mode decides the fault, once per key (marked in --state so a new process
behaves):
  die   the process exits in the middle of the first call of each key (after `start`);
  slow  the process takes 4 s to start answering at all (every process);
  hang  the first call of each key never answers (the caller's timeout must end it).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import time
from pathlib import Path

from mcp.server.mcpserver import MCPServer

server: MCPServer = MCPServer("chaos", log_level="WARNING")
ARGS = argparse.Namespace()


def journal(event: str, key: str) -> None:
    fd = os.open(ARGS.journal, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, f"{time.time():.3f} {os.getpid()} {event} {key}\n".encode())
    finally:
        os.close(fd)


def first_time(key: str) -> bool:
    """True the first time any process of this server sees `key`."""
    mark = Path(ARGS.state) / (ARGS.mode + "-" + key.replace("/", "_"))
    try:
        fd = os.open(mark, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
    except FileExistsError:
        return False
    os.close(fd)
    return True


@server.tool()
async def work(key: str, seconds: float = 0.2) -> str:
    """Sleep `seconds`, journaled under `key`; return the key."""
    journal("start", key)
    if ARGS.mode == "die" and first_time(key):
        await asyncio.sleep(seconds / 2)
        os._exit(3)
    if ARGS.mode == "hang" and first_time(key):
        await asyncio.Event().wait()
    await asyncio.sleep(seconds)
    journal("end", key)
    return key


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--mode", choices=["die", "slow", "hang"], required=True)
    parser.add_argument("--journal", required=True)
    parser.add_argument("--state", required=True)
    parser.parse_args(namespace=ARGS)
    Path(ARGS.state).mkdir(parents=True, exist_ok=True)
    if ARGS.mode == "slow":
        time.sleep(4)
    server.run("stdio")


if __name__ == "__main__":
    main()
