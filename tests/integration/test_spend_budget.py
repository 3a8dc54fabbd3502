"""Daily spend budgets in dollars, held in Redis: reserve the worst case, settle to the cost."""

from __future__ import annotations

import threading
import uuid
from decimal import Decimal

import pytest
import redis

from vamu_tasks.domain import LLMRequest, Message, Usage
from vamu_tasks.errors import BudgetExceeded, RateLimited
from vamu_tasks.llm.pricing import cost_usd
from vamu_tasks.llm.spend_budget import (
    RESERVATION_TTL_S,
    Limits,
    RedisSpendBudget,
    SpendBudgetedLLM,
    worst_case,
)
from vamu_tasks.testing.memory import ScriptedLLM

MODEL = "gpt-5-mini"
REQUEST = LLMRequest("system", (Message("user", "x" * 3000),), max_output_tokens=500,
                     user_id="u-ada")
# ScriptedLLM's default usage: 100 input and 50 output tokens.
CALL_COST = cost_usd(MODEL, Usage(100, 50))
WORST = worst_case(MODEL, REQUEST)


@pytest.fixture
def client(app_redis_url):
    client = redis.Redis.from_url(app_redis_url, decode_responses=True)
    prefix = f"test-spend-{uuid.uuid4().hex[:8]}"
    client.prefix = prefix  # type: ignore[attr-defined]
    yield client
    for key in client.scan_iter(f"{prefix}:*"):
        client.delete(key)
    client.close()


def budget(client, *, user: str | None = None, provider: str | None = None,
           clock=None) -> RedisSpendBudget:
    limits = Limits(Decimal(user) if user else None, Decimal(provider) if provider else None)
    kwargs = {"clock": clock} if clock else {}
    return RedisSpendBudget(client, limits, prefix=client.prefix, **kwargs)


def llm(shared: RedisSpendBudget, answers: int = 50) -> SpendBudgetedLLM:
    return SpendBudgetedLLM(ScriptedLLM(["ok"] * answers, model=MODEL), shared)


def test_the_worst_case_is_the_whole_output_allowance_and_a_generous_prompt_count():
    assert CALL_COST is not None and WORST > CALL_COST
    assert WORST == cost_usd(MODEL, Usage(3006 // 3 + 1, 500))


def test_a_call_is_settled_to_what_it_cost_not_what_was_reserved(client):
    shared = budget(client, user="1.00")

    llm(shared).complete(REQUEST)

    assert shared.spent_today("user:u-ada") == CALL_COST


def test_a_call_the_days_spend_leaves_no_room_for_is_refused_before_it_is_sent(client):
    shared = budget(client, user=str(WORST + CALL_COST))  # room for one call's worst case
    provider = llm(shared)
    provider.complete(REQUEST)
    client.incrby(f"{client.prefix}:user:u-ada:{shared._day()}:spent", 10**6)  # $1 elsewhere

    with pytest.raises(BudgetExceeded, match="VAMU_BUDGET_USER_USD_PER_DAY") as refused:
        provider.complete(REQUEST)

    assert refused.value.error_kind == "budget_exceeded"
    assert len(provider._inner.requests) == 1  # type: ignore[attr-defined]


def test_a_call_held_back_only_by_calls_in_flight_is_retried_shortly(client):
    shared = budget(client, user=str(WORST * 3 / 2))
    held = shared.reserve("u-ada", "scripted", WORST)

    with pytest.raises(RateLimited, match="held by calls in flight") as busy:
        llm(shared).complete(REQUEST)
    shared.settle(held, Decimal("0.000010"))
    llm(shared).complete(REQUEST)

    assert busy.value.retry_after == 2.0


def test_a_dead_workers_reservation_expires(client):
    now = [1_800_000_000.0]
    shared = budget(client, user=str(WORST * 3 / 2), clock=lambda: now[0])
    shared.reserve("u-ada", "scripted", WORST)  # its worker dies: never settled

    with pytest.raises(RateLimited):
        llm(shared).complete(REQUEST)
    now[0] += RESERVATION_TTL_S + 1
    llm(shared).complete(REQUEST)

    assert shared.spent_today("user:u-ada") == CALL_COST


def test_the_provider_budget_counts_every_users_calls(client):
    shared = budget(client, provider=str(WORST + CALL_COST))
    provider = llm(shared)
    provider.complete(REQUEST)
    other_user = LLMRequest("system", REQUEST.messages, max_output_tokens=500, user_id="u-bo")
    client.incrby(f"{client.prefix}:provider:scripted:{shared._day()}:spent", 10**6)

    with pytest.raises(BudgetExceeded, match="VAMU_BUDGET_PROVIDER_USD_PER_DAY"):
        provider.complete(other_user)


def test_over_says_when_a_users_day_is_spent_and_reset_clears_it(client):
    shared = budget(client, user="0.000500")
    assert shared.over("u-ada") is None
    client.incrby(f"{client.prefix}:user:u-ada:{shared._day()}:spent", 500)

    assert shared.over("u-ada") is not None
    shared.reset_user("u-ada")
    assert shared.over("u-ada") is None


def test_a_failed_call_releases_its_reservation_and_costs_nothing(client):
    from vamu_tasks.errors import ProviderUnavailable

    shared = budget(client, user=str(WORST * 3 / 2))
    failing = SpendBudgetedLLM(ScriptedLLM([ProviderUnavailable("down")], model=MODEL), shared)

    with pytest.raises(ProviderUnavailable):
        failing.complete(REQUEST)
    llm(shared).complete(REQUEST)  # the reservation is gone: room for the next one

    assert shared.spent_today("user:u-ada") == CALL_COST


def test_a_stream_settles_when_its_final_result_arrives(client):
    shared = budget(client, user="1.00")

    events = list(llm(shared).stream(REQUEST))

    assert events[-1].text == "ok"
    assert shared.spent_today("user:u-ada") == CALL_COST


def test_twenty_concurrent_calls_never_spend_past_the_budget(client):
    # Each call really costs its worst case here, the budget is five of them.
    usage = Usage(3006 // 3 + 1, 500)
    limit = WORST * 5
    spent = []

    def one_call() -> None:
        provider = SpendBudgetedLLM(ScriptedLLM(["ok"], model=MODEL, usage=usage), shared)
        try:
            provider.complete(REQUEST)
            spent.append(WORST)
        except (BudgetExceeded, RateLimited):
            pass

    shared = budget(client, user=str(limit))
    threads = [threading.Thread(target=one_call) for _ in range(20)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    assert sum(spent) <= limit
    assert shared.spent_today("user:u-ada") == sum(spent)
    assert len(spent) == 5
