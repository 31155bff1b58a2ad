"""The E2B backend: the same CodeSession over ``e2b_code_interpreter.AsyncSandbox``.

Error mapping (the SDK's exceptions → ours):

- ``AuthenticationException``, ``InvalidArgumentException``, 4xx at create (template not
  found, forbidden) → ``SandboxUnavailable`` (permanent).
- ``TimeoutException`` "Execution timed out" during ``run_code`` → ``timed_out=True`` in
  the result (the session is kept; E2B's kernel may still be busy with the cell, so the
  next cell can wait behind it).
- Other timeouts, ``RateLimitException``, ``ServiceBusyException``, unreachable / not
  running / not found sandboxes after create, 5xx, transport errors → ``SandboxInfraError``
  (retryable); the session is then treated as lost.

The sandbox gets no environment variables from the host: ``envs={}`` at create and none
per cell. It is created without internet access, like the local backend.

What the tests exercise (``tests/test_sandbox_e2b.py``, no network here): the adapter
against a stand-in for ``AsyncSandbox`` that returns the SDK's real ``Execution``,
``Logs``, ``Result``, ``ExecutionError``, ``OutputMessage`` and ``EntryInfo`` objects and
raises its real exception classes; result mapping, streaming, truncation, error
classification, files, no host env. Not exercised: the real HTTP/gRPC conversation with
E2B (create, envd, the Jupyter kernel), lifetimes, and whether a timed-out cell keeps the
kernel busy.
"""

from __future__ import annotations

import contextlib
import logging
import os
import time
from types import TracebackType
from typing import Any, Self

from models.sandbox import CellError, CellResult, RichResult, SandboxLimits
from runtime.sandbox.capped import CappedOutput
from runtime.sandbox.errors import SandboxError, SandboxInfraError, SandboxUnavailable
from runtime.sandbox.protocol import OutputCallback

logger = logging.getLogger(__name__)

WORKDIR = "/home/user/work"
# How long E2B keeps an idle sandbox alive if close() never comes (worker killed).
SESSION_LIFETIME_S = 900

_MIME = {
    "text": "text/plain", "html": "text/html", "markdown": "text/markdown",
    "svg": "image/svg+xml", "png": "image/png", "jpeg": "image/jpeg", "pdf": "application/pdf",
    "latex": "text/latex", "javascript": "application/javascript",
}


def _sdk() -> Any:
    import e2b_code_interpreter  # deferred: importing the SDK costs ~0.5 s

    return e2b_code_interpreter


def classify(e: BaseException, *, creating: bool = False) -> SandboxError:
    """Map an SDK (or transport) exception onto our tree."""
    sdk = _sdk()
    msg = f"e2b: {type(e).__name__}: {e}"
    if isinstance(e, sdk.AuthenticationException | sdk.InvalidArgumentException):
        return SandboxUnavailable(msg)
    retryable = (sdk.TimeoutException, sdk.RateLimitException, sdk.ServiceBusyException,
                 sdk.SandboxUnreachableException, sdk.SandboxNotRunningException,
                 sdk.GuestUnresponsiveException)
    if isinstance(e, retryable):
        return SandboxInfraError(msg)
    if isinstance(e, sdk.NotFoundException | sdk.SandboxNotFoundException):
        # At create it is the template that is missing; later, our sandbox vanished.
        return SandboxUnavailable(msg) if creating else SandboxInfraError(msg)
    if isinstance(e, sdk.SandboxException):
        status = getattr(e, "status_code", None)
        if creating and status is not None and 400 <= status < 500:
            return SandboxUnavailable(msg)
        return SandboxInfraError(msg)
    return SandboxInfraError(msg)  # httpx transport errors, OSError


class _Capped:
    def __init__(self, name: str, limit: int, on_output: OutputCallback | None) -> None:
        self.name = name
        self.limit = limit
        self.on_output = on_output
        self.streamed = 0

    def __call__(self, message: Any) -> None:
        if self.on_output is None or self.streamed >= self.limit:
            return
        line = str(message.line)
        self.streamed += len(line.encode())
        try:
            self.on_output(self.name, line[:-1] if line.endswith("\n") else line)
        except Exception:
            logger.exception("on_output callback failed; no more output goes to it")
            self.on_output = None

    def join(self, parts: list[str], *, keep: int) -> CappedOutput:
        out = CappedOutput(self.name, limit=self.limit, keep=keep)
        for part in parts:
            out.add(part.encode("utf-8", errors="surrogateescape"))
        return out


class E2BSession:
    """A notebook session in an E2B sandbox; create with :meth:`start`."""

    def __init__(self, sandbox: Any, limits: SandboxLimits) -> None:
        self._sbx = sandbox
        self.limits = limits
        self._closed = False
        self._lost: str | None = None

    @classmethod
    async def start(cls, *, api_key: str, limits: SandboxLimits,
                    sandbox_cls: Any = None, template: str | None = None) -> E2BSession:
        """Create a sandbox and make the work dir its cwd.

        Args:
            api_key: the E2B key (never read from the environment here).
            limits: wall clock and output caps apply; E2B enforces its own resources.
            sandbox_cls: the ``AsyncSandbox`` class (tests pass a stand-in).
            template: E2B template name (default: the SDK's code-interpreter one).
        """
        sandbox_cls = sandbox_cls or _sdk().AsyncSandbox
        try:
            sbx = await sandbox_cls.create(
                template=template, api_key=api_key, timeout=SESSION_LIFETIME_S,
                envs={}, allow_internet_access=False)
        except Exception as e:
            raise classify(e, creating=True) from e
        session = cls(sbx, limits)
        try:
            setup = await sbx.run_code(
                f"import os\nos.makedirs({WORKDIR!r}, exist_ok=True)\nos.chdir({WORKDIR!r})",
                language="python", timeout=30)
        except Exception as e:
            await session.close()
            raise classify(e) from e
        if setup.error is not None:
            await session.close()
            raise SandboxUnavailable(f"e2b sandbox setup failed: {setup.error.value}")
        return session

    def _check_usable(self) -> None:
        if self._closed:
            raise SandboxInfraError("the sandbox session is closed")
        if self._lost is not None:
            raise SandboxInfraError(f"the sandbox session was lost: {self._lost}")

    async def _lose(self, e: BaseException) -> SandboxError:
        err = classify(e)
        if isinstance(err, SandboxInfraError):
            self._lost = str(err)
        return err

    async def run_cell(self, code: str, *, timeout_s: float | None = None,
                       on_output: OutputCallback | None = None) -> CellResult:
        """Run one cell (see :class:`~runtime.sandbox.protocol.CodeSession`)."""
        self._check_usable()
        timeout = timeout_s or self.limits.wall_s
        out = _Capped("stdout", self.limits.output_bytes, on_output)
        err = _Capped("stderr", self.limits.output_bytes, on_output)
        started = time.perf_counter()
        try:
            execution = await self._sbx.run_code(
                code, language="python", on_stdout=out, on_stderr=err, timeout=timeout)
        except Exception as e:
            sdk = _sdk()
            if isinstance(e, sdk.TimeoutException) and "execution timed out" in str(e).lower():
                return CellResult(
                    timed_out=True, duration_ms=(time.perf_counter() - started) * 1000,
                    error=CellError(name="CellTimeout",
                                    value=f"the cell ran past its {timeout:g} s wall clock"))
            raise await self._lose(e) from e
        keep = self.limits.raw_output_bytes
        stdout = out.join(list(execution.logs.stdout), keep=keep)
        stderr = err.join(list(execution.logs.stderr), keep=keep)
        error = None
        if execution.error is not None:
            error = CellError(name=str(execution.error.name), value=str(execution.error.value),
                              traceback=str(execution.error.traceback or ""))
        return CellResult(
            stdout=stdout.text(), stderr=stderr.text(), stdout_truncated=stdout.truncated,
            stderr_truncated=stderr.truncated, stdout_dropped=stdout.dropped,
            stderr_dropped=stderr.dropped, stdout_raw=stdout.raw(), stderr_raw=stderr.raw(),
            error=error,
            results=[self._rich(r) for r in execution.results],
            duration_ms=(time.perf_counter() - started) * 1000)

    @staticmethod
    def _rich(result: Any) -> RichResult:
        data: dict[str, str] = {}
        for attr, mime in _MIME.items():
            value = getattr(result, attr, None)
            if isinstance(value, str):
                data[mime] = value
        if getattr(result, "json", None) is not None:
            import json

            data["application/json"] = json.dumps(result.json)
        return RichResult(data=data)

    @staticmethod
    def _path(path: str) -> str:
        norm = os.path.normpath(path)
        if os.path.isabs(norm) or norm in {".", ".."} or norm.startswith("../"):
            raise ValueError(f"{path!r} is not a path inside the work dir")
        return f"{WORKDIR}/{norm}"

    async def write_file(self, path: str, data: bytes) -> None:
        """Write a file relative to the work dir."""
        target = self._path(path)
        self._check_usable()
        try:
            await self._sbx.files.write(target, data)
        except Exception as e:
            raise await self._lose(e) from e

    async def read_file(self, path: str) -> bytes:
        """Read a file relative to the work dir (FileNotFoundError when missing)."""
        target = self._path(path)
        self._check_usable()
        try:
            data = await self._sbx.files.read(target, format="bytes")
        except Exception as e:
            if isinstance(e, _sdk().FileNotFoundException):
                raise FileNotFoundError(path) from e
            raise await self._lose(e) from e
        return bytes(data)

    async def list_files(self) -> list[str]:
        """Relative paths of the regular files under the work dir."""
        self._check_usable()
        sdk = _sdk()
        try:
            entries = await self._sbx.files.list(WORKDIR, depth=64)
        except Exception as e:
            raise await self._lose(e) from e
        prefix = WORKDIR + "/"
        return sorted(str(e.path).removeprefix(prefix) for e in entries
                      if e.type == sdk.FileType.FILE)

    async def close(self) -> None:
        """Kill the E2B sandbox; idempotent, and quiet when it is already gone."""
        if self._closed:
            return
        self._closed = True
        with contextlib.suppress(Exception):
            await self._sbx.kill()

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(self, exc_type: type[BaseException] | None,
                        exc: BaseException | None, tb: TracebackType | None) -> None:
        await self.close()
