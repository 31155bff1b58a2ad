"""Token accounting: prices per model, token budgets, usage totals.

Errors (plain exceptions; ``activities.errors`` turns them into non-retryable
ApplicationErrors of the same names)::

    UsageError                 base: tokens or money, never transient, never retried
    ├── BudgetExceeded         a task or subtask would use more tokens than its budget
    ├── ContextOverflow        a prompt cannot fit the model's context (runtime.llm.context)
    └── PriceTableError        a price file is unusable (runtime.llm.prices)
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field, RootModel


class UsageError(Exception):
    """A token or cost limit was hit, or its configuration is wrong; retrying cannot help."""


class BudgetExceeded(UsageError):
    """Spending `more` tokens on top of `used` would pass the budget's `limit`."""

    def __init__(self, *, used: int, more: int, limit: int, scope: str = "") -> None:
        self.used = used
        self.more = more
        self.limit = limit
        what = f"{scope} token budget" if scope else "token budget"
        super().__init__(
            f"{what} exceeded: {used} used + {more} more = {used + more} > {limit}"
        )


class Price(BaseModel):
    """What one model costs, in US dollars per million tokens."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    input: float = Field(ge=0, description="USD per 1M prompt tokens")
    output: float = Field(ge=0, description="USD per 1M completion tokens")


class PriceTable(RootModel[dict[str, Price]]):
    """A price file: model name -> what it costs."""


class Usage(BaseModel):
    """Tokens spent and what they cost."""

    prompt_tokens: int = Field(0, ge=0)
    completion_tokens: int = Field(0, ge=0)
    cost_usd: float = Field(0.0, ge=0)

    @property
    def total_tokens(self) -> int:
        return self.prompt_tokens + self.completion_tokens


class Budget(BaseModel):
    """A token budget for a task or subtask; `max_tokens=None` means unlimited.

    A plain model, so it can travel in workflow inputs and be checked in workflow code.
    """

    model_config = ConfigDict(frozen=True)

    max_tokens: int | None = Field(None, ge=0)
    scope: str = ""  # "task", "subtask ..."; only for the error message

    def remaining(self, used: int) -> int | None:
        """Return the tokens still allowed after `used` (never negative), None if unlimited."""
        if self.max_tokens is None:
            return None
        return max(0, self.max_tokens - used)

    def check(self, used: int, more: int = 0) -> None:
        """Return if `used + more` tokens fit the budget; raise BudgetExceeded if not."""
        if self.max_tokens is not None and used + more > self.max_tokens:
            raise BudgetExceeded(used=used, more=more, limit=self.max_tokens, scope=self.scope)
