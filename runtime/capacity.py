"""How many sandboxes a worker runs at once: a setting, bounded by the host's memory.

Code steps have a task queue of their own, served by a Temporal worker whose
`max_concurrent_activities` is this number: a burst of code steps waits in Temporal (as
scheduled activities, visible in the Web UI), not in the worker's memory, and no more
sessions run at once than memory for them.
"""

from __future__ import annotations

import logging
import os

log = logging.getLogger(__name__)

# Share of the host's memory that sandboxes may take together at most.
MEMORY_SHARE = 0.75
# Without a setting: at most this many sessions per CPU (code mostly waits on I/O, not).
PER_CPU = 4


def host_memory_mb() -> int:
    return int(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") // 2**20)


def sandbox_slots(setting: int | None, *, memory_mb: int, host_mb: int | None = None,
                  cpus: int | None = None) -> int:
    """Return the number of sandbox sessions to run at once.

    `setting` (BEESTOWN_MAX_SANDBOXES) wins, but never past what `MEMORY_SHARE` of the
    host's memory holds at `memory_mb` per session; without it, the least of that and
    `PER_CPU` per CPU. Never less than 1.
    """
    host_mb = host_mb or host_memory_mb()
    by_memory = max(1, int(host_mb * MEMORY_SHARE) // max(1, memory_mb))
    if setting is None:
        return max(1, min(by_memory, PER_CPU * (cpus or os.cpu_count() or 1)))
    if setting > by_memory:
        log.warning("BEESTOWN_MAX_SANDBOXES=%d sessions of %d MB would not fit in %d%% of "
                    "this host's %d MB; running %d at once", setting, memory_mb,
                    int(MEMORY_SHARE * 100), host_mb, by_memory)
        return by_memory
    return setting
