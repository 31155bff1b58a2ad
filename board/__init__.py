"""The board: a browser view of BeesTown where signed-in people see, start and steer work.

    beestown user add alice --acts-for research-lead,writer   # an account (asks a password)
    beestown web                                              # http://127.0.0.1:8377
    beestown graph TASK_ID --svg plan.svg                     # the task page's picture
    beestown watch TASK_ID                                    # the same, live, in a terminal

The board reads the same `Settings` as the worker and talks to the same PostgreSQL and
Temporal: a review or an escalation decision goes through the workflow's own `review` /
`resolve_escalation` update, sent for an agent the signed-in person acts for, and leaves an
audit row. Pages refresh through server-sent events fed by one PostgreSQL LISTEN per
process (`board.live.Hub`), never by polling Temporal.

Errors: `BoardError` (bad configuration, refused start) is the root; `Forbidden` is a
person acting beyond their agents (HTTP 403, nothing reaches Temporal).
"""

from __future__ import annotations

from board.errors import BoardError, Forbidden

__all__ = ["BoardError", "Forbidden"]
