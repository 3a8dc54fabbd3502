"""When a transiently failed job runs again: backoff, Retry-After, the budget and the fallback."""

from __future__ import annotations

import random

import pytest

from vamu_tasks.errors import (
    ProviderTimeout,
    ProviderUnavailable,
    RateLimited,
    StoreUnavailable,
    TransientError,
    UpstreamApiError,
)
from vamu_tasks.retry_policy import Decision, RetryPolicy, decide

POLICY = RetryPolicy(max_retries=5, base_s=2.0, cap_s=120.0)
PROVIDER_ERRORS = [RateLimited(), ProviderUnavailable(), ProviderTimeout()]
NON_PROVIDER_ERRORS = [UpstreamApiError(), StoreUnavailable()]


def samples(retries: int, n: int = 200, seed: int = 7) -> list[float]:
    rng = random.Random(seed)
    return [POLICY.backoff(retries, rng) for _ in range(n)]


def decide_for(retries: int, error: TransientError, **kwargs: object) -> Decision:
    options: dict[str, object] = {
        "current_provider": "openai",
        "fallback": "anthropic",
        "on_fallback": False,
    }
    options.update(kwargs)
    return decide(POLICY, retries=retries, error=error, **options)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("retries", "low", "high"),
    [(0, 1, 2), (1, 2, 4), (2, 4, 8), (5, 32, 64), (6, 60, 120), (20, 60, 120)],
)
def test_backoff_stays_between_half_and_all_of_its_ceiling(
    retries: int, low: float, high: float
) -> None:
    waits = samples(retries)

    assert all(low <= wait <= high for wait in waits)
    # Jitter: the waits spread over the range instead of all landing on one value.
    assert max(waits) - min(waits) > (high - low) / 2


def test_backoff_grows_with_each_retry_until_the_cap() -> None:
    highest = [max(samples(retries)) for retries in range(10)]

    assert highest[:6] == sorted(highest[:6])
    assert all(wait <= POLICY.cap_s for wait in highest)
    assert min(samples(9)) >= POLICY.cap_s / 2


def test_backoff_is_reproducible_with_the_same_seed() -> None:
    assert samples(3, n=10, seed=42) == samples(3, n=10, seed=42)
    assert samples(3, n=10, seed=42) != samples(3, n=10, seed=43)


def test_retry_after_longer_than_the_backoff_is_honoured_as_a_minimum() -> None:
    wait = POLICY.countdown(0, RateLimited(retry_after=45.0), random.Random(1))

    assert wait == 45.0


def test_retry_after_shorter_than_the_backoff_does_not_shorten_it() -> None:
    rng_a, rng_b = random.Random(3), random.Random(3)

    wait = POLICY.countdown(4, RateLimited(retry_after=0.5), rng_a)

    assert wait == POLICY.backoff(4, rng_b)
    assert wait >= 16


def test_retry_after_beyond_the_cap_is_capped() -> None:
    wait = POLICY.countdown(0, RateLimited(retry_after=3600.0), random.Random(1))

    assert wait == POLICY.cap_s


def test_without_retry_after_the_countdown_is_the_backoff() -> None:
    rng_a, rng_b = random.Random(5), random.Random(5)

    assert POLICY.countdown(2, ProviderTimeout(), rng_a) == POLICY.backoff(2, rng_b)


@pytest.mark.parametrize("retries", range(5))
def test_failures_within_the_budget_are_retried_with_a_backoff(retries: int) -> None:
    decision = decide_for(retries, UpstreamApiError())

    assert decision.action == "retry"
    ceiling = min(POLICY.cap_s, POLICY.base_s * 2**retries)
    assert ceiling / 2 <= decision.countdown <= ceiling


def test_a_decision_to_retry_honours_retry_after() -> None:
    decision = decide_for(0, RateLimited(retry_after=30.0))

    assert decision == Decision("retry", 30.0)


@pytest.mark.parametrize("error", PROVIDER_ERRORS, ids=lambda e: type(e).__name__)
def test_a_provider_error_after_the_budget_switches_to_the_fallback(error: TransientError) -> None:
    decision = decide_for(POLICY.max_retries, error)

    assert decision == Decision("fallback", 0.0, "anthropic")


@pytest.mark.parametrize("error", NON_PROVIDER_ERRORS, ids=lambda e: type(e).__name__)
def test_an_api_or_database_outage_after_the_budget_gives_up_without_fallback(
    error: TransientError,
) -> None:
    decision = decide_for(POLICY.max_retries, error)

    assert decision.action == "give_up"


def test_without_a_fallback_provider_the_budget_ends_in_give_up() -> None:
    assert decide_for(POLICY.max_retries, RateLimited(), fallback=None).action == "give_up"


def test_a_fallback_that_is_the_current_provider_is_not_chosen() -> None:
    decision = decide_for(POLICY.max_retries, RateLimited(), current_provider="anthropic")

    assert decision.action == "give_up"


@pytest.mark.parametrize("error", PROVIDER_ERRORS, ids=lambda e: type(e).__name__)
def test_on_the_fallback_the_budget_is_fresh_and_then_it_gives_up(error: TransientError) -> None:
    on_fallback = {"current_provider": "anthropic", "on_fallback": True}
    # The switch itself was a Celery retry, so the fallback's first run has max_retries + 1.
    first = POLICY.max_retries + 1

    for retries in range(first, first + POLICY.max_retries):
        assert decide_for(retries, error, **on_fallback).action == "retry"
    final = decide_for(first + POLICY.max_retries, error, **on_fallback)

    assert final == Decision("give_up")


def simulate(error: TransientError) -> tuple[int, int]:
    """Retries granted to the primary and to the fallback, counting as Celery does.

    Celery's `task.retry` sends the task again with `request.retries + 1`, and the task layer
    switches to the fallback through `task.retry` too.
    """
    retries, on_fallback, granted = 0, False, {False: 0, True: 0}
    for _ in range(100):
        decision = decide_for(
            retries,
            error,
            current_provider="anthropic" if on_fallback else "openai",
            on_fallback=on_fallback,
        )
        if decision.action == "give_up":
            break
        if decision.action == "fallback":
            on_fallback = True
        else:
            granted[on_fallback] += 1
        retries += 1
    return granted[False], granted[True]


def test_a_failing_job_gets_its_budget_on_the_primary_and_gives_up_without_fallback() -> None:
    assert simulate(UpstreamApiError()) == (POLICY.max_retries, 0)


def test_the_fallback_gets_as_many_retries_as_the_primary_did() -> None:
    assert simulate(RateLimited()) == (POLICY.max_retries, POLICY.max_retries)
