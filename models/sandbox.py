"""What a code cell returns, whichever sandbox backend ran it."""

from __future__ import annotations

from pydantic import BaseModel, Field


class CellError(BaseModel):
    """An exception raised by the user's code: a result, never a reason to retry."""

    name: str
    value: str
    traceback: str = ""


class RichResult(BaseModel):
    """One displayable value, keyed by MIME type (text/plain, image/png as base64, ...)."""

    data: dict[str, str] = Field(default_factory=dict)

    @property
    def text(self) -> str | None:
        return self.data.get("text/plain")

    @property
    def png(self) -> str | None:
        return self.data.get("image/png")


class CellResult(BaseModel):
    """One cell's outcome; each stream bounded as ``runtime.sandbox.capped`` describes."""

    stdout: str = ""
    stderr: str = ""
    results: list[RichResult] = Field(default_factory=list)
    error: CellError | None = None
    timed_out: bool = False
    stdout_truncated: bool = False
    stderr_truncated: bool = False
    # Bytes cut out of the middle of `stdout` / `stderr` (a marker in the text says so).
    stdout_dropped: int = 0
    stderr_dropped: int = 0
    # The streams as written, up to SandboxLimits.raw_output_bytes each (empty: none kept).
    stdout_raw: bytes = Field(b"", repr=False)
    stderr_raw: bytes = Field(b"", repr=False)
    duration_ms: float = 0.0


class SandboxLimits(BaseModel):
    """Bounds of one code session; every field is enforced by the local backend."""

    wall_s: float = Field(60.0, gt=0, description="wall clock per cell")
    cpu_s: int = Field(120, gt=0, description="CPU seconds per process")
    memory_mb: int = Field(1024, gt=0, description="memory of the whole session")
    pids: int = Field(128, gt=0, description="processes of the whole session")
    file_mb: int = Field(256, gt=0, description="largest file the code may write")
    tmpfs_mb: int = Field(512, gt=0, description="size of /tmp and of the work dir")
    output_bytes: int = Field(
        1_000_000, gt=0, description="inline per stream per cell: head and tail past it")
    raw_output_bytes: int = Field(
        0, ge=0, description="kept as written per stream per cell, for an artifact (0: none)")
