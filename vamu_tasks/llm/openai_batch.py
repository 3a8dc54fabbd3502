"""`OpenAIBatches`: OpenAI's Batch API (a JSONL file of `/v1/responses` calls, a 24 h window).

The request bodies and the answers are those of `OpenAIProvider`, so a batched job asks exactly
what the synchronous one would and its answer is read the same way
(platform.openai.com/docs/guides/batch, /docs/api-reference/batch).
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Sequence
from typing import Any, Literal

import httpx2
import openai
from openai.types.responses import Response

from vamu_tasks.domain import BatchAnswer, BatchRequest, BatchState
from vamu_tasks.errors import VamuError
from vamu_tasks.llm.openai import OpenAIProvider, map_openai_error, map_openai_status

ENDPOINT: Literal["/v1/responses"] = "/v1/responses"
# Statuses after which nothing more is answered (`failed`: the input file was refused).
ENDED = frozenset({"completed", "failed", "expired", "cancelled"})


class OpenAIBatches:
    def __init__(self, provider: OpenAIProvider) -> None:
        self._provider = provider
        self._client = provider.client
        self.name = provider.name
        self.model = provider.model

    def submit(self, requests: Sequence[BatchRequest]) -> str:
        lines = [
            {
                "custom_id": item.custom_id,
                "method": "POST",
                "url": ENDPOINT,
                "body": self._provider.request_body(item.request),
            }
            for item in requests
        ]
        data = b"".join(json.dumps(line).encode() + b"\n" for line in lines)
        try:
            stored = self._client.files.create(file=("vamu-batch.jsonl", data), purpose="batch")
            batch = self._client.batches.create(
                input_file_id=stored.id, endpoint=ENDPOINT, completion_window="24h"
            )
        except (openai.OpenAIError, httpx2.TransportError) as exc:
            raise map_openai_error(exc) from exc
        return batch.id

    def state(self, batch_id: str) -> BatchState:
        try:
            batch = self._client.batches.retrieve(batch_id)
        except (openai.OpenAIError, httpx2.TransportError) as exc:
            raise map_openai_error(exc) from exc
        return BatchState(batch.status, batch.status in ENDED)

    def answers(self, batch_id: str) -> Iterator[BatchAnswer]:
        try:
            batch = self._client.batches.retrieve(batch_id)
            files = [f for f in (batch.output_file_id, batch.error_file_id) if f]
            texts = [self._client.files.content(file_id).text for file_id in files]
        except (openai.OpenAIError, httpx2.TransportError) as exc:
            raise map_openai_error(exc) from exc
        for text in texts:
            for raw in text.splitlines():
                if raw.strip():
                    yield self._answer(json.loads(raw))

    def cancel(self, batch_id: str) -> None:
        try:
            self._client.batches.cancel(batch_id)
        except (openai.OpenAIError, httpx2.TransportError) as exc:
            raise map_openai_error(exc) from exc

    def _answer(self, line: dict[str, Any]) -> BatchAnswer:
        """One line of the output or error file (the guide's "batch request output")."""
        custom_id = str(line.get("custom_id"))
        response = line.get("response")
        if not isinstance(response, dict):
            # `error` only: the request never ran (batch_expired, batch_cancelled).
            return BatchAnswer(custom_id)
        body = response.get("body") or {}
        status = int(response.get("status_code") or 0)
        if status != 200:
            inner = body.get("error") if isinstance(body, dict) else None
            inner = inner if isinstance(inner, dict) else {}
            error = map_openai_status(status, inner.get("code"), str(inner.get("message", "")))
            return BatchAnswer(custom_id, error=error)
        try:
            return BatchAnswer(custom_id, result=self._provider.read_result(_response(body)))
        except VamuError as exc:
            return BatchAnswer(custom_id, error=exc)


def _response(body: dict[str, Any]) -> Any:
    return Response.model_validate(body)
