"""Fixtures and helpers shared by the sandbox tests.

Test modules import ``factory_fixture`` and ``session_fixture``; pytest knows them by
their names ``factory`` and ``session``.
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator

import pytest

from models.sandbox import SandboxLimits
from runtime.sandbox import CodeSession, SandboxFactory
from runtime.sandbox.local import LocalSession

# Small enough to keep the hostile tests quick; memory is the brief's 1 GiB.
TEST_LIMITS = SandboxLimits(wall_s=10, memory_mb=1024, pids=64, file_mb=64, tmpfs_mb=256,
                            output_bytes=200_000)


@pytest.fixture(scope="session", name="factory")
def factory_fixture() -> SandboxFactory:
    return SandboxFactory(backend="local", limits=TEST_LIMITS)


@pytest.fixture(name="session")
async def session_fixture(factory: SandboxFactory) -> AsyncIterator[CodeSession]:
    s = await factory.open()
    try:
        yield s
    finally:
        await s.close()


def processes_of_uid(uid: int) -> list[int]:
    """Host pids running as ``uid`` (the sandbox's per-session uid)."""
    found = []
    for name in os.listdir("/proc"):
        if name.isdigit():
            try:
                if os.stat(f"/proc/{name}").st_uid == uid:
                    found.append(int(name))
            except OSError:
                pass
    return found


def local(s: CodeSession) -> LocalSession:
    assert isinstance(s, LocalSession)
    return s


def needs_root() -> pytest.MarkDecorator:
    return pytest.mark.skipif(os.geteuid() != 0, reason="per-session uids need root")
