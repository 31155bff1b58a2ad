"""Per-session cgroups (v1 memory + pids), where the host lets us create them.

rlimits bound each process; only a cgroup bounds a session as a whole (six children of
800 MB each pass a 1 GiB RLIMIT_AS). We nest every session's group under the worker's
own group, so whatever limit the host put on the worker still holds for its sandboxes.

Only cgroup v1 controllers are used: under v2 the "no internal processes" rule means the
worker would first have to move itself into a leaf of a delegated subtree, which this
module does not do (callers then fall back to rlimits and say so).
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import time
from dataclasses import dataclass, field
from pathlib import Path

logger = logging.getLogger(__name__)

_BASE = "beestown-sandbox"
_CONTROLLERS = ("memory", "pids")


def _v1_mounts() -> dict[str, Path]:
    """Map each v1 controller we want to the mount point of its hierarchy."""
    mounts: dict[str, Path] = {}
    with open("/proc/self/mountinfo") as f:
        for line in f:
            left, _, right = line.partition(" - ")
            fstype, _source, options = ([*right.split(), "", "", ""])[:3]
            if fstype != "cgroup":
                continue
            mount_point = left.split()[4]
            for opt in options.split(","):
                if opt in _CONTROLLERS:
                    mounts[opt] = Path(mount_point)
    return mounts


def _own_paths() -> dict[str, str]:
    own: dict[str, str] = {}
    with open("/proc/self/cgroup") as f:
        for line in f:
            _id, controllers, path = line.rstrip("\n").split(":", 2)
            for c in controllers.split(","):
                if c in _CONTROLLERS:
                    own[c] = path
    return own


@dataclass(frozen=True)
class CgroupRoots:
    """Where session groups are created, one directory per controller."""

    bases: dict[str, Path]

    def describe(self) -> str:
        return ", ".join(f"{c}:{p}" for c, p in sorted(self.bases.items()))


def detect() -> tuple[CgroupRoots | None, str]:
    """Find writable v1 memory and pids hierarchies; returns (roots or None, why)."""
    try:
        mounts = _v1_mounts()
        own = _own_paths()
    except OSError as e:
        return None, f"cannot read /proc cgroup info: {e}"
    missing = [c for c in _CONTROLLERS if c not in mounts or c not in own]
    if missing:
        return None, f"no cgroup v1 {'/'.join(missing)} controller mounted"
    bases: dict[str, Path] = {}
    for c in _CONTROLLERS:
        base = mounts[c] / own[c].lstrip("/") / _BASE
        try:
            base.mkdir(exist_ok=True)
            probe = base / f"probe-{os.getpid()}"
            probe.mkdir(exist_ok=True)
            probe.rmdir()
        except OSError as e:
            return None, f"cannot create cgroups under {base.parent}: {e.strerror}"
        bases[c] = base
    return CgroupRoots(bases), "ok"


@dataclass
class SessionCgroup:
    """The memory+pids groups of one session."""

    paths: dict[str, Path]
    procs_files: list[str] = field(default_factory=list)

    @classmethod
    def create(cls, roots: CgroupRoots, name: str, *, memory_mb: int, pids: int) -> SessionCgroup:
        """Create (after sweeping any stale group of the same name) and set the limits."""
        paths = {c: base / name for c, base in roots.bases.items()}
        group = cls(paths, [str(p / "cgroup.procs") for p in paths.values()])
        group.destroy()  # a worker killed with -9 leaves its empty groups behind
        for p in paths.values():
            p.mkdir()
        mem = paths["memory"]
        limit = str(memory_mb * 1024 * 1024)
        (mem / "memory.limit_in_bytes").write_text(limit)
        memsw = mem / "memory.memsw.limit_in_bytes"
        if memsw.exists():
            # Same bound with swap counted, so a session cannot page its way past it.
            with contextlib.suppress(OSError):
                memsw.write_text(limit)
        (paths["pids"] / "pids.max").write_text(str(pids))
        return group

    def join_from_child(self) -> None:
        """Move the calling process into every group (runs in the child before exec)."""
        pid = str(os.getpid()).encode()
        for path in self.procs_files:
            fd = os.open(path, os.O_WRONLY)
            try:
                os.write(fd, pid)
            finally:
                os.close(fd)

    def pids(self) -> set[int]:
        found: set[int] = set()
        for p in self.paths.values():
            with contextlib.suppress(OSError):
                found.update(int(x) for x in (p / "cgroup.procs").read_text().split())
        return found

    def kill_all(self, *, timeout_s: float = 2.0) -> bool:
        """SIGKILL every process of the session until none is left; True when empty."""
        deadline = time.monotonic() + timeout_s
        while True:
            pids = self.pids()
            if not pids:
                return True
            for pid in pids:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
            if time.monotonic() > deadline:
                logger.warning("session cgroup still holds %s after SIGKILL", sorted(pids))
                return False
            time.sleep(0.005)

    def oom_kills(self) -> int:
        """Count of processes the memory controller killed (or allocations it refused)."""
        mem = self.paths["memory"]
        with contextlib.suppress(OSError):
            for line in (mem / "memory.oom_control").read_text().splitlines():
                key, _, value = line.partition(" ")
                if key == "oom_kill":
                    return int(value)
        with contextlib.suppress(OSError, ValueError):
            return int((mem / "memory.failcnt").read_text())
        return 0

    def destroy(self) -> None:
        """Kill what is left and remove the groups; safe to call on missing groups."""
        if not any(p.exists() for p in self.paths.values()):
            return
        self.kill_all()
        for p in self.paths.values():
            for _ in range(100):
                try:
                    p.rmdir()
                    break
                except FileNotFoundError:
                    break
                except OSError:
                    time.sleep(0.01)  # zombies not yet reaped keep the group busy
            else:
                logger.warning("could not remove cgroup %s", p)
