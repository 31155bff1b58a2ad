"""What every backend's session looks like to callers."""

from __future__ import annotations

from collections.abc import Callable
from types import TracebackType
from typing import Protocol, Self, runtime_checkable

from models.sandbox import CellResult

OutputCallback = Callable[[str, str], None]


@runtime_checkable
class CodeSession(Protocol):
    """One notebook-like session: variables, imports and files persist between cells."""

    async def run_cell(self, code: str, *, timeout_s: float | None = None,
                       on_output: OutputCallback | None = None) -> CellResult:
        """Run one cell and return what it produced.

        Args:
            code: Python source; the value of a last bare expression becomes a result.
            timeout_s: wall clock for this cell (default: the session's ``wall_s``).
            on_output: called as ``on_output("stdout" | "stderr", line)`` while the cell
                runs, one line at a time without its newline (very long lines arrive in
                pieces); not called once the stream's output limit is reached.

        Returns:
            The cell's result; the user's exception is ``CellResult.error`` and a wall
            clock overrun sets ``timed_out``, neither is raised.

        Raises:
            SandboxInfraError: the session is gone (closed, or lost before this cell).
        """
        ...

    async def write_file(self, path: str, data: bytes) -> None:
        """Write ``data`` to ``path``, relative to the work dir (parents are created)."""
        ...

    async def read_file(self, path: str) -> bytes:
        """Read a file relative to the work dir (FileNotFoundError when missing)."""
        ...

    async def list_files(self) -> list[str]:
        """Return relative paths of the regular files in the work dir, sorted."""
        ...

    async def close(self) -> None:
        """End the session and everything it started; idempotent."""
        ...

    async def __aenter__(self) -> Self: ...

    async def __aexit__(self, exc_type: type[BaseException] | None,
                        exc: BaseException | None, tb: TracebackType | None) -> None: ...
