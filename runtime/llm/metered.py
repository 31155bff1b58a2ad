"""The one way BeesTown calls a model: budget checked, prompt fitted, usage and cost kept.

Every model call (the splitter, agent turns, code writing, LLM review and escalation
decisions) goes through `MeteredLLM.call`, which, in this order:

1. fits the prompt under the model's context (`runtime.llm.context.fit_messages`),
2. checks the task's and subtask's token budgets against what the store says was spent
   plus this prompt (`BudgetExceeded` before a token is spent),
3. calls the model,
4. records the reply's usage and cost under `Charge.key`: the same key on a replay or a
   re-delivered result writes nothing twice (the caller makes it unique per call),
5. tells `on_usage` (the worker's metrics) the model and what the call spent.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from models.io import Budgets
from models.task import Metrics
from models.usage import Budget, Price
from runtime.llm.client import LLM, Reply, require_llm
from runtime.llm.context import context_limit, fit_messages
from runtime.llm.prices import cost_usd
from runtime.llm.tokens import count_messages
from runtime.store import Store

REPLY_RESERVE = 1024  # tokens kept free for the model's answer

# Told the model's name and a call's tokens and cost once the call is recorded.
UsageObserver = Callable[[str, Metrics], None]


def root_task(task_id: str) -> str:
    """Return the top task of a (possibly nested) task id: the part before the first '/'."""
    return task_id.split("/", 1)[0]


@dataclass(frozen=True)
class Charge:
    """Whom a model call is charged to, under which key, and the budgets it must fit.

    `subtask_id` None charges the task alone (the splitter). A nested task (a manager's
    decomposition) spends from its root task's budget.
    """

    key: str
    task_id: str
    purpose: str
    subtask_id: str | None = None
    budgets: Budgets = field(default_factory=Budgets)
    scope: str = "subtask"  # names the subtask budget in the error message
    agent_id: str | None = None


class MeteredLLM:
    """A model client with the store that meters it; `llm` None: calls say how to configure."""

    def __init__(
        self,
        llm: LLM | None,
        store: Store,
        *,
        prices: Mapping[str, Price] | None = None,
        context_override: int | None = None,
        hint: str = "",
        on_usage: UsageObserver | None = None,
    ) -> None:
        self.llm = llm
        self.store = store
        self.prices = prices
        self.context_override = context_override
        self.hint = hint
        self.on_usage = on_usage

    @property
    def model(self) -> str:
        """The model's name (raises LLMNotConfigured when there is none)."""
        return require_llm(self.llm, hint=self.hint).model

    def context_limit(self) -> int:
        return context_limit(self.model, override=self.context_override)

    async def check_budgets(self, charge: Charge, more: int = 0) -> None:
        """Raise BudgetExceeded if `more` tokens would pass the task's or subtask's budget."""
        budgets = charge.budgets
        if budgets.task_tokens is not None:
            used = await self.store.tokens_used(root_task(charge.task_id))
            Budget(max_tokens=budgets.task_tokens, scope="task").check(used, more)
        if budgets.subtask_tokens is not None and charge.subtask_id is not None:
            used = await self.store.tokens_used(charge.task_id, charge.subtask_id)
            Budget(max_tokens=budgets.subtask_tokens, scope=charge.scope).check(used, more)

    async def call(
        self,
        messages: list[dict[str, Any]],
        charge: Charge,
        *,
        tools: list[dict[str, Any]] | None = None,
        schema: dict[str, Any] | None = None,
    ) -> tuple[Reply, Metrics]:
        """Fit, check the budgets, call the model, record usage; return the reply and its cost."""
        llm = require_llm(self.llm, hint=self.hint)
        fitted = fit_messages(messages, model=llm.model, limit=self.context_limit(),
                              reserve_for_reply=REPLY_RESERVE, tools=tools)
        await self.check_budgets(charge, more=count_messages(fitted, llm.model, tools=tools))
        reply = await llm.complete(fitted, tools=tools, schema=schema)
        cost = cost_usd(llm.model, reply.prompt_tokens, reply.completion_tokens, self.prices)
        await self.store.record_usage(
            charge.key, task_id=charge.task_id, subtask=charge.subtask_id, model=llm.model,
            prompt_tokens=reply.prompt_tokens, completion_tokens=reply.completion_tokens,
            cost_usd=cost, purpose=charge.purpose, agent_id=charge.agent_id,
        )
        spent = Metrics(
            prompt_tokens=reply.prompt_tokens, completion_tokens=reply.completion_tokens,
            tokens_used=reply.prompt_tokens + reply.completion_tokens, cost_usd=cost,
        )
        if self.on_usage is not None:
            self.on_usage(llm.model, spent)
        return reply, spent
