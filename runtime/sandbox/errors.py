"""The sandbox package's exception tree.

``SandboxError`` is the base; callers (activities) map its two kinds onto Temporal:

- ``SandboxUnavailable``: the backend cannot be used at all on this host or with this
  configuration (bwrap missing, namespaces blocked, self-test failed, E2B key refused).
  Retrying cannot help: raise ``ApplicationError(..., non_retryable=True)``.
- ``SandboxInfraError``: a transient failure of the machinery (the sandbox process died
  outside a cell, a session was lost, E2B network error, 5xx, rate limit). Retryable.

What the user's code does is never an exception: its errors, timeouts, and even a crash
of the interpreter while it runs come back inside ``CellResult``.
"""

from __future__ import annotations


class SandboxError(Exception):
    """Base of every error raised by runtime.sandbox."""


class SandboxUnavailable(SandboxError):
    """The backend is unusable here (permanent: never retried)."""


class SandboxInfraError(SandboxError):
    """A transient infrastructure failure (retryable)."""
