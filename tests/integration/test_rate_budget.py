"""The shared per-provider budget: counted in Redis across processes, refusing without sleeping."""

from __future__ import annotations

import time
import uuid

import pytest
import redis

from vamu_tasks.domain import LLMRequest, Message, Usage
from vamu_tasks.errors import RateLimited
from vamu_tasks.llm.ratelimit import BudgetedLLM, RedisRateBudget
from vamu_tasks.testing.memory import ScriptedLLM


@pytest.fixture
def client(app_redis_url):
    client = redis.Redis.from_url(app_redis_url)
    yield client
    client.close()


def budget(client, clock, **limits) -> RedisRateBudget:
    return RedisRateBudget(client, prefix=f"test-budget-{uuid.uuid4().hex[:8]}", clock=clock,
                           **limits)


REQUEST = LLMRequest("system", (Message("user", "x" * 400),), max_output_tokens=100)


def test_requests_over_the_minute_budget_are_refused_with_the_seconds_left(client):
    now = [60 * 1000 + 45.0]
    shared = budget(client, lambda: now[0], requests_per_minute=2, tokens_per_minute=None)
    # Two processes, one budget: each wraps its own provider around the same Redis counters.
    first = BudgetedLLM(ScriptedLLM(["a", "b"]), shared)
    second = BudgetedLLM(ScriptedLLM(["c"]), shared)

    first.complete(REQUEST)
    second.complete(REQUEST)
    started = time.monotonic()
    with pytest.raises(RateLimited) as refused:
        first.complete(REQUEST)

    assert time.monotonic() - started < 0.5, "a refused call must not wait"
    assert 15.0 <= refused.value.retry_after <= 15.1
    now[0] += 16  # the next minute
    assert first.complete(REQUEST).text == "b"


def test_the_token_budget_counts_what_calls_really_used(client):
    now = [120 * 1000 + 1.0]
    shared = budget(client, lambda: now[0], requests_per_minute=None, tokens_per_minute=1000)
    llm = BudgetedLLM(ScriptedLLM(["a", "b", "c"], usage=Usage(300, 100)), shared)

    llm.complete(REQUEST)  # estimate 201 tokens, settled to 400 used
    llm.complete(REQUEST)  # 800 used

    with pytest.raises(RateLimited):
        llm.complete(REQUEST)  # 800 + estimate 201 > 1000
