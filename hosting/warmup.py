"""Loading the heavy SDKs a worker imports only where first used, once it already serves.

`import worker` leaves out the OpenAI and MCP SDKs (together about 1.5 s of a 2.3 s cold
start, `python -X importtime -c 'import worker'`): a worker restarted after a crash or a
deploy serves that much sooner. Then `warm_up(settings)` imports, in a thread, the ones
its settings say it will use, so its first model call does not pay for the import::

    log.info("worker ready ...")
    warm_up(settings)

A supervising parent calls `load_now(settings)` once its first child is forked, so that a
child it forks after a kill has them already.
"""

from __future__ import annotations

import importlib
import logging
import threading
import time

from runtime.settings import Settings
from runtime.tools.mcp import SDK_MODULES as MCP_MODULES

log = logging.getLogger(__name__)

# What `runtime.llm.client` imports at the first model call.
LLM_MODULES = ("openai", "openai.types.chat")


def deferred_modules(settings: Settings) -> list[str]:
    """Return the modules left out of `import worker` that this worker will use: the
    OpenAI SDK if it serves the llm role with a model configured, the MCP SDK if a tools
    file may name MCP servers."""
    names: list[str] = []
    if settings.llm_configured and "llm" in settings.roles:
        names.extend(LLM_MODULES)
    if settings.tools_file is not None:
        # Already being imported by the hub's first opens (in a thread, `runtime.tools.mcp`);
        # importing here too only waits on the same import lock, and makes a supervisor's
        # re-forked child have them.
        names.extend(MCP_MODULES)
    return names


def load_now(settings: Settings) -> None:
    """Import this worker's deferred modules here and now (best effort)."""
    _load(deferred_modules(settings))


def warm_up(settings: Settings) -> None:
    """Begin importing this worker's deferred modules in a thread; return at once.

    A daemon thread, not the event loop's executor: a worker stopped meanwhile exits
    without waiting for the import to end.
    """
    names = deferred_modules(settings)
    if names:
        threading.Thread(target=_load, args=(names,), name="beestown-warm-up",
                         daemon=True).start()


def _load(names: list[str]) -> None:
    started = time.monotonic()
    for name in names:
        try:
            importlib.import_module(name)
        except Exception as e:  # the first real use imports it again, and says why
            log.debug("warm-up: cannot import %s: %r", name, e)
    log.debug("warm-up: %s imported in %.2f s", ", ".join(names), time.monotonic() - started)
