"""BeesTown's own metrics, served with the Temporal SDK's on the worker's metrics port.

    from activities import metrics
    metrics.step_finished(Status.COMPLETED, "code")   # in the activity where it happened

Each helper reports through `activity.metric_meter()`, the meter of the worker's Temporal
runtime (`BEESTOWN_METRICS_PORT`, see worker.py), which adds the namespace, task queue and
activity type to every figure's labels. With metrics off that meter discards them; outside
an activity a helper does nothing. Counters carry no `_total`, like the SDK's own:

    beestown_steps_finished{status,type}   counter    results stored by step activities
                                                      and fail_subtask: COMPLETED, FAILED,
                                                      REVIEWING (held for review), CANCELLED
    beestown_tokens_spent{model,kind}      counter    kind: prompt | completion
    beestown_cost_spent_usd{model}         histogram  one observation per model call in USD;
                                                      its _sum is the cost
    beestown_sandbox_sessions_opened       counter
    beestown_sandbox_sessions_closed       counter
    beestown_sandbox_sessions_in_use       gauge      this process's open sessions
    beestown_queue_wait_seconds{agent}     histogram  how long a QUEUED step waited for a
                                                      slot, observed when it gets one
    beestown_escalations_opened{reason}    counter
    beestown_escalations_closed{reason,status}  counter  status: resolved | cancelled

These are the events, counted by the worker that saw them. The standing totals (steps by
status and type, open escalations, tokens and cost by model, queued assignments) are read
from the store by the board (board/metrics.py): `beestown_steps`, `beestown_escalations_open`,
`beestown_tokens`, `beestown_cost_usd`, `beestown_assignments_queued`.
"""

from __future__ import annotations

from datetime import datetime

from temporalio import activity

from models.task import Metrics, Status

STEPS_FINISHED = "beestown_steps_finished"
TOKENS_SPENT = "beestown_tokens_spent"
COST_SPENT = "beestown_cost_spent_usd"
SESSIONS_OPENED = "beestown_sandbox_sessions_opened"
SESSIONS_CLOSED = "beestown_sandbox_sessions_closed"
SESSIONS_IN_USE = "beestown_sandbox_sessions_in_use"
QUEUE_WAIT = "beestown_queue_wait_seconds"
ESCALATIONS_OPENED = "beestown_escalations_opened"
ESCALATIONS_CLOSED = "beestown_escalations_closed"

# Bucket bounds of BeesTown's histograms, for the runtime's Prometheus exporter (its
# defaults are the SDK's latency buckets in milliseconds). A model call costs from a
# hundredth of a cent to a few dollars; a queued step waits seconds to hours.
BUCKETS: dict[str, list[float]] = {
    COST_SPENT: [0.0001, 0.001, 0.01, 0.1, 1.0, 10.0],
    QUEUE_WAIT: [1.0, 5.0, 15.0, 60.0, 300.0, 900.0, 3600.0, 14400.0],
}

_sessions_in_use = 0  # sandbox sessions open in this process


def step_finished(status: Status | str, step_type: str) -> None:
    """Count a step whose outcome was stored with `status`."""
    if activity.in_activity():
        activity.metric_meter().create_counter(
            STEPS_FINISHED, "step outcomes stored, by status and step type").add(
            1, {"status": str(status), "type": step_type})


def model_usage(model: str, spent: Metrics) -> None:
    """Count a model call's tokens by kind and observe its cost (MeteredLLM's on_usage)."""
    if not activity.in_activity():
        return
    meter = activity.metric_meter()
    tokens = meter.create_counter(TOKENS_SPENT, "model tokens spent, by model and kind")
    for kind, n in (("prompt", spent.prompt_tokens), ("completion", spent.completion_tokens)):
        if n > 0:
            tokens.add(n, {"model": model, "kind": kind})
    meter.create_histogram_float(COST_SPENT, "cost of each model call", "USD").record(
        spent.cost_usd, {"model": model})


def sandbox_opened() -> None:
    """Count a sandbox session opened (and now in use)."""
    global _sessions_in_use
    _sessions_in_use += 1
    if activity.in_activity():
        meter = activity.metric_meter()
        meter.create_counter(SESSIONS_OPENED, "sandbox sessions opened").add(1)
        _report_in_use()


def sandbox_closed() -> None:
    """Count a sandbox session closed (no longer in use)."""
    global _sessions_in_use
    _sessions_in_use = max(0, _sessions_in_use - 1)
    if activity.in_activity():
        activity.metric_meter().create_counter(SESSIONS_CLOSED, "sandbox sessions closed").add(1)
        _report_in_use()


def _report_in_use() -> None:
    activity.metric_meter().create_gauge(
        SESSIONS_IN_USE, "sandbox sessions open in this worker").set(_sessions_in_use)


def queue_wait(agent_id: str | None, queued_at: datetime | None,
               started_at: datetime | None) -> None:
    """Observe how long a step waited QUEUED before it got `agent_id`'s slot."""
    if activity.in_activity() and queued_at is not None and started_at is not None:
        activity.metric_meter().create_histogram_float(
            QUEUE_WAIT, "time a queued step waited for a slot", "s").record(
            max(0.0, (started_at - queued_at).total_seconds()), {"agent": agent_id or ""})


def escalation_opened(reason: str) -> None:
    """Count an escalation opened (not one moved up to the next holder)."""
    if activity.in_activity():
        activity.metric_meter().create_counter(
            ESCALATIONS_OPENED, "escalations opened, by reason").add(1, {"reason": reason})


def escalation_closed(reason: str, status: str) -> None:
    """Count an escalation closed: resolved with a decision, or cancelled."""
    if activity.in_activity():
        activity.metric_meter().create_counter(
            ESCALATIONS_CLOSED, "escalations closed, by reason and how").add(
            1, {"reason": reason, "status": status})
