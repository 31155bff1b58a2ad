"""What model calls cost: a price table per model (built in, or from a file) and the sum."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

from models.usage import Price, PriceTable, UsageError
from runtime.documents import load_document
from runtime.llm.tokens import base_name, by_model, warn_once


class PriceTableError(UsageError):
    """A price file could not be read or did not validate; `errors` says where and why."""

    def __init__(self, errors: list[str]) -> None:
        self.errors = errors
        super().__init__("price file: " + "; ".join(errors))


# USD per 1M tokens (input / output), OpenAI list prices; a price file overrides them.
DEFAULT_PRICES: dict[str, Price] = {
    name: Price(input=i, output=o) for name, (i, o) in {
        "gpt-4o-mini": (0.15, 0.60), "gpt-4o": (2.50, 10.00),
        "gpt-4.1": (2.00, 8.00), "gpt-4.1-mini": (0.40, 1.60), "gpt-4.1-nano": (0.10, 0.40),
        "gpt-4-turbo": (10.00, 30.00), "gpt-4": (30.00, 60.00), "gpt-3.5-turbo": (0.50, 1.50),
        "o1": (15.00, 60.00), "o3": (2.00, 8.00), "o3-mini": (1.10, 4.40), "o4-mini": (1.10, 4.40),
    }.items()
}

def load_prices(path: Path | str, *, with_defaults: bool = True) -> dict[str, Price]:
    """Return the price table in a YAML or JSON file, over the defaults unless told not to.

    The file maps model names to ``{input: USD per 1M prompt tokens, output: USD per
    1M completion tokens}``.

    Raises:
        PriceTableError: the file is missing, does not parse, or an entry is invalid;
            the message names the file and every bad entry.
    """
    table = load_document(path, PriceTable, what="price file", error=PriceTableError).root
    table = {base_name(k): v for k, v in table.items()}
    return {**DEFAULT_PRICES, **table} if with_defaults else table


def cost_usd(
    model: str,
    prompt_tokens: int,
    completion_tokens: int,
    prices: Mapping[str, Price] | None = None,
) -> float:
    """Return what the tokens cost in USD; 0.0 (warned once) for a model without a price."""
    price: Price | None = by_model(DEFAULT_PRICES if prices is None else prices, model)
    if price is None:
        warn_once(("price", model), "no price known for model %s; counting its cost as 0", model)
        return 0.0
    return (prompt_tokens * price.input + completion_tokens * price.output) / 1_000_000
