"""How a local session is confined: uid, cgroup, rlimits and the bubblewrap command line.

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

Nothing here talks to the session; ``local.py`` starts and drives it.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import resource
import signal
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from models.sandbox import SandboxLimits
from runtime.sandbox.cgroups import CgroupRoots, SessionCgroup
from runtime.sandbox.envs import MPL_CACHE_DIRNAME, SandboxPython
from runtime.sandbox.errors import SandboxError, SandboxInfraError, SandboxUnavailable

RUNNER_HOST_PATH = str(Path(__file__).with_name("runner.py"))
RUNNER_PATH = "/run/beestown/runner.py"
HOME = "/home/sandbox"
WORKDIR = f"{HOME}/work"

UID_BASE = 2_000_000
UID_SLOTS = 65_536
LEASE_DIR = Path("/run/beestown-sandbox")

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


def kill_uid(uid: int) -> None:
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


def children_of(pid: int) -> list[int]:
    try:
        return [int(c) for c in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]
    except (OSError, ValueError):
        return []


def processes_of_uid(uid: int) -> list[int]:
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


def rlimits_for(limits: SandboxLimits, *, has_cgroup: bool, nproc: int) -> list[tuple[int, int]]:
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


def make_preexec(*, rlimits: list[tuple[int, int]], cgroup: SessionCgroup | None,
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
