"""The workspace: files a task names, read from one configured root and nowhere else.

    ws = Workspace(Path("/srv/project"), limit=65_536)
    text = await ws.read("docs/brief.md")        # FileText(path, text, size, truncated)
    await ws.read("../etc/passwd")                # FileRefused: outside the workspace root
    register_file_tools(registry, ws)             # the model's `read_file` tool, same rules

A path is relative to the root, or absolute and inside it. Whatever it names is resolved
(every `..` and every symlink followed) before it is opened, and refused unless the
result is still inside the root: `../x`, `/etc/passwd` and a symlink pointing out are all
`FileRefused`, with a message that says which. A file bigger than `limit` bytes is cut
there, with a visible marker; bytes that are not UTF-8 are replaced, never fatal.
"""

from __future__ import annotations

import asyncio
import os
from dataclasses import dataclass
from pathlib import Path

from models.tools import InvalidToolsConfig
from runtime.tools.registry import ToolRegistry

__all__ = ["FileRefused", "FileText", "InvalidWorkspace", "Workspace", "register_file_tools"]


class InvalidWorkspace(InvalidToolsConfig):
    """The configured workspace root is not a directory (the `read_file` tool's
    configuration: the worker refuses to start, as for a bad tools file)."""


class FileRefused(ValueError):
    """A path the workspace will not read: outside the root, missing, or not a file."""


@dataclass(frozen=True)
class FileText:
    """A file's text as read: maybe only its first `limit` bytes."""

    path: str  # relative to the workspace root
    text: str
    size: int  # of the whole file, in bytes
    truncated: bool
    read: int = 0  # bytes read (and shown)

    def shown(self) -> str:
        """Return the text with a marker saying what was left out, if anything was."""
        if not self.truncated:
            return self.text
        return (f"{self.text}\n…[file {self.path} is {self.size} bytes; "
                f"only the first {self.read} are shown]…")


class Workspace:
    """Reads files under one root directory; refuses every path that leads outside it."""

    def __init__(self, root: Path, *, limit: int = 65_536) -> None:
        if not root.is_dir():
            raise InvalidWorkspace([f"BEESTOWN_WORKSPACE: {root} is not a directory"])
        self.root = root.resolve()
        self.limit = limit

    def resolve(self, path: str) -> Path:
        """Return the real path `path` names inside the root; raise FileRefused if none."""
        if not path or "\x00" in path:
            raise FileRefused(f"{path!r} is not a file path")
        given = Path(path)
        candidate = given if given.is_absolute() else self.root / given
        lexical = Path(os.path.normpath(candidate))
        real = candidate.resolve()
        if not lexical.is_relative_to(self.root):
            where = "an absolute path" if given.is_absolute() else "path traversal"
            raise FileRefused(f"{path!r} is outside the workspace root ({where} refused)")
        if not real.is_relative_to(self.root):
            raise FileRefused(f"{path!r} is a symlink leading outside the workspace root "
                              "(refused)")
        if not real.exists():
            raise FileRefused(f"{path!r} does not exist in the workspace")
        if not real.is_file():
            raise FileRefused(f"{path!r} is not a regular file")
        return real

    def read_sync(self, path: str) -> FileText:
        """Return the file's text (its first `limit` bytes); raise FileRefused."""
        real = self.resolve(path)
        try:
            # O_NOFOLLOW: a last component swapped for a symlink since resolve() is refused.
            fd = os.open(real, os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0))
        except OSError as e:
            raise FileRefused(f"{path!r} cannot be read: {e.strerror}") from e
        with os.fdopen(fd, "rb") as f:
            size = os.fstat(f.fileno()).st_size
            data = f.read(self.limit)
        return FileText(path=str(real.relative_to(self.root)),
                        text=data.decode("utf-8", errors="replace"),
                        size=max(size, len(data)), truncated=size > len(data),
                        read=len(data))

    async def read(self, path: str) -> FileText:
        """Return the file's text (its first `limit` bytes); raise FileRefused."""
        return await asyncio.to_thread(self.read_sync, path)


def register_file_tools(registry: ToolRegistry, workspace: Workspace) -> None:
    """Add the `read_file` tool, reading through `workspace`, to `registry`."""

    async def read_file(path: str) -> str:
        """Return a file of the workspace (a path relative to its root), cut to a size cap.

        Paths outside the workspace root are refused.
        """
        return (await workspace.read(path)).shown()

    registry.tool(read_file, name="read_file")
