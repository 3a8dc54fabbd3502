"""A per-provider request and token budget per minute, shared by every process through Redis.

Set below the provider's own limits, it keeps sustained 429s away: a call over budget is not
sent; it fails at once as `RateLimited` with the seconds left in the minute, and the task layer
retries it with that countdown (no worker thread sleeps).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from typing import Any

import redis

from vamu_tasks.domain import (
    LLMRequest,
    LLMResult,
    StreamEvent,
    ToolsRequest,
    Usage,
)
from vamu_tasks.errors import RateLimited
from vamu_tasks.llm.wrapper import CallKind, ProviderWrapper
from vamu_tasks.ports import LLMProvider


class RedisRateBudget:
    """Fixed one-minute windows of requests and tokens per provider."""

    def __init__(
        self,
        client: redis.Redis,
        *,
        requests_per_minute: int | None,
        tokens_per_minute: int | None,
        prefix: str = "vamu:llm-budget",
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._redis = client
        self._rpm = requests_per_minute
        self._tpm = tokens_per_minute
        self._prefix = prefix
        self._clock = clock

    def _keys(self, provider: str) -> tuple[str, str, float]:
        now = self._clock()
        minute = int(now // 60)
        return (
            f"{self._prefix}:{provider}:{minute}:requests",
            f"{self._prefix}:{provider}:{minute}:tokens",
            60 - now % 60,
        )

    def take(self, provider: str, tokens: int) -> None:
        """Count one request of about `tokens`; `RateLimited` if that would break the budget."""
        requests_key, tokens_key, left = self._keys(provider)
        pipe = self._redis.pipeline()
        pipe.incr(requests_key)
        pipe.incrby(tokens_key, tokens)
        pipe.expire(requests_key, 120)
        pipe.expire(tokens_key, 120)
        count, used, _, _ = pipe.execute()
        over = (self._rpm is not None and int(count) > self._rpm) or (
            self._tpm is not None and int(used) > self._tpm
        )
        if over:
            undo = self._redis.pipeline()
            undo.decr(requests_key)
            undo.decrby(tokens_key, tokens)
            undo.execute()
            raise RateLimited(
                f"{provider} budget for this minute is spent (VAMU_LLM_RPM_LIMIT / "
                "VAMU_LLM_TPM_LIMIT); retrying when the next minute starts.",
                retry_after=left + 0.05,
            )

    def settle(self, provider: str, estimated: int, usage: Usage) -> None:
        """Replace the estimate with what the call really used."""
        actual = usage.input_tokens + usage.output_tokens
        if actual != estimated:
            _, tokens_key, _ = self._keys(provider)
            self._redis.incrby(tokens_key, actual - estimated)


def estimate_tokens(request: LLMRequest | ToolsRequest) -> int:
    """Prompt characters / 4 plus the output allowance: an upper-ish guess before the call."""
    return request.prompt_chars() // 4 + request.max_output_tokens


class BudgetedLLM(ProviderWrapper):
    """Wraps an `LLMProvider` so every call first takes its share of the shared budget."""

    def __init__(self, inner: LLMProvider, budget: RedisRateBudget) -> None:
        super().__init__(inner)
        self._budget = budget

    def _call(
        self, kind: CallKind, request: LLMRequest | ToolsRequest, fn: Callable[[], Any]
    ) -> Any:
        estimate = estimate_tokens(request)
        self._budget.take(self.name, estimate)
        result = fn()
        self._budget.settle(self.name, estimate, result.usage)
        return result

    def stream(self, request: LLMRequest) -> Iterator[StreamEvent]:
        estimate = estimate_tokens(request)
        self._budget.take(self.name, estimate)
        for event in self._inner.stream(request):
            if isinstance(event, LLMResult):
                self._budget.settle(self.name, estimate, event.usage)
            yield event
