"""Choosing a backend, proving it on this host, and opening sessions."""

from __future__ import annotations

import asyncio
import logging
import os
import shutil
import time
from typing import TYPE_CHECKING

from models.sandbox import SandboxLimits
from runtime.sandbox import cgroups, selftest
from runtime.sandbox.envs import resolve_python
from runtime.sandbox.errors import SandboxInfraError, SandboxUnavailable
from runtime.sandbox.isolation import HostPlan, sandbox_env
from runtime.sandbox.local import LocalSession
from runtime.sandbox.protocol import CodeSession

if TYPE_CHECKING:
    from runtime.settings import Settings

logger = logging.getLogger(__name__)

_BACKENDS = ("auto", "local", "e2b")


class SandboxFactory:
    """Opens code sessions on one backend; never runs code unsandboxed.

    Args:
        backend: "auto" (e2b when ``e2b_api_key`` is given, else local), "local", "e2b".
        e2b_api_key: the E2B key; only the e2b backend uses it.
        limits: default limits of every session (``open`` may override them).
        python: interpreter for local sessions (default: the env installed by
            ``python -m runtime.sandbox.setup``, else ``/usr/bin/python3``).
        bwrap: path of bubblewrap (default: ``bwrap`` on PATH).
    """

    def __init__(self, *, backend: str = "auto", e2b_api_key: str | None = None,
                 limits: SandboxLimits | None = None, python: str | None = None,
                 bwrap: str | None = None) -> None:
        if backend not in _BACKENDS:
            raise ValueError(f"backend must be one of {', '.join(_BACKENDS)}, not {backend!r}")
        self.backend = ("e2b" if e2b_api_key else "local") if backend == "auto" else backend
        self._e2b_api_key = e2b_api_key
        self.limits = limits or SandboxLimits()
        self._python = python
        self._bwrap = bwrap
        self._plan: HostPlan | None = None
        self._verdict: SandboxUnavailable | None = None
        self._tested = False
        self._test_lock = asyncio.Lock()
        # What the self-test established (backend, uid scheme, cgroups, checks held).
        self.report: dict[str, str] = {}

    @classmethod
    def from_settings(cls, settings: Settings, *,
                      limits: SandboxLimits | None = None) -> SandboxFactory:
        """Build the factory the settings describe (``BEESTOWN_SANDBOX*``, ``E2B_API_KEY``,
        ``BEESTOWN_OUTPUT_ARTIFACT_MB`` when no `limits` are given)."""
        key = settings.e2b_api_key.get_secret_value() if settings.e2b_api_key else None
        python = str(settings.sandbox_python) if settings.sandbox_python else None
        if limits is None:
            limits = SandboxLimits(raw_output_bytes=settings.output_artifact_mb * 1024 * 1024)
        return cls(backend=settings.sandbox_backend, e2b_api_key=key, limits=limits,
                   python=python, bwrap=settings.sandbox_bwrap)

    def _local_plan(self) -> HostPlan:
        if self._plan is not None:
            return self._plan
        bwrap = self._bwrap or shutil.which("bwrap") or shutil.which("bwrap", path="/usr/bin")
        if not bwrap or not os.access(bwrap, os.X_OK):
            raise SandboxUnavailable(
                "bubblewrap (bwrap) is not installed: `apt-get install bubblewrap` "
                "(or set BEESTOWN_SANDBOX=e2b with an E2B_API_KEY)")
        try:
            python = resolve_python(self._python)
        except ValueError as e:
            raise SandboxUnavailable(str(e)) from e
        roots, why = cgroups.detect()
        if roots is None:
            logger.warning("sandbox sessions are bounded by rlimits only (%s): memory and "
                           "process limits apply per process, not per session", why)
        self._plan = HostPlan(bwrap=bwrap, python=python, per_session_uid=os.geteuid() == 0,
                              cgroups=roots, cgroup_reason=why)
        return self._plan

    async def self_test(self) -> None:
        """Prove the backend's isolation on this host (once; later calls are free).

        Local: starts a real session and checks from inside that the network (loopback,
        host IP, DNS, abstract unix sockets), host files (/tmp, the project, /root,
        /etc/passwd, /etc/shadow) and the host environment are out of reach, that ``/``
        and ``/usr`` are read-only, and that the code runs as a non-root uid without
        capabilities or nested user namespaces. E2B: opens a sandbox and runs a cell.

        Raises:
            SandboxUnavailable: the backend cannot be used here; the message says why
                and how to fix it.
            SandboxInfraError: the test could not run for a transient reason.
        """
        async with self._test_lock:
            if self._verdict is not None:
                raise self._verdict
            if self._tested:
                return
            started = time.perf_counter()
            try:
                if self.backend == "local":
                    await self._self_test_local()
                else:
                    await self._self_test_e2b()
            except SandboxUnavailable as e:
                self._verdict = e  # permanent: do not pay for the test again
                raise
            self._tested = True
            self.report["self-test"] = f"passed in {(time.perf_counter() - started) * 1000:.0f} ms"
            logger.info("sandbox self-test passed: %s", self.report)

    async def _self_test_local(self) -> None:
        plan = self._local_plan()
        self.report.update(plan.describe())
        limits = SandboxLimits(wall_s=10, memory_mb=max(256, self.limits.memory_mb),
                               pids=max(16, self.limits.pids))
        with selftest.bait(sandbox_env=set(sandbox_env(plan))) as bait:
            async with await LocalSession.start(plan, limits) as session:
                result = await session.run_cell(bait.probe_code())
        if result.error is not None:
            raise SandboxUnavailable(
                f"sandbox self-test probe failed: {result.error.name}: {result.error.value}")
        failed = selftest.failures(result.stdout)
        if failed:
            detail = "; ".join(f"{k}: {v}" for k, v in failed.items())
            raise SandboxUnavailable(f"sandbox isolation does not hold on this host: {detail}")
        self.report["checks"] = "all held"

    async def _self_test_e2b(self) -> None:
        session = await self._open_e2b(self.limits)
        async with session:
            result = await session.run_cell("1 + 1")
        if result.error is not None or not result.results:
            raise SandboxUnavailable(f"e2b sandbox could not run a cell: {result.error}")
        self.report.update({"backend": "e2b", "checks": "a cell ran"})

    async def _open_e2b(self, limits: SandboxLimits) -> CodeSession:
        from runtime.sandbox.e2b_backend import E2BSession

        if not self._e2b_api_key:
            raise SandboxUnavailable("the e2b sandbox backend needs E2B_API_KEY")
        return await E2BSession.start(api_key=self._e2b_api_key, limits=limits)

    async def open(self, *, limits: SandboxLimits | None = None) -> CodeSession:
        """Open a session (the first local one runs the self-test first).

        Raises:
            SandboxUnavailable: the backend cannot be used here (permanent).
            SandboxInfraError: a transient failure; a retry may succeed.
        """
        limits = limits or self.limits
        if self.backend == "e2b":
            return await self._open_e2b(limits)
        await self.self_test()
        try:
            return await LocalSession.start(self._local_plan(), limits)
        except SandboxUnavailable as e:
            # The self-test passed on this host, so this is not a permanent condition.
            raise SandboxInfraError(str(e)) from e
