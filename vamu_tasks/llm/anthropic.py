"""`AnthropicProvider`: the Anthropic Messages API via the official SDK, with structured output."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any, Literal

import anthropic
import httpx2
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
from vamu_tasks.llm.tools_wire import anthropic_messages, anthropic_tools, anthropic_turn

CacheTTL = Literal["5m", "1h"]

# Anthropic error `type`s, as sent in error bodies and mid-stream `event: error` frames.
_TRANSIENT_TYPES = {"overloaded_error", "api_error", "timeout_error"}
_QUOTA_TYPES = {"billing_error"}


class AnthropicProvider:
    """Calls `messages.create`; every SDK failure comes out as a `VamuError` with its kind."""

    name = "anthropic"

    def __init__(
        self,
        *,
        api_key: SecretStr,
        model: str,
        base_url: str | None = None,
        timeout_s: float = 60.0,
        max_retries: int = 0,
        strict_validation: bool = False,
        cache_ttl: CacheTTL = "5m",
    ) -> None:
        self.model = model
        self._cache: dict[str, str] = {"type": "ephemeral"}
        if cache_ttl == "1h":
            self._cache["ttl"] = "1h"
        self._client = anthropic.Anthropic(
            api_key=api_key.get_secret_value(),
            base_url=base_url,
            timeout=timeout_s,
            max_retries=max_retries,
            _strict_response_validation=strict_validation,
        )

    def close(self) -> None:
        self._client.close()

    @property
    def client(self) -> anthropic.Anthropic:
        """The SDK client, for the Message Batches adapter (`llm/anthropic_batch.py`)."""
        return self._client

    def complete(self, request: LLMRequest) -> LLMResult:
        try:
            message = self._client.messages.create(**self.request_body(request))
        except (anthropic.AnthropicError, httpx2.TransportError) as exc:
            raise map_anthropic_error(exc) from exc
        return self.read_result(message)

    def read_result(self, message: Any) -> LLMResult:
        """A Messages API answer as our result (a refusal raises `ContentFiltered`)."""
        if message.stop_reason == "refusal":
            raise ContentFiltered("Anthropic refused to answer under its usage policy.")
        text = "".join(block.text for block in message.content if block.type == "text")
        return LLMResult(
            text=text,
            provider=self.name,
            model=message.model or self.model,
            usage=_usage(message.usage),
            finish_reason=_finish_reason(message.stop_reason),
        )

    def complete_with_tools(self, request: ToolsRequest) -> ToolTurnResult:
        kwargs: dict[str, Any] = {
            "model": self.model,
            "system": self._system(request.system),
            "messages": self._history_cached(anthropic_messages(request.items)),
            "tools": self._tools_cached(anthropic_tools(request.tools)),
            "max_tokens": request.max_output_tokens,
        }
        try:
            message = self._client.messages.create(**kwargs)
        except (anthropic.AnthropicError, httpx2.TransportError) as exc:
            raise map_anthropic_error(exc) from exc
        if message.stop_reason == "refusal":
            raise ContentFiltered("Anthropic refused to answer under its usage policy.")
        return ToolTurnResult(
            turn=anthropic_turn(message),
            provider=self.name,
            model=message.model or self.model,
            usage=_usage(message.usage),
            finish_reason=_finish_reason(message.stop_reason),
        )

    def stream(self, request: LLMRequest) -> Iterator[StreamEvent]:
        state = _StreamState()
        try:
            with self._client.messages.create(**self.request_body(request), stream=True) as events:
                for event in events:
                    delta = state.take(event)
                    if delta:
                        yield TextDelta(delta)
        # A dropped stream can surface as a raw httpx2 error rather than an SDK one.
        except (anthropic.AnthropicError, httpx2.TransportError) as exc:
            raise map_anthropic_error(exc) from exc
        if not state.stopped or state.stop_reason is None:
            raise StreamInterrupted("Anthropic's stream ended without a stop reason.")
        if state.stop_reason == "refusal":
            raise ContentFiltered("Anthropic refused to answer under its usage policy.")
        yield LLMResult(
            text="".join(state.parts),
            provider=self.name,
            model=state.model or self.model,
            usage=_usage(state.usage),
            finish_reason=_finish_reason(state.stop_reason),
        )

    def request_body(self, request: LLMRequest) -> dict[str, Any]:
        """The Messages API parameters of a call (also a Message Batch request's `params`)."""
        messages = [
            {"role": m.role, "content": [{"type": "text", "text": m.content}]}
            for m in request.messages
        ]
        kwargs: dict[str, Any] = {
            "model": self.model,
            "system": self._system(request.system),
            "messages": self._history_cached(messages),
            "max_tokens": request.max_output_tokens,
        }
        if request.output_schema is not None:
            # Structured outputs refuse numeric, length and array bounds (maxItems, minItems
            # above 1, ...): the SDK's own transform moves them into the description, as
            # `messages.parse` does, and the use case checks them on the answer.
            schema = anthropic.transform_schema(dict(request.output_schema.schema))
            kwargs["output_config"] = {"format": {"type": "json_schema", "schema": schema}}
        return kwargs

    # Prompt caching: Anthropic reads the prefix tools → system → messages and caches it up to
    # each `cache_control` breakpoint (at most 4). Three here: the end of the tools, the end of
    # the system prompt, and the end of the newest message. The next call (a chat's next turn,
    # an agent's next step) puts its own there, and the API looks back from it for the longest
    # prefix cached before: the whole previous prompt, read at a tenth of the input price. A
    # prefix under the model's minimum (1,024 tokens for Sonnet) is simply not cached.

    def _system(self, system: str) -> list[dict[str, Any]]:
        return [{"type": "text", "text": system, "cache_control": self._cache}]

    def _tools_cached(self, tools: list[dict[str, Any]]) -> list[dict[str, Any]]:
        if tools:
            tools[-1] = {**tools[-1], "cache_control": self._cache}
        return tools

    def _history_cached(self, messages: list[dict[str, Any]]) -> list[dict[str, Any]]:
        if messages and messages[-1]["content"]:
            blocks = messages[-1]["content"]
            blocks[-1] = {**blocks[-1], "cache_control": self._cache}
        return messages


class _StreamState:
    """What the Messages stream has said so far: text, stop reason, usage."""

    def __init__(self) -> None:
        self.parts: list[str] = []
        self.model: str | None = None
        self.usage: Any = None
        self.stop_reason: str | None = None
        self.stopped = False

    def take(self, event: Any) -> str | None:
        if event.type == "message_start":
            self.model = event.message.model
            self.usage = event.message.usage
        elif event.type == "content_block_delta" and event.delta.type == "text_delta":
            self.parts.append(event.delta.text)
            return str(event.delta.text)
        elif event.type == "message_delta":
            self.stop_reason = event.delta.stop_reason
            if self.usage is not None:
                self.usage.output_tokens = event.usage.output_tokens
        elif event.type == "message_stop":
            self.stopped = True
        return None


def _finish_reason(stop_reason: str | None) -> FinishReason:
    """`max_tokens` (and a full context window) cut the answer; every other stop ends it."""
    return "length" if stop_reason in ("max_tokens", "model_context_window_exceeded") else "stop"


def _usage(usage: Any) -> Usage:
    cached = usage.cache_read_input_tokens or 0
    written = usage.cache_creation_input_tokens or 0
    by_ttl = getattr(usage, "cache_creation", None)
    written_1h = (getattr(by_ttl, "ephemeral_1h_input_tokens", 0) or 0) if by_ttl else 0
    # Anthropic's input_tokens excludes cache reads and writes; ours includes them.
    return Usage(
        input_tokens=usage.input_tokens + cached + written,
        output_tokens=usage.output_tokens,
        cache_read_tokens=cached,
        cache_write_tokens=written,
        cache_write_1h_tokens=written_1h,
    )


def map_anthropic_error(exc: Exception) -> VamuError:
    """Translate an Anthropic SDK (or leaked transport) exception into our tree."""
    if isinstance(exc, anthropic.APITimeoutError):
        return ProviderTimeout("Anthropic did not answer before the timeout.")
    if isinstance(exc, anthropic.APIConnectionError | httpx2.TransportError):
        return ProviderUnavailable(f"Connection to Anthropic failed ({type(exc).__name__}).")
    if not isinstance(exc, anthropic.APIStatusError):
        return ProviderUnavailable(f"Anthropic call failed ({type(exc).__name__}).")
    error_type, message = _error_body(exc)
    return map_anthropic_status(
        exc.status_code, error_type, message, retry_after_seconds(exc.response.headers)
    )


def map_anthropic_status(
    status: int, error_type: str | None, message: str, retry_after: float | None = None
) -> VamuError:
    """An Anthropic error by its HTTP status and `error.type` (a Message Batch result that
    `errored` has the type only: pass status 200, as for a mid-stream error)."""
    detail = f"Anthropic {status} {error_type or ''}: {message}".strip()
    # An empty balance arrives as a 400 invalid_request_error; only its message says so.
    if error_type in _QUOTA_TYPES or "credit balance" in message.lower():
        return QuotaExceeded(detail)
    if status == 429 or error_type == "rate_limit_error":
        return RateLimited(detail, retry_after=retry_after)
    if status == 413 or "prompt is too long" in message.lower():
        return ContextLengthExceeded(detail)
    # A mid-stream `event: error` arrives with HTTP status 200: only its type tells what it is.
    if error_type in _TRANSIENT_TYPES or status in (408, 409) or status >= 500:
        return ProviderUnavailable(detail, retry_after=retry_after)
    return ProviderRejected(detail)


def _error_body(exc: anthropic.APIStatusError) -> tuple[str | None, str]:
    body = exc.body
    if isinstance(body, dict):
        inner = body.get("error", body)
        if isinstance(inner, dict):
            return inner.get("type"), str(inner.get("message", ""))[:500]
    return None, exc.message[:500]
