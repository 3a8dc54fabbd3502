"""Per-model token prices, because neither SDK reports what a call cost."""

from __future__ import annotations

import re
from collections.abc import Collection
from dataclasses import dataclass
from decimal import Decimal

from vamu_tasks.domain import Usage

PER_MILLION = Decimal(1_000_000)


@dataclass(frozen=True)
class Price:
    """US dollars per million tokens."""

    input: Decimal
    cache_read: Decimal
    output: Decimal
    # None: cache writes cost the plain input price (OpenAI bills no cache writes).
    cache_write: Decimal | None = None
    # Anthropic's 1-hour writes: twice the input price (5-minute writes are 1.25 times).
    cache_write_1h: Decimal | None = None


def _p(inp: str, read: str, out: str, write: str | None = None) -> Price:
    write_1h = str(Decimal(inp) * 2) if write else None
    return Price(
        Decimal(inp),
        Decimal(read),
        Decimal(out),
        Decimal(write) if write else None,
        Decimal(write_1h) if write_1h else None,
    )


# Public list prices; update with the vendors' pages. Dated snapshots match by prefix.
PRICES: dict[str, Price] = {
    "gpt-5": _p("1.25", "0.125", "10.00"),
    "gpt-5-mini": _p("0.25", "0.025", "2.00"),
    "gpt-5-nano": _p("0.05", "0.005", "0.40"),
    "gpt-4.1": _p("2.00", "0.50", "8.00"),
    "gpt-4.1-mini": _p("0.40", "0.10", "1.60"),
    "gpt-4o": _p("2.50", "1.25", "10.00"),
    "gpt-4o-mini": _p("0.15", "0.075", "0.60"),
    "claude-opus-4-1": _p("15.00", "1.50", "75.00", "18.75"),
    "claude-opus-4-6": _p("5.00", "0.50", "25.00", "6.25"),
    "claude-opus-4-5": _p("5.00", "0.50", "25.00", "6.25"),
    "claude-sonnet-4-6": _p("3.00", "0.30", "15.00", "3.75"),
    "claude-sonnet-4-5": _p("3.00", "0.30", "15.00", "3.75"),
    "claude-sonnet-4": _p("3.00", "0.30", "15.00", "3.75"),
    "claude-haiku-4-5": _p("1.00", "0.10", "5.00", "1.25"),
    "offline": _p("0", "0", "0"),
}


# The models each vendor serves: the table above is the list, so a model we cannot price is also
# one the fake LLM refuses as the vendor would refuse an unknown one.
OPENAI_MODELS = frozenset(name for name in PRICES if name.startswith("gpt-"))
ANTHROPIC_MODELS = frozenset(name for name in PRICES if name.startswith("claude-"))
# Dated snapshots: `gpt-5-mini-2025-08-07` (OpenAI), `claude-sonnet-4-5-20250929` (Anthropic).
_SNAPSHOT = re.compile(r"-(\d{4}-\d{2}-\d{2}|\d{8})$")


def is_served(models: Collection[str], model: str) -> bool:
    """Whether `model`, or the model it is a dated snapshot of, is one of `models`."""
    return model in models or _SNAPSHOT.sub("", model) in models


def price_for(model: str) -> Price | None:
    """The price of `model`; dated snapshots (`gpt-5-mini-2025-08-07`) match by longest prefix."""
    if model in PRICES:
        return PRICES[model]
    candidates = [name for name in PRICES if model.startswith(name + "-")]
    return PRICES[max(candidates, key=len)] if candidates else None


# Both vendors' batch tiers (OpenAI's Batch API, Anthropic's Message Batches) bill every token
# at half the synchronous price, cache reads and writes included.
BATCH_DISCOUNT = Decimal("0.5")


def cost_usd(model: str, usage: Usage, *, batch: bool = False) -> Decimal | None:
    """What the call cost, or None for a model missing from the table; `batch` at batch prices."""
    price = price_for(model)
    if price is None:
        return None
    write_price = price.cache_write if price.cache_write is not None else price.input
    write_1h_price = price.cache_write_1h if price.cache_write_1h is not None else write_price
    plain_input = usage.input_tokens - usage.cache_read_tokens - usage.cache_write_tokens
    writes_5m = usage.cache_write_tokens - usage.cache_write_1h_tokens
    total = (
        max(plain_input, 0) * price.input
        + usage.cache_read_tokens * price.cache_read
        + max(writes_5m, 0) * write_price
        + usage.cache_write_1h_tokens * write_1h_price
        + usage.output_tokens * price.output
    )
    if batch:
        total *= BATCH_DISCOUNT
    return (total / PER_MILLION).quantize(Decimal("0.000001"))
