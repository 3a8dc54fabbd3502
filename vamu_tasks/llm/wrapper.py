"""`ProviderWrapper`: the base of decorators around an `LLMProvider` (metrics, budgets)."""

from __future__ import annotations

from vamu_tasks.ports import LLMProvider


class ProviderWrapper:
    """Passes the provider's identity and `close` through; subclasses wrap the calls."""

    def __init__(self, inner: LLMProvider) -> None:
        self._inner = inner

    @property
    def name(self) -> str:
        return self._inner.name

    @property
    def model(self) -> str:
        return self._inner.model

    def close(self) -> None:
        close = getattr(self._inner, "close", None)
        if callable(close):
            close()
