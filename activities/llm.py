"""The splitter: the model turns a job into a plan, with one repair round trip."""

from __future__ import annotations

import logging
from typing import Any

from temporalio import activity
from temporalio.exceptions import ApplicationError

from activities.boundary import boundary
from activities.errors import INVALID_PLAN
from models.io import Budgets, SplitInput, SplitResult
from models.payload import PayloadTooLarge, check_payload, cut_text, megabytes
from models.plan import InvalidPlan, Plan
from models.task import Metrics
from runtime.documents import parse_plan_text
from runtime.llm.metered import Charge, MeteredLLM
from runtime.llm.prompts import REPAIR, SPLIT_SYSTEM
from runtime.tools.registry import ToolRegistry

log = logging.getLogger(__name__)


def usage_key(n: int = 1) -> str:
    """Return the key of this activity attempt's `n`th model call: the same on a replay.

    Every attempt's calls are spent (and kept), so the attempt is part of the key.
    """
    info = activity.info()
    return f"{info.workflow_id}/{info.workflow_run_id}/{info.activity_id}/{info.attempt}/{n}"


class LLMActivities:
    """The splitter; `llm` says "no endpoint configured" when there is none."""

    def __init__(self, *, llm: MeteredLLM, tools: ToolRegistry) -> None:
        self.llm = llm
        self.tools = tools  # asked at each split: MCP servers come up while the worker runs

    def _plan_errors(self, text: str, max_steps: int) -> tuple[Plan | None, list[str]]:
        try:
            plan = parse_plan_text(text, max_steps=max_steps, tools=self.tools.known())
            check_payload(plan, what="the plan")
        except InvalidPlan as e:
            return None, e.errors
        except PayloadTooLarge as e:
            return None, [f"{e.what} is {megabytes(e.size)}, more than {megabytes(e.limit)}: "
                          f"the biggest part is {e.biggest}; make it smaller (a code step "
                          "computes or reads its data instead of holding it)"]
        return plan, []

    @activity.defn(name="split_task")
    @boundary
    async def split_task(self, inp: SplitInput) -> SplitResult:
        """Ask the model for a plan; one repair round trip; InvalidPlan if it still fails."""
        model = self.llm.model
        messages: list[dict[str, Any]] = [
            {
                "role": "system",
                "content": SPLIT_SYSTEM.format(
                    tools=", ".join(self.tools.menu()) or "none", max_steps=inp.max_steps
                ) + (f"\n\n{inp.manager_context}" if inp.manager_context else ""),
            },
            {"role": "user", "content": inp.prompt},
        ]
        metrics = Metrics()
        errors: list[str] = []
        for round_no in (1, 2):
            charge = Charge(key=usage_key(round_no), task_id=inp.task_id, purpose="split",
                            budgets=Budgets(task_tokens=inp.token_budget))
            reply, spent = await self.llm.call(messages, charge,
                                               schema=Plan.model_json_schema())
            metrics.add(spent)
            plan, errors = self._plan_errors(reply.text, inp.max_steps)
            await self.llm.store.record_llm_output(
                charge.key, task_id=inp.task_id, subtask=None, purpose="split", model=model,
                raw=reply.text, valid=plan is not None, errors=errors,
            )
            if plan is not None:
                return SplitResult(plan=plan, rounds=round_no, metrics=metrics)
            log.warning("split round %d gave an invalid plan: %s", round_no, errors)
            messages += [
                {"role": "assistant", "content": reply.text},
                {"role": "user", "content": REPAIR.format(errors="\n".join(errors))},
            ]
        errors = [cut_text(e, 1000) for e in errors[:50]]  # a failure travels through history
        raise ApplicationError(
            cut_text("the model's plan is invalid after one repair round: " + "; ".join(errors)),
            {"errors": errors},
            type=INVALID_PLAN,
            non_retryable=True,
        )
