"""The local backend: a warm Python interpreter inside bubblewrap, one per session.

How a session is confined (uid, cgroup, rlimits, bubblewrap) is ``isolation.py``; how
its output streams are read and cut into cells is ``streams.py``. Inside runs
``runner.py`` (see its docstring for the protocol).
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import logging
import os
import secrets
import signal
import time
from types import TracebackType
from typing import Any, Self

from models.sandbox import CellError, CellResult, RichResult, SandboxLimits
from runtime.sandbox.cgroups import SessionCgroup
from runtime.sandbox.errors import SandboxError, SandboxInfraError, SandboxUnavailable
from runtime.sandbox.isolation import (
    HostPlan,
    UidLease,
    bwrap_argv,
    children_of,
    classify_start_failure,
    kill_uid,
    make_preexec,
    processes_of_uid,
    rlimits_for,
)
from runtime.sandbox.protocol import OutputCallback
from runtime.sandbox.streams import CellStream, StreamPump

logger = logging.getLogger(__name__)

__all__ = ["HostPlan", "LocalSession", "bwrap_argv", "classify_start_failure"]

_MAX_FRAME = 64 * 1024 * 1024  # a response line; bigger means the session broke protocol
_FILE_CHUNK = 4 * 1024 * 1024
_START_TIMEOUT_S = 15.0


class LocalSession:
    """A notebook session in bubblewrap; create with :meth:`start`."""

    def __init__(self, plan: HostPlan, limits: SandboxLimits) -> None:
        self.plan = plan
        self.limits = limits
        self._lock = asyncio.Lock()
        self._proc: asyncio.subprocess.Process | None = None
        self._responses: asyncio.StreamReader | None = None
        self._resp_transport: asyncio.ReadTransport | None = None
        self._pumps: dict[str, StreamPump] = {}
        self._cgroup: SessionCgroup | None = None
        self._lease: UidLease | None = None
        self._closed = False
        self._lost: str | None = None  # why the session can no longer run cells
        self._oom_baseline = 0
        self.uid = os.getuid()
        self.python_version = ""

    @classmethod
    async def start(cls, plan: HostPlan, limits: SandboxLimits) -> LocalSession:
        """Start a session and wait until its interpreter is ready.

        Raises:
            SandboxUnavailable: bwrap or the interpreter cannot start on this host.
            SandboxInfraError: something transient went wrong.
        """
        session = cls(plan, limits)
        try:
            await session._start()
        except BaseException:
            await session.close()
            raise
        return session

    async def _start(self) -> None:
        plan, limits = self.plan, self.limits
        uid: int | None = None
        if plan.per_session_uid:
            self._lease = await asyncio.to_thread(UidLease.acquire)
            uid = self.uid = self._lease.uid
        if plan.cgroups is not None:
            name = f"uid-{uid}" if uid is not None else f"pid-{os.getpid()}-{secrets.token_hex(4)}"
            self._cgroup = await asyncio.to_thread(
                SessionCgroup.create, plan.cgroups, name,
                memory_mb=limits.memory_mb, pids=limits.pids)
        elif uid is not None:
            # No cgroup to sweep: a crashed earlier holder of this uid may have left
            # processes behind.
            await asyncio.to_thread(kill_uid, uid)
        # RLIMIT_NPROC counts every process of the uid: the worker's own too when shared.
        shared = 0 if uid is not None else len(processes_of_uid(self.uid))
        nproc = shared + limits.pids
        preexec = make_preexec(
            rlimits=rlimits_for(limits, has_cgroup=self._cgroup is not None, nproc=nproc),
            cgroup=self._cgroup, uid=uid)
        resp_r, resp_w = os.pipe()
        try:
            self._proc = await asyncio.create_subprocess_exec(
                *bwrap_argv(plan, limits), str(resp_w),
                stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.PIPE, pass_fds=(resp_w,),
                env={"PATH": "/usr/bin:/bin"}, cwd="/", start_new_session=True,
                preexec_fn=preexec,
                limit=1 << 16,
            )
        except OSError as e:
            os.close(resp_r)
            raise SandboxUnavailable(f"cannot run {plan.bwrap}: {e}") from e
        finally:
            os.close(resp_w)
        loop = asyncio.get_running_loop()
        self._responses = asyncio.StreamReader(limit=_MAX_FRAME)
        transport, _ = await loop.connect_read_pipe(
            lambda: asyncio.StreamReaderProtocol(self._responses),  # type: ignore[arg-type]
            os.fdopen(resp_r, "rb", buffering=0))
        self._resp_transport = transport
        assert self._proc.stdout is not None
        assert self._proc.stderr is not None
        self._pumps = {"stdout": StreamPump("stdout", self._proc.stdout),
                       "stderr": StreamPump("stderr", self._proc.stderr)}
        try:
            ready = await asyncio.wait_for(self._recv(None), _START_TIMEOUT_S)
        except (TimeoutError, SandboxInfraError) as e:
            rc = await self._wait_exit(1.0)
            await asyncio.sleep(0)  # let the stderr pump take bwrap's last words
            stray = bytes(self._pumps["stderr"].stray).decode(errors="replace")
            raise classify_start_failure(stray or str(e), rc) from e
        self.python_version = str(ready.get("python", ""))
        if self._cgroup is not None:
            self._oom_baseline = self._cgroup.oom_kills()

    async def _wait_exit(self, seconds: float) -> int | None:
        assert self._proc is not None
        with contextlib.suppress(TimeoutError):
            return await asyncio.wait_for(self._proc.wait(), seconds)
        return None

    async def _send(self, msg: dict[str, Any]) -> None:
        assert self._proc is not None
        assert self._proc.stdin is not None
        try:
            self._proc.stdin.write(json.dumps(msg).encode() + b"\n")
            await self._proc.stdin.drain()
        except (ConnectionError, RuntimeError) as e:
            raise SandboxInfraError(f"sandbox stopped reading requests: {e}") from e

    async def _recv(self, want_id: str | None) -> dict[str, Any]:
        """Next response with ``want_id`` (None: the ready message)."""
        assert self._responses is not None
        while True:
            try:
                line = await self._responses.readline()
            except (ValueError, asyncio.LimitOverrunError) as e:
                raise SandboxInfraError("sandbox sent an oversized protocol frame") from e
            if not line:
                raise SandboxInfraError("sandbox interpreter exited")
            try:
                msg = json.loads(line)
            except ValueError as e:
                raise SandboxInfraError("sandbox sent a malformed protocol frame") from e
            if not isinstance(msg, dict):
                raise SandboxInfraError("sandbox sent a malformed protocol frame")
            if want_id is None and msg.get("op") == "ready":
                return msg
            if want_id is not None and msg.get("id") == want_id:
                return msg
            # Only the user's own code could have written this: it cannot affect others.
            logger.debug("ignoring unexpected sandbox frame %.200r", line)

    def _check_usable(self) -> None:
        if self._closed:
            raise SandboxInfraError("the sandbox session is closed")
        if self._lost is not None:
            raise SandboxInfraError(f"the sandbox session was lost: {self._lost}")

    async def _request(self, msg: dict[str, Any]) -> dict[str, Any]:
        """Send a non-cell request and return its reply (file operations)."""
        self._check_usable()
        msg["id"] = secrets.token_hex(8)
        try:
            await self._send(msg)
            reply = await asyncio.wait_for(self._recv(msg["id"]), 60.0)
        except (SandboxInfraError, TimeoutError) as e:
            await self._lose(f"file operation failed: {e}")
            raise SandboxInfraError(f"sandbox lost during {msg['op']}: {e}") from e
        if not reply.get("ok"):
            error = str(reply.get("error", "unknown error"))
            if error.startswith("FileNotFoundError"):
                raise FileNotFoundError(error)
            if error.startswith(("IsADirectoryError", "NotADirectoryError")):
                raise IsADirectoryError(error)
            raise SandboxError(f"sandbox {msg['op']} failed: {error}")
        return reply

    async def _lose(self, reason: str) -> None:
        """Kill everything of the session; later calls raise SandboxInfraError."""
        if self._lost is None:
            self._lost = reason
        if self._proc is not None and self._proc.returncode is None:
            # Kill the pid namespace's init (bwrap's child) first: the kernel then kills
            # every process in the namespace, and the outer bwrap reaps its child before
            # exiting. Killing the outer one first would leave the inner one a zombie
            # for the host's init to reap.
            for child in children_of(self._proc.pid):
                with contextlib.suppress(ProcessLookupError):
                    os.kill(child, signal.SIGKILL)
            if await self._wait_exit(1.0) is None:
                with contextlib.suppress(ProcessLookupError):
                    self._proc.kill()
        if self._cgroup is not None:
            await asyncio.to_thread(self._cgroup.kill_all)
        if self._proc is not None:
            await self._wait_exit(5.0)

    def _death_cause(self) -> CellError:
        rc = self._proc.returncode if self._proc is not None else None
        if self._cgroup is not None and self._cgroup.oom_kills() > self._oom_baseline:
            return CellError(name="MemoryError", value=(
                f"the session went over its memory limit of {self.limits.memory_mb} MiB "
                "and the interpreter was killed; the session is lost"))
        # bwrap reports the sandboxed command's death by signal as 128 + signal.
        if rc is not None and rc - 128 == signal.SIGXCPU:
            return CellError(name="CPUTimeExceeded", value=(
                f"the interpreter used its {self.limits.cpu_s} s of CPU time; "
                "the session is lost"))
        return CellError(name="SandboxDied", value=(
            f"the interpreter exited while running the cell (status {rc}); "
            "the session is lost"))

    async def run_cell(self, code: str, *, timeout_s: float | None = None,
                       on_output: OutputCallback | None = None) -> CellResult:
        """Run one cell (see :class:`~runtime.sandbox.protocol.CodeSession`)."""
        async with self._lock:
            self._check_usable()
            return await self._run_cell(code, timeout_s or self.limits.wall_s, on_output)

    async def _run_cell(self, code: str, timeout_s: float,
                        on_output: OutputCallback | None) -> CellResult:
        marker = f"\x00\x1b[beestown-end-{secrets.token_hex(16)}]\x00".encode()
        cells = {name: CellStream(name, marker, self.limits.output_bytes, on_output,
                                  keep=self.limits.raw_output_bytes)
                 for name in self._pumps}
        for name, pump in self._pumps.items():
            pump.begin(cells[name])
        req_id = secrets.token_hex(8)
        started = time.perf_counter()
        timed_out = False
        error: CellError | None = None
        results: list[RichResult] = []
        # The runner interrupts the cell itself (SIGALRM) at timeout_s; this grace lets
        # it report. Past it the cell ignores signals (or is stuck in C): kill.
        hard_deadline = timeout_s + 1.0 + 0.1 * timeout_s
        try:
            await self._send({"op": "run", "id": req_id, "code": code, "timeout": timeout_s,
                              "marker": marker.decode(), "result_limit": _MAX_FRAME // 8})
            reply = await asyncio.wait_for(self._recv(req_id), hard_deadline)
        except TimeoutError:
            timed_out = True
            error = CellError(name="CellTimeout", value=(
                f"the cell ran past its {timeout_s:g} s wall clock limit and did not stop "
                "when interrupted; the session was killed"))
            await self._lose("killed after a cell timeout")
        except SandboxInfraError:
            await self._wait_exit(1.0)
            error = self._death_cause()
            await self._lose(error.value)
        else:
            if not reply.get("ok"):
                error = CellError(name="SandboxError", value=str(reply.get("error")))
            else:
                try:
                    results = [RichResult(data=d) for d in reply.get("results") or []]
                    if reply.get("error"):
                        error = CellError.model_validate(reply["error"])
                except ValueError as e:
                    error = CellError(name="SandboxError", value=f"malformed reply: {e}")
                timed_out = bool(reply.get("timed_out"))
            # The markers were written before the reply: they are in the pipes already,
            # unless the user closed fd 1 or 2.
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(
                    asyncio.gather(*(c.done.wait() for c in cells.values())), 1.0)
        for pump in self._pumps.values():
            if pump.cell is not None:
                pump.end()
        out, err = cells["stdout"].output, cells["stderr"].output
        return CellResult(
            stdout=out.text(), stderr=err.text(),
            stdout_truncated=out.truncated, stderr_truncated=err.truncated,
            stdout_dropped=out.dropped, stderr_dropped=err.dropped,
            stdout_raw=out.raw(), stderr_raw=err.raw(),
            results=results, error=error, timed_out=timed_out,
            duration_ms=(time.perf_counter() - started) * 1000)

    @staticmethod
    def _relative(path: str) -> str:
        norm = os.path.normpath(path)
        if os.path.isabs(norm) or norm == ".." or norm.startswith("../") or norm == ".":
            raise ValueError(f"{path!r} is not a path inside the work dir")
        return norm

    async def write_file(self, path: str, data: bytes) -> None:
        """Write a file in the work dir (sent in chunks; bounded by the tmpfs size)."""
        rel = self._relative(path)
        async with self._lock:
            first = True
            for start in range(0, max(len(data), 1), _FILE_CHUNK):
                chunk = data[start:start + _FILE_CHUNK]
                await self._request({"op": "write", "path": rel, "append": not first,
                                     "data": base64.b64encode(chunk).decode()})
                first = False

    async def read_file(self, path: str) -> bytes:
        """Read a file of the work dir (at most the tmpfs size)."""
        rel = self._relative(path)
        out = bytearray()
        async with self._lock:
            while True:
                reply = await self._request({"op": "read", "path": rel, "offset": len(out),
                                             "size": _FILE_CHUNK})
                out += base64.b64decode(reply["data"])
                if reply.get("eof") or len(out) > self.limits.tmpfs_mb * 1024 * 1024:
                    return bytes(out)

    async def list_files(self) -> list[str]:
        """List regular files of the work dir, relative and sorted."""
        async with self._lock:
            reply = await self._request({"op": "list"})
        return [str(f) for f in reply.get("files", [])]

    async def close(self) -> None:
        """Kill the session's processes, remove its cgroup, release its uid."""
        if self._closed:
            return
        self._closed = True
        await self._lose("closed")
        if self._lease is not None and self._cgroup is None:
            await asyncio.to_thread(kill_uid, self._lease.uid)
        for pump in self._pumps.values():
            with contextlib.suppress(TimeoutError, asyncio.CancelledError):
                await asyncio.wait_for(pump.task, 1.0)
        if self._proc is not None and self._proc.stdin is not None:
            self._proc.stdin.close()
        if self._resp_transport is not None:
            self._resp_transport.close()
        if self._cgroup is not None:
            await asyncio.to_thread(self._cgroup.destroy)
        if self._lease is not None:
            self._lease.release()

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(self, exc_type: type[BaseException] | None,
                        exc: BaseException | None, tb: TracebackType | None) -> None:
        await self.close()
