"""The local backend: a warm Python interpreter inside bubblewrap, one per session.

Layers, outermost first:

1. An unprivileged uid. As root we give every session its own uid/gid (2,000,000 + slot,
   leased with ``flock`` so several workers on one host never share one): sessions cannot
   signal or out-fork each other, and bwrap's user namespace never maps to host root
   (which would make root-owned files such as /etc/shadow readable). Not root: the
   worker's own uid.
2. A per-session cgroup (v1 memory + pids) when the host lets us create one, else
   rlimits only (which bound each process, not the session as a whole).
3. rlimits on every process: address space, CPU seconds, processes, open files, file
   size, no core dumps.
4. bubblewrap: new user/pid/net/ipc/uts/cgroup namespaces, no capabilities, no nested
   user namespaces, read-only ``/usr`` and root, sized tmpfs for ``/tmp``, ``/dev/shm``
   and the home (which holds the work dir), a cleared environment, and death with its
   parent (a worker killed with -9 takes its sandboxes along; so does the pid namespace:
   double-forked daemons die with the session).

Inside runs ``runner.py`` (see its docstring for the protocol).
"""

from __future__ import annotations

import asyncio
import base64
import codecs
import contextlib
import fcntl
import json
import logging
import os
import resource
import secrets
import signal
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any, Self

from models.sandbox import CellError, CellResult, RichResult, SandboxLimits
from runtime.sandbox.cgroups import CgroupRoots, SessionCgroup
from runtime.sandbox.envs import MPL_CACHE_DIRNAME, SandboxPython
from runtime.sandbox.errors import SandboxError, SandboxInfraError, SandboxUnavailable
from runtime.sandbox.protocol import OutputCallback

logger = logging.getLogger(__name__)

RUNNER_HOST_PATH = str(Path(__file__).with_name("runner.py"))
RUNNER_PATH = "/run/beestown/runner.py"
HOME = "/home/sandbox"
WORKDIR = f"{HOME}/work"

UID_BASE = 2_000_000
UID_SLOTS = 65_536
LEASE_DIR = Path("/run/beestown-sandbox")

_MAX_FRAME = 64 * 1024 * 1024  # a response line; bigger means the session broke protocol
_FILE_CHUNK = 4 * 1024 * 1024
_START_TIMEOUT_S = 15.0
_LINE_PIECE = 8192  # longest piece of a line handed to on_output at once

# Messages from bwrap that mean "this host cannot run sandboxes", with the fix.
_NAMESPACE_HINT = (
    "user namespaces are blocked on this host (Docker's default seccomp profile, "
    "kernel.unprivileged_userns_clone=0, user.max_user_namespaces=0 or Ubuntu's "
    "kernel.apparmor_restrict_unprivileged_userns=1). Run the worker outside Docker, or "
    "with `--security-opt seccomp=unconfined --security-opt apparmor=unconfined`, or "
    "allow unprivileged user namespaces (sysctl)."
)


def classify_start_failure(stderr: str, returncode: int | None) -> SandboxError:
    """Turn bwrap's complaint at start into the exception a caller should see."""
    text = stderr.strip() or f"exit status {returncode}"
    lowered = text.lower()
    if any(s in lowered for s in ("namespace", "uid map", "operation not permitted",
                                  "permission denied", "setting up")):
        return SandboxUnavailable(f"bubblewrap could not start: {text}. {_NAMESPACE_HINT}")
    if "execvp" in lowered or "no such file" in lowered:
        return SandboxUnavailable(f"the sandbox interpreter could not start: {text}")
    return SandboxInfraError(f"sandbox process exited at start: {text}")


class UidLease:
    """A host uid/gid owned by exactly one session on this host while the lease is held."""

    _next_slot = 0  # process-wide hint; the flock is what guarantees exclusivity

    def __init__(self, uid: int, fd: int) -> None:
        self.uid = uid
        self._fd = fd

    @classmethod
    def acquire(cls) -> UidLease:
        """Lease a free uid (the kernel drops the lock if this process dies)."""
        LEASE_DIR.mkdir(mode=0o700, exist_ok=True)
        for i in range(UID_SLOTS):
            slot = (cls._next_slot + i) % UID_SLOTS
            uid = UID_BASE + slot
            fd = os.open(LEASE_DIR / f"{uid}.lock", os.O_CREAT | os.O_RDWR | os.O_CLOEXEC, 0o600)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                os.close(fd)
                continue
            cls._next_slot = slot + 1
            return cls(uid, fd)
        raise SandboxInfraError(f"all {UID_SLOTS} sandbox uids are in use")

    def release(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1


def _kill_uid(uid: int) -> None:
    """SIGKILL every process of ``uid`` (``kill(-1)`` from a child that became that uid)."""
    pid = os.fork()
    if pid == 0:  # pragma: no cover - child
        try:
            os.setgroups([])
            os.setresgid(uid, uid, uid)
            os.setresuid(uid, uid, uid)
            os.kill(-1, signal.SIGKILL)  # every process this uid may signal, but us
        finally:
            os._exit(0)
    os.waitpid(pid, 0)


def _children(pid: int) -> list[int]:
    try:
        return [int(c) for c in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]
    except (OSError, ValueError):
        return []


def _processes_of_uid(uid: int) -> list[int]:
    found = []
    for name in os.listdir("/proc"):
        if name.isdigit():
            with contextlib.suppress(OSError):
                if os.stat(f"/proc/{name}").st_uid == uid:
                    found.append(int(name))
    return found


@dataclass(frozen=True)
class HostPlan:
    """How sessions are confined on this host; decided once per factory."""

    bwrap: str
    python: SandboxPython
    per_session_uid: bool  # True when the worker is root
    cgroups: CgroupRoots | None
    cgroup_reason: str

    def describe(self) -> dict[str, str]:
        return {
            "backend": "local (bubblewrap)",
            "bwrap": self.bwrap,
            "python": self.python.executable,
            "batteries": "yes" if self.python.batteries else "no (plain python3)",
            "uid": f"per-session uid {UID_BASE}+slot" if self.per_session_uid
            else f"worker's uid {os.getuid()}",
            "session limits": f"cgroup v1 memory+pids ({self.cgroups.describe()})"
            if self.cgroups else f"rlimits only ({self.cgroup_reason})",
        }


def sandbox_env(plan: HostPlan) -> dict[str, str]:
    """The whole environment of a session: nothing of the host's (no secrets)."""
    threads = str(min(4, os.cpu_count() or 1))
    env = {
        "PATH": ":".join(([f"{plan.python.env_dir}/bin"] if plan.python.env_dir else [])
                         + ["/usr/local/bin", "/usr/bin", "/bin"]),
        "HOME": HOME, "USER": "sandbox", "LOGNAME": "sandbox", "LANG": "C.UTF-8",
        "TMPDIR": "/tmp", "MPLBACKEND": "Agg", "MPLCONFIGDIR": f"{HOME}/.config/matplotlib",
        # BLAS pools size themselves by CPU count: each thread costs address space and
        # counts against the session's process limit.
        "OPENBLAS_NUM_THREADS": threads, "OMP_NUM_THREADS": threads, "MKL_NUM_THREADS": threads,
    }
    if plan.python.env_dir:
        env["BEESTOWN_MPLCACHE"] = f"{plan.python.env_dir}/{MPL_CACHE_DIRNAME}"
    return env


def bwrap_argv(plan: HostPlan, limits: SandboxLimits) -> list[str]:
    """The bubblewrap command line of one session (see FACTS.md, "Sandbox")."""
    env = sandbox_env(plan)
    shm_mb = max(16, limits.tmpfs_mb // 4)
    argv = [
        plan.bwrap,
        "--unshare-user", "--unshare-ipc", "--unshare-pid", "--unshare-uts",
        "--unshare-net", "--unshare-cgroup-try", "--disable-userns",
        "--die-with-parent", "--new-session", "--cap-drop", "ALL",
        "--hostname", "sandbox",
        "--ro-bind", "/usr", "/usr",
    ]
    for link in ("bin", "lib", "lib64", "sbin"):
        target = f"/{link}"
        if os.path.islink(target):
            argv += ["--symlink", os.readlink(target), target]
        elif os.path.isdir(target):
            argv += ["--ro-bind", target, target]
    for path in ("/etc/ld.so.cache", "/etc/localtime"):
        argv += ["--ro-bind-try", path, path]
    argv += [
        "--proc", "/proc", "--dev", "/dev",
        "--size", str(limits.tmpfs_mb * 1024 * 1024), "--tmpfs", "/tmp",
        "--size", str(shm_mb * 1024 * 1024), "--tmpfs", "/dev/shm",
        "--size", str(limits.tmpfs_mb * 1024 * 1024), "--tmpfs", HOME,
        "--dir", WORKDIR,
        # --dev makes a writable tmpfs; only /dev/shm (its own sized tmpfs) stays writable.
        "--remount-ro", "/dev",
    ]
    for path in plan.python.binds:
        argv += ["--ro-bind", path, path]
    argv += ["--ro-bind", RUNNER_HOST_PATH, RUNNER_PATH, "--remount-ro", "/",
             "--chdir", WORKDIR, "--clearenv"]
    for key, value in env.items():
        argv += ["--setenv", key, value]
    argv += ["--", plan.python.executable, "-I", RUNNER_PATH]
    return argv


def _rlimits(limits: SandboxLimits, *, has_cgroup: bool, nproc: int) -> list[tuple[int, int]]:
    mib = 1024 * 1024
    # With a cgroup the session total is bounded there; the per-process address space
    # bound then only turns one huge allocation into a MemoryError instead of an OOM kill.
    address_space = (limits.memory_mb + (512 if has_cgroup else 0)) * mib
    return [
        (resource.RLIMIT_AS, address_space),
        (resource.RLIMIT_CPU, limits.cpu_s),
        (resource.RLIMIT_NPROC, nproc),
        (resource.RLIMIT_NOFILE, 1024),
        (resource.RLIMIT_FSIZE, limits.file_mb * mib),
        (resource.RLIMIT_CORE, 0),
    ]


def _make_preexec(*, rlimits: list[tuple[int, int]], cgroup: SessionCgroup | None,
                  uid: int | None) -> Callable[[], None]:
    """What the forked child does before exec'ing bwrap: join, limit, drop privileges.

    Done here rather than with ``Popen(user=...)`` because joining a root-owned cgroup
    must happen before the uid drop, and Popen drops before calling ``preexec_fn``. Only
    plain syscalls: the child of a multi-threaded process must not take Python locks.
    """

    def preexec() -> None:
        if cgroup is not None:
            cgroup.join_from_child()
        for which, value in rlimits:
            # CPU: soft limit sends SIGXCPU (fatal); the hard one is a backstop.
            hard = value + 5 if which == resource.RLIMIT_CPU else value
            resource.setrlimit(which, (value, hard))
        if uid is not None:
            os.setgroups([])
            os.setresgid(uid, uid, uid)
            os.setresuid(uid, uid, uid)

    return preexec


class _CellStream:
    """One stream's output for one cell: capped copy plus line streaming."""

    def __init__(self, name: str, marker: bytes, limit: int,
                 on_output: OutputCallback | None) -> None:
        self.name = name
        self.marker = marker
        self.limit = limit
        self.on_output = on_output
        self.buf = bytearray()
        self.truncated = False
        self.done = asyncio.Event()
        self._decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
        self._line = ""

    def add(self, data: bytes) -> None:
        room = self.limit - len(self.buf)
        if len(data) > room:
            self.truncated = True
            data = data[:max(room, 0)]
        if data:
            self.buf += data
            self._stream(self._decoder.decode(data))

    def _emit(self, line: str) -> None:
        if self.on_output is None:
            return
        try:
            self.on_output(self.name, line)
        except Exception:
            logger.exception("on_output callback failed; no more output goes to it")
            self.on_output = None

    def _stream(self, text: str) -> None:
        if self.on_output is None:
            return
        self._line += text
        *lines, self._line = self._line.split("\n")
        for line in lines:
            self._emit(line)
        while len(self._line) > _LINE_PIECE:
            self._emit(self._line[:_LINE_PIECE])
            self._line = self._line[_LINE_PIECE:]

    def finish(self) -> None:
        if self.done.is_set():
            return
        self._stream(self._decoder.decode(b"", final=True))
        if self._line:
            self._emit(self._line)
            self._line = ""
        self.done.set()

    def text(self) -> str:
        return self.buf.decode("utf-8", errors="replace")


class _StreamPump:
    """Reads one of the sandbox's output pipes for the whole session.

    Output between cells (a background process still printing) is dropped; output after
    the stream's cap is read and dropped too, so the writer never blocks on a full pipe.
    """

    def __init__(self, name: str, reader: asyncio.StreamReader) -> None:
        self.name = name
        self.reader = reader
        self.cell: _CellStream | None = None
        self.pending = b""
        self.stray = bytearray()  # last bytes seen outside cells (bwrap's start errors)
        self.task = asyncio.create_task(self._pump(), name=f"sandbox-{name}")

    def begin(self, cell: _CellStream) -> None:
        self.pending = b""
        self.cell = cell

    def end(self) -> None:
        """Close the current cell without its marker (cell killed or stream closed)."""
        if self.cell is not None:
            self.cell.add(self.pending)
            self.cell.finish()
        self.cell = None
        self.pending = b""

    def _feed(self, chunk: bytes) -> None:
        cell = self.cell
        if cell is None:
            self.stray = (self.stray + chunk)[-4096:]
            return
        data = self.pending + chunk
        idx = data.find(cell.marker)
        if idx >= 0:
            cell.add(data[:idx])
            cell.finish()
            self.cell = None
            self.pending = b""
            return
        # A marker may be split across reads: hold back only a tail that could start
        # one, so ordinary output streams without delay.
        keep = 0
        first = cell.marker[:1]
        start = data.find(first, max(0, len(data) - len(cell.marker) + 1))
        while start >= 0:
            if cell.marker.startswith(data[start:]):
                keep = len(data) - start
                break
            start = data.find(first, start + 1)
        cell.add(data[:len(data) - keep])
        self.pending = data[len(data) - keep:]

    async def _pump(self) -> None:
        while chunk := await self.reader.read(1 << 16):
            self._feed(chunk)
        self.end()


class LocalSession:
    """A notebook session in bubblewrap; create with :meth:`start`."""

    def __init__(self, plan: HostPlan, limits: SandboxLimits) -> None:
        self.plan = plan
        self.limits = limits
        self._lock = asyncio.Lock()
        self._proc: asyncio.subprocess.Process | None = None
        self._responses: asyncio.StreamReader | None = None
        self._resp_transport: asyncio.ReadTransport | None = None
        self._pumps: dict[str, _StreamPump] = {}
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
            await asyncio.to_thread(_kill_uid, uid)
        # RLIMIT_NPROC counts every process of the uid: the worker's own too when shared.
        shared = 0 if uid is not None else len(_processes_of_uid(self.uid))
        nproc = shared + limits.pids
        preexec = _make_preexec(
            rlimits=_rlimits(limits, has_cgroup=self._cgroup is not None, nproc=nproc),
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
        self._pumps = {"stdout": _StreamPump("stdout", self._proc.stdout),
                       "stderr": _StreamPump("stderr", self._proc.stderr)}
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
            for child in _children(self._proc.pid):
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
        cells = {name: _CellStream(name, marker, self.limits.output_bytes, on_output)
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
        return CellResult(
            stdout=cells["stdout"].text(), stderr=cells["stderr"].text(),
            stdout_truncated=cells["stdout"].truncated,
            stderr_truncated=cells["stderr"].truncated,
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
            await asyncio.to_thread(_kill_uid, self._lease.uid)
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
