"""`OpenAIProvider`: the OpenAI Responses API through the official SDK, with structured output."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import httpx2
import openai
from pydantic import SecretStr

from vamu_tasks.domain import (
    FinishReason,
    LLMRequest,
    LLMResult,
    StreamEvent,
    TextDelta,
    ToolsRequest,
    ToolTurnResult,
    Usage,
)
from vamu_tasks.errors import (
    ContentFiltered,
    ContextLengthExceeded,
    ProviderRejected,
    ProviderTimeout,
    ProviderUnavailable,
    QuotaExceeded,
    RateLimited,
    StreamInterrupted,
    VamuError,
)
from vamu_tasks.llm.retry_after import retry_after_seconds
from vamu_tasks.llm.tools_wire import openai_input, openai_tools, openai_turn


class OpenAIProvider:
    """Calls `responses.create`; every SDK failure comes out as a `VamuError` with its kind."""

    name = "openai"

    def __init__(
        self,
        *,
        api_key: SecretStr,
        model: str,
        base_url: str | None = None,
        timeout_s: float = 60.0,
        max_retries: int = 0,
        strict_validation: bool = False,
    ) -> None:
        self.model = model
        self._client = openai.OpenAI(
            api_key=api_key.get_secret_value(),
            base_url=base_url,
            timeout=timeout_s,
            max_retries=max_retries,
            _strict_response_validation=strict_validation,
        )

    def close(self) -> None:
        self._client.close()

    @property
    def client(self) -> openai.OpenAI:
        """The SDK client, for the Batch API adapter (`llm/openai_batch.py`)."""
        return self._client

    def complete(self, request: LLMRequest) -> LLMResult:
        kwargs = self.request_body(request)
        try:
            response = self._client.responses.create(**kwargs)
        except (openai.OpenAIError, httpx2.TransportError) as exc:
            raise map_openai_error(exc) from exc
        return self.read_result(response)

    def read_result(self, response: Any) -> LLMResult:
        """A Responses API answer as our result (a refusal or filter raises `ContentFiltered`)."""
        return self._result(response, response.output_text)

    def complete_with_tools(self, request: ToolsRequest) -> ToolTurnResult:
        kwargs = self._common(request, openai_input(request.items))
        kwargs["tools"] = openai_tools(request.tools)
        try:
            response = self._client.responses.create(**kwargs)
        except (openai.OpenAIError, httpx2.TransportError) as exc:
            raise map_openai_error(exc) from exc
        _raise_for_refusal_or_filter(response)
        return ToolTurnResult(
            turn=openai_turn(response),
            provider=self.name,
            model=response.model or self.model,
            usage=_usage(response.usage),
            finish_reason=_finish_reason(response),
        )

    def stream(self, request: LLMRequest) -> Iterator[StreamEvent]:
        kwargs = self.request_body(request)
        final: Any = None
        parts: list[str] = []
        try:
            with self._client.responses.create(**kwargs, stream=True) as events:
                for event in events:
                    if event.type == "response.output_text.delta":
                        parts.append(event.delta)
                        yield TextDelta(event.delta)
                    elif event.type in ("response.completed", "response.incomplete"):
                        final = event.response
                    elif event.type == "response.failed":
                        raise _failed(event.response)
        except (openai.OpenAIError, httpx2.TransportError) as exc:
            raise map_openai_error(exc) from exc
        if final is None:
            raise StreamInterrupted("OpenAI's stream ended without response.completed.")
        yield self._result(final, "".join(parts))

    def _result(self, response: Any, text: str) -> LLMResult:
        _raise_for_refusal_or_filter(response)
        return LLMResult(
            text=text,
            provider=self.name,
            model=response.model or self.model,
            usage=_usage(response.usage),
            finish_reason=_finish_reason(response),
        )

    def _common(
        self, request: LLMRequest | ToolsRequest, items: list[dict[str, Any]]
    ) -> dict[str, Any]:
        """What every call sends: the instructions first, then the input, and the cache key."""
        kwargs: dict[str, Any] = {
            "model": self.model,
            "instructions": request.system,
            "input": items,
            "max_output_tokens": request.max_output_tokens,
            "store": False,
        }
        # OpenAI caches a prefix of 1,024 tokens or more on its own; the key routes requests
        # that share one to the same cache.
        if request.cache_key:
            kwargs["prompt_cache_key"] = request.cache_key
        return kwargs

    def request_body(self, request: LLMRequest) -> dict[str, Any]:
        """The Responses API body of a call (also a Batch API line's `body`)."""
        items = [{"role": m.role, "content": m.content} for m in request.messages]
        kwargs = self._common(request, items)
        if request.output_schema is not None:
            kwargs["text"] = {
                "format": {
                    "type": "json_schema",
                    "name": request.output_schema.name,
                    "schema": dict(request.output_schema.schema),
                    "strict": True,
                }
            }
        return kwargs


def _usage(usage: Any) -> Usage:
    if usage is None:
        return Usage()
    details = usage.input_tokens_details
    return Usage(
        input_tokens=usage.input_tokens,
        output_tokens=usage.output_tokens,
        cache_read_tokens=getattr(details, "cached_tokens", 0) or 0,
        cache_write_tokens=getattr(details, "cache_write_tokens", 0) or 0,
    )


def _finish_reason(response: Any) -> FinishReason:
    """`incomplete` for `max_output_tokens` is "length"; the content filter raised earlier."""
    return "length" if response.status == "incomplete" else "stop"


def _failed(response: Any) -> VamuError:
    """A `response.failed` event: the stream ended in an error that has a code, no status."""
    error = response.error
    code = getattr(error, "code", None)
    return _map_stream_error(code, getattr(error, "message", "") or "")


def _raise_for_refusal_or_filter(response: Any) -> None:
    details = response.incomplete_details
    if details is not None and details.reason == "content_filter":
        raise ContentFiltered("OpenAI stopped the answer under its content filter.")
    for item in response.output or []:
        for part in getattr(item, "content", None) or []:
            if getattr(part, "type", None) == "refusal":
                raise ContentFiltered(f"OpenAI refused: {part.refusal[:300]}")


def map_openai_error(exc: Exception) -> VamuError:
    """Translate an OpenAI SDK (or leaked transport) exception into our tree."""
    if isinstance(exc, openai.APITimeoutError):
        return ProviderTimeout("OpenAI did not answer before the timeout.")
    if isinstance(exc, openai.APIConnectionError | httpx2.TransportError):
        return ProviderUnavailable(f"Connection to OpenAI failed ({type(exc).__name__}).")
    if not isinstance(exc, openai.APIStatusError):
        # An `error` event inside a 200 stream: its code says what it was.
        code = getattr(exc, "code", None) or getattr(exc, "type", None)
        return _map_stream_error(code, str(exc))
    return map_openai_status(
        exc.status_code,
        _error_code(exc),
        _error_message(exc),
        retry_after_seconds(exc.response.headers),
    )


def map_openai_status(
    status: int, code: str | None, message: str, retry_after: float | None = None
) -> VamuError:
    """An OpenAI error by its HTTP status and `error.code` (also a Batch API output line's)."""
    detail = f"OpenAI {status} {code or ''}: {message}".strip()
    if status == 429:
        if code == "insufficient_quota":
            return QuotaExceeded(detail)
        return RateLimited(detail, retry_after=retry_after)
    if code == "context_length_exceeded":
        return ContextLengthExceeded(detail)
    if code in {"content_filter", "content_policy_violation"}:
        return ContentFiltered(detail)
    if status in (408, 409) or status >= 500:
        return ProviderUnavailable(detail, retry_after=retry_after)
    return ProviderRejected(detail)


def _map_stream_error(code: str | None, message: str) -> VamuError:
    """A failure inside a 200 stream has no status: its code says what it was, and it is
    classified as the same failure outside a stream (a 429 or a 5xx) would be."""
    detail = f"OpenAI stream error {code or ''}: {message[:300]}"
    if code == "context_length_exceeded":
        return ContextLengthExceeded(detail)
    if code in {"content_filter", "content_policy_violation"}:
        return ContentFiltered(detail)
    if code == "insufficient_quota":
        return QuotaExceeded(detail)
    if code in {"rate_limit_exceeded", "rate_limit_error"}:
        return RateLimited(detail)
    if code and code.startswith("invalid_"):
        return ProviderRejected(detail)
    return ProviderUnavailable(detail)


def _error_code(exc: openai.APIStatusError) -> str | None:
    code = getattr(exc, "code", None)
    if code:
        return str(code)
    body = exc.body if isinstance(exc.body, dict) else {}
    inner = body.get("error", body) if isinstance(body, dict) else {}
    return str(inner.get("code")) if isinstance(inner, dict) and inner.get("code") else None


def _error_message(exc: openai.APIStatusError) -> str:
    body = exc.body
    if isinstance(body, dict):
        inner = body.get("error", body)
        if isinstance(inner, dict) and inner.get("message"):
            return str(inner["message"])[:500]
    return exc.message[:500]
