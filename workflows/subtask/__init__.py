"""The subtask workflow, in parts that each own their state.

- ``workflow.py``: ``SubtaskWorkflow`` — its handlers and the top-level loop (assign,
  execute, review, complete; rework and escalation).
- ``slots.py``: ``Slots`` — the agent's capacity slot, waiting QUEUED while none is free.
- ``work.py``: ``Work`` — one round of work, dispatched by step type, under the deadline.
- ``review.py``: ``Review`` — review rounds and the `review` update's checks.
- ``escalation.py``: ``Ladder`` — escalations up the chain and carrying out decisions.
- ``state.py``: ``StepState`` (what `progress` shows) and ``Records`` (store writes).
- ``outcomes.py``: what a round ends in: ``Done``, ``Trouble`` or ``WORK_AGAIN``.
"""

from workflows.subtask.workflow import SubtaskWorkflow, child_id

__all__ = ["SubtaskWorkflow", "child_id"]
