"""Daily spend budgets in dollars, per user and per provider, that hold across every process.

Before a call, its worst case is reserved: the prompt's tokens (estimated) plus the whole
output allowance, at the model's price. After it, the reservation is settled to what the call
really cost. Reservations and spend live in Redis, so every worker and the bridge see one
count; a reservation whose worker died expires. A call that would take a budget over its limit
is not sent: `BudgetExceeded`, and the job fails as `budget_exceeded`. When only the
reservations of calls in flight are in the way, the call is retried shortly instead
(`RateLimited`), since those usually settle for far less than their worst case.

Amounts are kept in whole micro-dollars (the price table's precision), so Redis adds integers.
Days are UTC days.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import redis

from vamu_tasks.domain import (
    LLMRequest,
    LLMResult,
    StreamEvent,
    ToolsRequest,
    Usage,
)
from vamu_tasks.errors import BudgetExceeded, RateLimited
from vamu_tasks.llm.pricing import cost_usd
from vamu_tasks.llm.wrapper import CallKind, ProviderWrapper
from vamu_tasks.ports import LLMProvider

MICRO = Decimal(1_000_000)
# Characters per token for the worst case: lower than the usual 4, so the guess errs high.
CHARS_PER_TOKEN_WORST = 3
# A reservation outlives any call (the LLM timeout is far shorter): its worker has died.
RESERVATION_TTL_S = 900.0
KEY_TTL_S = 3 * 86_400
BUSY_RETRY_S = 2.0

# KEYS: per scope, its spend key, reservation set and amounts hash (3 keys a scope).
# ARGV: now (ms), reservation id, expiry (ms), then per scope its limit and the amount.
# Returns 0 when reserved in every scope; else, for the first scope it does not fit, its
# 1-based index when the day's spend alone leaves no room, minus it when only reservations of
# calls in flight are in the way (they may settle for less).
_RESERVE = """
local now = tonumber(ARGV[1])
local id = ARGV[2]
local expiry = tonumber(ARGV[3])
local scopes = #KEYS / 3
for s = 1, scopes do
  local spent_key, set_key, amounts_key = KEYS[3*s-2], KEYS[3*s-1], KEYS[3*s]
  local limit = tonumber(ARGV[2 + 2*s])
  local amount = tonumber(ARGV[3 + 2*s])
  local dead = redis.call('ZRANGEBYSCORE', set_key, '-inf', now)
  for _, gone in ipairs(dead) do redis.call('HDEL', amounts_key, gone) end
  redis.call('ZREMRANGEBYSCORE', set_key, '-inf', now)
  local held = 0
  for _, value in ipairs(redis.call('HVALS', amounts_key)) do held = held + tonumber(value) end
  local spent = tonumber(redis.call('GET', spent_key) or '0')
  if spent + amount > limit then return s end
  if spent + held + amount > limit then return -s end
end
for s = 1, scopes do
  local set_key, amounts_key = KEYS[3*s-1], KEYS[3*s]
  redis.call('ZADD', set_key, expiry, id)
  redis.call('HSET', amounts_key, id, ARGV[3 + 2*s])
end
return 0
"""


@dataclass(frozen=True)
class Reservation:
    id: str
    keys: tuple[tuple[str, str, str], ...]  # per scope: spend, reservations, amounts


@dataclass(frozen=True)
class Limits:
    """Dollars per UTC day; None is no budget."""

    user_usd_per_day: Decimal | None = None
    provider_usd_per_day: Decimal | None = None

    @property
    def any(self) -> bool:
        return self.user_usd_per_day is not None or self.provider_usd_per_day is not None


def micro(usd: Decimal) -> int:
    return int((usd * MICRO).to_integral_value())


class RedisSpendBudget:
    def __init__(
        self,
        client: redis.Redis,
        limits: Limits,
        *,
        prefix: str = "vamu:spend",
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._redis = client
        self.limits = limits
        self._prefix = prefix
        self._clock = clock
        self._reserve = client.register_script(_RESERVE)

    def _day(self) -> str:
        return datetime.fromtimestamp(self._clock(), UTC).strftime("%Y%m%d")

    def _scope_keys(self, scope: str, day: str) -> tuple[str, str, str]:
        base = f"{self._prefix}:{scope}:{day}"
        return f"{base}:spent", f"{base}:reserved", f"{base}:amounts"

    def _scopes(self, user_id: str | None, provider: str) -> list[tuple[str, Decimal]]:
        scopes = []
        if user_id is not None and self.limits.user_usd_per_day is not None:
            scopes.append((f"user:{user_id}", self.limits.user_usd_per_day))
        if self.limits.provider_usd_per_day is not None:
            scopes.append((f"provider:{provider}", self.limits.provider_usd_per_day))
        return scopes

    def reserve(self, user_id: str | None, provider: str, amount: Decimal) -> Reservation:
        """Hold `amount` against the user's and the provider's budgets, or `BudgetExceeded`."""
        day = self._day()
        scopes = self._scopes(user_id, provider)
        keys = tuple(self._scope_keys(scope, day) for scope, _ in scopes)
        reservation = Reservation(uuid.uuid4().hex, keys)
        if not scopes:
            return reservation
        now_ms = int(self._clock() * 1000)
        args: list[Any] = [now_ms, reservation.id, now_ms + int(RESERVATION_TTL_S * 1000)]
        for _scope, limit in scopes:
            args += [micro(limit), micro(amount)]
        over = int(self._reserve(keys=[k for triple in keys for k in triple], args=args))
        if over > 0:
            scope, limit = scopes[over - 1]
            raise BudgetExceeded(_over_message(scope, limit))
        if over < 0:
            scope, limit = scopes[-over - 1]
            # Calls in flight hold the rest of the day's budget for their worst case; they
            # usually settle for far less, so this call tries again shortly.
            raise RateLimited(
                f"{scope.replace(':', ' ', 1)}: the rest of today's ${limit} budget is held by "
                "calls in flight; retrying when they settle.",
                retry_after=BUSY_RETRY_S,
            )
        pipe = self._redis.pipeline()
        for triple in keys:
            for key in triple:
                pipe.expire(key, int(KEY_TTL_S))
        pipe.execute()
        return reservation

    def settle(self, reservation: Reservation, actual: Decimal) -> None:
        """Replace the reservation with what the call cost (0 for a call that failed)."""
        pipe = self._redis.pipeline()
        for spent, reserved, amounts in reservation.keys:
            pipe.zrem(reserved, reservation.id)
            pipe.hdel(amounts, reservation.id)
            if actual > 0:
                pipe.incrby(spent, micro(actual))
        pipe.execute()

    def charge(self, user_id: str | None, provider: str, actual: Decimal) -> None:
        """Count a cost already incurred without a reservation before it (a batch result)."""
        day = self._day()
        keys = tuple(self._scope_keys(scope, day) for scope, _ in self._scopes(user_id, provider))
        self.settle(Reservation(uuid.uuid4().hex, keys), actual)

    def over(self, user_id: str) -> str | None:
        """Why the user's day is spent (spend plus live reservations at the limit), or None."""
        limit = self.limits.user_usd_per_day
        if limit is None:
            return None
        spent, reserved, amounts = self._scope_keys(f"user:{user_id}", self._day())
        now_ms = int(self._clock() * 1000)
        live = set(self._redis.zrangebyscore(reserved, now_ms, "+inf"))
        held = sum(int(v) for k, v in self._redis.hgetall(amounts).items() if k in live)
        used = int(self._redis.get(spent) or 0) + held
        return _over_message(f"user:{user_id}", limit) if used >= micro(limit) else None

    def spent_today(self, scope: str) -> Decimal:
        spent, _, _ = self._scope_keys(scope, self._day())
        return Decimal(int(self._redis.get(spent) or 0)) / MICRO

    def reset_user(self, user_id: str) -> None:
        """Clear the user's day: its spend and its reservations (`vamu-tasks spend reset`)."""
        self._redis.delete(*self._scope_keys(f"user:{user_id}", self._day()))


def _over_message(scope: str, limit: Decimal) -> str:
    kind, name = scope.split(":", 1)
    setting = (
        "VAMU_BUDGET_USER_USD_PER_DAY" if kind == "user" else ("VAMU_BUDGET_PROVIDER_USD_PER_DAY")
    )
    return (
        f"{kind} {name!r} has spent its budget of ${limit} for today (UTC) ({setting}); "
        f"it resets at midnight UTC, or with `vamu-tasks spend reset --user`."
    )


def worst_case(model: str, request: LLMRequest | ToolsRequest) -> Decimal:
    """The most the call can cost: every prompt character a third of a token, plus the whole
    output allowance, all at the full input and output prices."""
    usage = Usage(request.prompt_chars() // CHARS_PER_TOKEN_WORST + 1, request.max_output_tokens)
    return cost_usd(model, usage) or Decimal(0)


class SpendBudgetedLLM(ProviderWrapper):
    """Reserves each call's worst case against the request's user and the provider first."""

    def __init__(self, inner: LLMProvider, budget: RedisSpendBudget) -> None:
        super().__init__(inner)
        self._budget = budget

    def _reserve(self, request: LLMRequest | ToolsRequest) -> Reservation:
        amount = worst_case(self.model, request)
        return self._budget.reserve(request.user_id, self.name, amount)

    def _settle(self, reservation: Reservation, model: str, usage: Usage) -> None:
        self._budget.settle(reservation, cost_usd(model, usage) or Decimal(0))

    def _call(
        self, kind: CallKind, request: LLMRequest | ToolsRequest, fn: Callable[[], Any]
    ) -> Any:
        reservation = self._reserve(request)
        try:
            result = fn()
        except BaseException:
            # A failed call is released, not charged: the vendors bill what they answered.
            self._budget.settle(reservation, Decimal(0))
            raise
        self._settle(reservation, result.model, result.usage)
        return result

    def stream(self, request: LLMRequest) -> Iterator[StreamEvent]:
        reservation = self._reserve(request)
        settled = False
        try:
            for event in self._inner.stream(request):
                if isinstance(event, LLMResult):
                    self._settle(reservation, event.model, event.usage)
                    settled = True
                yield event
        finally:
            if not settled:
                self._budget.settle(reservation, Decimal(0))
