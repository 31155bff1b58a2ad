"""Finishing what must not be cut short: work that runs to its end through a cancellation.

Temporal's core cannot take back a signal to another workflow once it has been sent: when
a cancellation interrupts `handle.signal(...)` after the command went out, every later
workflow task fails with "[TMPRL1100] Nondeterminism error: Invalid transition in state
machine" and the workflow never closes. A step that has completed (its result stored, its
dependents being released) and a parent handing an output on must therefore finish those
calls whatever arrives meanwhile; the caller then decides what the cancellation means.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable
from typing import TypeVar

T = TypeVar("T")


async def finish_despite_cancel(work: Awaitable[T]) -> tuple[T, bool]:
    """Run `work` to its end even if this workflow (task) is cancelled meanwhile.

    Returns `work`'s result and whether a cancellation arrived while it ran. `work`'s own
    errors propagate as they are.
    """
    inner = asyncio.ensure_future(work)
    cancelled = False
    while True:
        try:
            return await asyncio.shield(inner), cancelled
        except asyncio.CancelledError:
            if inner.done():
                raise  # `work` itself was cancelled, not just this wait
            cancelled = True
