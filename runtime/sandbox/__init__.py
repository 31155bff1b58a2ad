"""Run untrusted Python in notebook-like sessions: bubblewrap locally, or E2B.

Exception tree (see ``errors.py``): ``SandboxError`` ← ``SandboxUnavailable`` (permanent:
the backend cannot run here) and ``SandboxInfraError`` (transient: retry). The user's own
errors and timeouts are results (``CellResult``), never exceptions.

Usage::

    factory = SandboxFactory.from_settings(settings)
    await factory.self_test()                  # once at worker start: fail fast
    async with await factory.open() as session:
        result = await session.run_cell("import numpy as np; np.arange(3).sum()")

There is no unsandboxed fallback: without a working backend, ``open`` raises.
The local backend's Python batteries come from ``python -m runtime.sandbox.setup``.
"""

from runtime.sandbox.errors import SandboxError, SandboxInfraError, SandboxUnavailable
from runtime.sandbox.factory import SandboxFactory
from runtime.sandbox.protocol import CodeSession, OutputCallback

__all__ = [
    "CodeSession",
    "OutputCallback",
    "SandboxError",
    "SandboxFactory",
    "SandboxInfraError",
    "SandboxUnavailable",
]
