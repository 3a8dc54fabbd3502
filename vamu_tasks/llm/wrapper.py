"""`ProviderWrapper`: the base of decorators around an `LLMProvider` (metrics, budgets)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any, Literal

from vamu_tasks.domain import LLMRequest, LLMResult, StreamEvent, ToolsRequest, ToolTurnResult
from vamu_tasks.ports import LLMProvider

CallKind = Literal["complete", "tools"]


class ProviderWrapper:
    """Passes the provider's identity, its calls and `close` through.

    A decorator overrides `_call`, which both plain calls (`complete` and
    `complete_with_tools`) go through, and `stream` when streams need it too.
    """

    def __init__(self, inner: LLMProvider) -> None:
        self._inner = inner

    @property
    def name(self) -> str:
        return self._inner.name

    @property
    def model(self) -> str:
        return self._inner.model

    def _call(
        self, kind: CallKind, request: LLMRequest | ToolsRequest, fn: Callable[[], Any]
    ) -> Any:
        return fn()

    def complete(self, request: LLMRequest) -> LLMResult:
        result: LLMResult = self._call("complete", request, lambda: self._inner.complete(request))
        return result

    def complete_with_tools(self, request: ToolsRequest) -> ToolTurnResult:
        result: ToolTurnResult = self._call(
            "tools", request, lambda: self._inner.complete_with_tools(request)
        )
        return result

    def stream(self, request: LLMRequest) -> Iterator[StreamEvent]:
        return self._inner.stream(request)

    def close(self) -> None:
        close = getattr(self._inner, "close", None)
        if callable(close):
            close()
