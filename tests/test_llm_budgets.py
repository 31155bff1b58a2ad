"""Every model call is metered: a spent budget stops a reviewer's and a manager's model too."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime

import pytest
from temporalio.exceptions import ApplicationError
from temporalio.testing import ActivityEnvironment

from activities.errors import BUDGET_EXCEEDED
from activities.org import OrgActivities
from models.io import Budgets
from models.review import Escalation, EscalationReason, EscalationRequest, ReviewRequest
from models.task import Metrics
from runtime.deps import Deps
from runtime.llm.metered import MeteredLLM
from runtime.org_store import OrgStore
from testkit.fake_llm import FakeLLM


def _org(deps: Deps) -> OrgActivities:
    return OrgActivities(OrgStore(deps.pool), deps.store, client=None,
                         llm=MeteredLLM(deps.llm, deps.store))


async def _spent(deps: Deps, task_id: str, tokens: int) -> None:
    await deps.store.record_usage(f"spent-{uuid.uuid4()}", task_id=task_id,
                                  subtask=f"{task_id}/a", model="fake-model",
                                  prompt_tokens=tokens, completion_tokens=0)


@pytest.mark.parametrize("scope", ["task", "subtask"])
async def test_a_spent_budget_stops_an_llm_reviewer_before_it_calls_the_model(
    scope: str, deps: Deps, llm: FakeLLM
) -> None:
    task_id = f"t-{uuid.uuid4()}"
    await _spent(deps, task_id, 1000)
    budgets = Budgets(task_tokens=500) if scope == "task" else Budgets(subtask_tokens=500)
    request = ReviewRequest(task_id=task_id, subtask_id=f"{task_id}/a", reviewer_id="boss",
                            round=0, output_preview="42", budgets=budgets)
    with pytest.raises(ApplicationError) as info:
        await ActivityEnvironment().run(_org(deps).review_with_llm, request)
    assert info.value.type == BUDGET_EXCEEDED
    assert info.value.non_retryable
    assert llm.requests == []


async def test_a_spent_budget_stops_a_managers_model_decision(
    deps: Deps, llm: FakeLLM
) -> None:
    task_id = f"t-{uuid.uuid4()}"
    await _spent(deps, task_id, 1000)
    escalation = Escalation(subtask_id=f"{task_id}/a", task_id=task_id, seq=0,
                            reason=EscalationReason.FAILED, error="boom", holder="boss",
                            level=0, chain=["boss"], opened_at=datetime.now(UTC))
    request = EscalationRequest(escalation=escalation, budgets=Budgets(task_tokens=500))
    with pytest.raises(ApplicationError) as info:
        await ActivityEnvironment().run(_org(deps).decide_escalation_with_llm, request)
    assert info.value.type == BUDGET_EXCEEDED
    assert llm.requests == []


async def test_within_its_budget_an_llm_reviewer_is_metered(deps: Deps, llm: FakeLLM) -> None:
    task_id = f"t-{uuid.uuid4()}"
    llm.script('{"decision": "approve"}')
    request = ReviewRequest(task_id=task_id, subtask_id=f"{task_id}/a", reviewer_id="boss",
                            round=0, output_preview="42",
                            budgets=Budgets(task_tokens=100_000, subtask_tokens=100_000))
    verdict = await ActivityEnvironment().run(_org(deps).review_with_llm, request)
    assert verdict.decision.value == "approve"
    assert len(llm.requests) == 1
    assert await deps.store.tokens_used(task_id) > 0


def test_metrics_add_in_place() -> None:
    total = Metrics(prompt_tokens=1, completion_tokens=2, tokens_used=3, cost_usd=0.5,
                    time_spent_s=1.0, files_modified=["a"])
    total.add(Metrics(prompt_tokens=10, completion_tokens=20, tokens_used=30, cost_usd=0.25,
                      time_spent_s=2.0, files_modified=["b"]))
    assert total == Metrics(prompt_tokens=11, completion_tokens=22, tokens_used=33,
                            cost_usd=0.75, time_spent_s=3.0, files_modified=["a", "b"])
