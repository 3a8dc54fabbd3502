"""What an LLM call cost, from the per-model price table."""

from __future__ import annotations

from decimal import Decimal

import pytest

from vamu_tasks.domain import LLMResult, Usage
from vamu_tasks.llm.pricing import PRICES, cost_usd, price_for
from vamu_tasks.llm.spend import SpendMeter


def test_a_plain_call_costs_input_and_output_at_list_price() -> None:
    # gpt-5-mini: $0.25 per million input tokens, $2.00 per million output tokens.
    cost = cost_usd("gpt-5-mini", Usage(input_tokens=1_000_000, output_tokens=500_000))

    assert cost == Decimal("1.250000")


def test_cache_read_tokens_cost_the_cached_price() -> None:
    usage = Usage(input_tokens=10_000, output_tokens=0, cache_read_tokens=8_000)

    cost = cost_usd("gpt-5-mini", usage)

    # 2,000 plain x $0.25/M + 8,000 cached x $0.025/M
    assert cost == Decimal("0.000700")


def test_anthropic_cache_writes_cost_the_cache_write_price() -> None:
    usage = Usage(input_tokens=3_000, output_tokens=100, cache_write_tokens=2_000)

    cost = cost_usd("claude-sonnet-4-6", usage)

    # 1,000 plain x $3/M + 2,000 writes x $3.75/M + 100 out x $15/M
    assert cost == Decimal("0.012000")


def test_anthropic_one_hour_cache_writes_cost_twice_the_input_price() -> None:
    usage = Usage(
        input_tokens=3_000, cache_write_tokens=2_000, cache_write_1h_tokens=1_500
    )

    cost = cost_usd("claude-sonnet-4-6", usage)

    # 1,000 plain x $3/M + 500 5-minute writes x $3.75/M + 1,500 1-hour writes x $6/M
    assert cost == Decimal("0.013875")


def test_cache_writes_of_a_model_without_a_write_price_cost_the_input_price() -> None:
    with_writes = Usage(input_tokens=3_000, cache_write_tokens=2_000)
    plain = Usage(input_tokens=3_000)

    assert cost_usd("gpt-5", with_writes) == cost_usd("gpt-5", plain) == Decimal("0.003750")


def test_cost_is_rounded_to_a_millionth_of_a_dollar() -> None:
    cost = cost_usd("gpt-5-nano", Usage(input_tokens=1, output_tokens=1))

    assert cost == Decimal("0.000000")
    assert cost is not None and cost.as_tuple().exponent == -6


@pytest.mark.parametrize(
    ("snapshot", "family"),
    [
        ("gpt-5-mini-2025-08-07", "gpt-5-mini"),
        ("gpt-5-2025-08-07", "gpt-5"),
        ("gpt-4o-mini-2024-07-18", "gpt-4o-mini"),
        ("claude-sonnet-4-5-20250929", "claude-sonnet-4-5"),
        ("claude-sonnet-4-20250514", "claude-sonnet-4"),
    ],
)
def test_a_dated_snapshot_costs_what_its_model_family_costs(snapshot: str, family: str) -> None:
    assert price_for(snapshot) == PRICES[family]


@pytest.mark.parametrize("model", ["gpt-6", "llama-3-70b", "gpt-5mini", ""])
def test_a_model_missing_from_the_table_has_no_price(model: str) -> None:
    assert price_for(model) is None
    assert cost_usd(model, Usage(input_tokens=100, output_tokens=100)) is None


def test_the_offline_model_is_free() -> None:
    assert cost_usd("offline", Usage(input_tokens=10_000, output_tokens=10_000)) == 0


def test_the_spend_of_calls_to_an_unpriced_model_keeps_tokens_but_no_cost() -> None:
    meter = SpendMeter()
    usage = Usage(input_tokens=10, output_tokens=5)

    meter.record(LLMResult("a", "openai", "my-finetune", usage, "end"))
    meter.record(LLMResult("b", "openai", "my-finetune", usage, "end"))

    assert meter.spend.usage == Usage(input_tokens=20, output_tokens=10)
    assert meter.spend.cost_usd is None


def test_an_empty_meter_spends_nothing_on_no_provider() -> None:
    spend = SpendMeter().spend

    assert (spend.provider, spend.model, spend.usage, spend.cost_usd) == (None, None, Usage(), None)
