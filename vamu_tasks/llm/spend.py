"""`SpendMeter`: adds up the tokens and cost of every LLM call a job attempt makes."""

from __future__ import annotations

from decimal import Decimal

from vamu_tasks.domain import LLMResult, Spend, Usage
from vamu_tasks.llm.pricing import cost_usd


class SpendMeter:
    def __init__(self) -> None:
        self._provider: str | None = None
        self._model: str | None = None
        self._usage = Usage()
        self._cost: Decimal | None = None
        self.calls = 0

    def record(self, result: LLMResult) -> None:
        self.record_usage(result.provider, result.model, result.usage)

    def record_usage(self, provider: str, model: str, usage: Usage, *, batch: bool = False) -> None:
        self.calls += 1
        self._provider, self._model = provider, model
        self._usage = self._usage + usage
        cost = cost_usd(model, usage, batch=batch)
        if cost is not None:
            self._cost = (self._cost or Decimal(0)) + cost

    @property
    def spend(self) -> Spend:
        return Spend(self._provider, self._model, self._usage, self._cost)
