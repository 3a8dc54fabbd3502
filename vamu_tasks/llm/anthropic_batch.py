"""`AnthropicBatches`: Anthropic's Message Batches (`/v1/messages/batches`).

Each request's `params` are `AnthropicProvider`'s body for the same call, and each `succeeded`
result is read as its synchronous answer would be
(docs.anthropic.com/en/docs/build-with-claude/batch-processing, /en/api/creating-message-batches).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any

import anthropic
import httpx2

from vamu_tasks.domain import BatchAnswer, BatchRequest, BatchState
from vamu_tasks.errors import VamuError
from vamu_tasks.llm.anthropic import AnthropicProvider, map_anthropic_error, map_anthropic_status


class AnthropicBatches:
    def __init__(self, provider: AnthropicProvider) -> None:
        self._provider = provider
        self._client = provider.client
        self.name = provider.name
        self.model = provider.model

    def submit(self, requests: Sequence[BatchRequest]) -> str:
        items: list[Any] = [
            {"custom_id": item.custom_id, "params": self._provider.request_body(item.request)}
            for item in requests
        ]
        try:
            batch = self._client.messages.batches.create(requests=items)
        except (anthropic.AnthropicError, httpx2.TransportError) as exc:
            raise map_anthropic_error(exc) from exc
        return batch.id

    def state(self, batch_id: str) -> BatchState:
        try:
            batch = self._client.messages.batches.retrieve(batch_id)
        except (anthropic.AnthropicError, httpx2.TransportError) as exc:
            raise map_anthropic_error(exc) from exc
        return BatchState(batch.processing_status, batch.processing_status == "ended")

    def answers(self, batch_id: str) -> Iterator[BatchAnswer]:
        try:
            entries = list(self._client.messages.batches.results(batch_id))
        except (anthropic.AnthropicError, httpx2.TransportError) as exc:
            raise map_anthropic_error(exc) from exc
        for entry in entries:
            yield self._answer(entry.custom_id, entry.result)

    def cancel(self, batch_id: str) -> None:
        try:
            self._client.messages.batches.cancel(batch_id)
        except (anthropic.AnthropicError, httpx2.TransportError) as exc:
            raise map_anthropic_error(exc) from exc

    def _answer(self, custom_id: str, result: Any) -> BatchAnswer:
        if result.type == "succeeded":
            try:
                return BatchAnswer(custom_id, result=self._provider.read_result(result.message))
            except VamuError as exc:
                return BatchAnswer(custom_id, error=exc)
        if result.type == "errored":
            # An ErrorResponse: {"type": "error", "error": {"type": ..., "message": ...}}; no
            # HTTP status, so it is read like an error inside a 200 stream.
            inner = result.error.error
            error = map_anthropic_status(200, inner.type, str(inner.message))
            return BatchAnswer(custom_id, error=error)
        return BatchAnswer(custom_id)  # canceled or expired: it never ran
