"""An MCP server of our own for the tests: streamable HTTP on loopback, or stdio.

    python -m tests.mcp_http_server [--port N]   # prints "LISTENING <port>" when ready
    python -m tests.mcp_http_server --stdio [--delay S]   # S seconds dead before serving
    python -m tests.mcp_http_server --stdio --stuck       # never answers initialize

`McpHttpServer` runs it as a child process so a test can stop it and start it again on
the same port.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import mcp.types as mt
from mcp.server.mcpserver import MCPServer
from mcp.shared.exceptions import MCPError

ROOT = Path(__file__).resolve().parent.parent

server: MCPServer = MCPServer("beestown-test", log_level="WARNING")


@server.tool()
def add(a: int, b: int) -> int:
    """Return a + b."""
    return a + b


@server.tool()
def big(size: int) -> str:
    """Return a string of `size` characters."""
    return "".join(chr(ord("a") + i % 26) for i in range(size))


@server.tool()
def fail(message: str = "boom") -> str:
    """Always fail with `message`."""
    raise ValueError(message)


@server.tool()
def pid() -> int:
    """Return the server's process id."""
    return os.getpid()


@server.tool()
async def sleep(seconds: float) -> float:
    """Wait `seconds`, then return them."""
    await asyncio.sleep(seconds)
    return seconds


@server.tool()
def hello(name: str = "world") -> str:
    """Return a greeting."""
    return f"hello {name}"


@server.tool()
def crash_once(marker: str) -> str:
    """Die mid-call (the process exits) unless file `marker` exists; create it first."""
    path = Path(marker)
    if not path.exists():
        path.write_text(str(os.getpid()))
        os._exit(3)
    return f"served by {os.getpid()}"


@server.tool()
def fail_quietly(how: str) -> mt.CallToolResult:
    """Fail saying nothing: "result" (an error result with no text), "blank" (its text is
    blank) or "protocol" (a JSON-RPC error with an empty message)."""
    if how == "protocol":
        raise MCPError(-32603, "")
    content = [] if how == "result" else [mt.TextContent(type="text", text="  ")]
    return mt.CallToolResult(content=content, is_error=True)


@server.tool()
def env_names() -> list[str]:
    """Return the names of the server's environment variables."""
    return sorted(os.environ)


def _serve_http(port: int) -> None:
    import uvicorn

    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", port))
    sock.listen(64)
    app = server.streamable_http_app()
    config = uvicorn.Config(app, log_level="warning", lifespan="on")
    http = uvicorn.Server(config)
    # The socket already listens: connections wait in its backlog until serve() accepts.
    sys.stdout.write(f"LISTENING {sock.getsockname()[1]}\n")
    sys.stdout.flush()
    asyncio.run(http.serve(sockets=[sock]))


class McpHttpServer:
    """The test server as a child process on 127.0.0.1 (an ephemeral port, then kept)."""

    def __init__(self) -> None:
        self.port = 0
        self.proc: subprocess.Popen[str] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/mcp"

    def start(self) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "tests.mcp_http_server", "--port", str(self.port)],
            cwd=ROOT, stdout=subprocess.PIPE, text=True,
        )
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()
        if not line.startswith("LISTENING "):
            self.stop()
            raise RuntimeError(f"the MCP test server did not start: {line!r}")
        self.port = int(line.split()[1])

    def stop(self) -> None:
        if self.proc is None:
            return
        self.proc.kill()
        self.proc.wait(timeout=10)
        if self.proc.stdout:
            self.proc.stdout.close()
        self.proc = None


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--stdio", action="store_true")
    parser.add_argument("--delay", type=float, default=0.0,
                        help="seconds to sleep before serving (a slow start)")
    parser.add_argument("--stuck", action="store_true",
                        help="never answer, not even initialize")
    args = parser.parse_args()
    if args.stuck:
        while True:  # reads nothing, answers nothing; the client must give up and kill it
            time.sleep(3600)
    time.sleep(args.delay)
    if args.stdio:
        server.run("stdio")
    else:
        _serve_http(args.port)


if __name__ == "__main__":
    main()
