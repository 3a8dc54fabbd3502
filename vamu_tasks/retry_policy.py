"""When a transiently failed job runs again: backoff with jitter, Retry-After, budget, fallback."""

from __future__ import annotations

import random
from dataclasses import dataclass

from vamu_tasks.errors import ProviderTimeout, ProviderUnavailable, RateLimited, TransientError

# Errors a different provider could avoid; an API or database outage would follow us there.
PROVIDER_ERRORS = (RateLimited, ProviderUnavailable, ProviderTimeout)


@dataclass(frozen=True)
class RetryPolicy:
    max_retries: int = 5
    base_s: float = 2.0
    cap_s: float = 120.0

    def backoff(self, retries: int, rng: random.Random | None = None) -> float:
        """Exponential backoff with equal jitter (half fixed, half random), in seconds."""
        # The exponent is capped: a job may wait through thousands of retries (chat turns).
        ceiling = min(self.cap_s, self.base_s * 2 ** min(retries, 32))
        return (rng or random).uniform(ceiling / 2, ceiling)

    def countdown(
        self, retries: int, error: TransientError, rng: random.Random | None = None
    ) -> float:
        """Wait at least what the provider asked, never longer than the cap."""
        wait = self.backoff(retries, rng)
        if error.retry_after is not None:
            wait = max(wait, error.retry_after)
        return min(wait, self.cap_s)


@dataclass(frozen=True)
class Decision:
    action: str  # "retry", "fallback" or "give_up"
    countdown: float = 0.0
    provider: str | None = None


def decide(
    policy: RetryPolicy,
    *,
    retries: int,
    error: TransientError,
    current_provider: str | None,
    fallback: str | None,
    on_fallback: bool,
) -> Decision:
    """Retry within the budget; then switch to the fallback provider once with a fresh budget."""
    # Switching to the fallback is itself a Celery retry, hence the + 1.
    budget = policy.max_retries * 2 + 1 if on_fallback else policy.max_retries
    if retries < budget:
        return Decision("retry", policy.countdown(retries, error))
    can_fall_back = (
        fallback is not None
        and not on_fallback
        and fallback != current_provider
        and isinstance(error, PROVIDER_ERRORS)
    )
    if can_fall_back:
        return Decision("fallback", 0.0, fallback)
    return Decision("give_up")
