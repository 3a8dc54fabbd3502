"""`TracedLLM`: one span per LLM call, after the OpenTelemetry GenAI semantic conventions.

The span is named `chat <request model>` (kind CLIENT) and carries `gen_ai.operation.name`,
`gen_ai.provider.name`, `gen_ai.request.model`, `gen_ai.request.max_tokens`,
`gen_ai.output.type`, then `gen_ai.response.model`, the token counts (input, output, cache read
and cache creation) and `gen_ai.response.finish_reasons`; `error.type` when the call fails.
Prompts and answers go on the span only with `capture_content`, which the standard
`OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT=true` turns on.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator
from typing import Any

from opentelemetry.trace import Span, SpanKind, Status, StatusCode, Tracer

from vamu_tasks.domain import (
    AgentItem,
    AssistantTurn,
    LLMRequest,
    LLMResult,
    Message,
    StreamEvent,
    TextDelta,
    ToolResult,
    ToolsRequest,
    ToolTurnResult,
)
from vamu_tasks.errors import VamuError
from vamu_tasks.llm.wrapper import CallKind, ProviderWrapper
from vamu_tasks.ports import LLMProvider

OPERATION = "chat"

# Attribute names of the GenAI semantic conventions (development status; see
# opentelemetry.semconv._incubating.attributes.gen_ai_attributes).
OPERATION_NAME = "gen_ai.operation.name"
PROVIDER_NAME = "gen_ai.provider.name"
REQUEST_MODEL = "gen_ai.request.model"
REQUEST_MAX_TOKENS = "gen_ai.request.max_tokens"
REQUEST_STREAM = "gen_ai.request.stream"
OUTPUT_TYPE = "gen_ai.output.type"
RESPONSE_MODEL = "gen_ai.response.model"
RESPONSE_FINISH_REASONS = "gen_ai.response.finish_reasons"
TIME_TO_FIRST_CHUNK = "gen_ai.response.time_to_first_chunk"
INPUT_TOKENS = "gen_ai.usage.input_tokens"
OUTPUT_TOKENS = "gen_ai.usage.output_tokens"
CACHE_READ_TOKENS = "gen_ai.usage.cache_read.input_tokens"
CACHE_CREATION_TOKENS = "gen_ai.usage.cache_creation.input_tokens"
SYSTEM_INSTRUCTIONS = "gen_ai.system_instructions"
INPUT_MESSAGES = "gen_ai.input.messages"
OUTPUT_MESSAGES = "gen_ai.output.messages"
ERROR_TYPE = "error.type"

CONTENT_ATTRIBUTES = (SYSTEM_INSTRUCTIONS, INPUT_MESSAGES, OUTPUT_MESSAGES)


class TracedLLM(ProviderWrapper):
    """Wraps the vendor adapter itself, so the span times the call and nothing around it
    (budgets that hold a call back make no span: no call was made)."""

    def __init__(self, inner: LLMProvider, tracer: Tracer, *, capture_content: bool = False):
        super().__init__(inner)
        self._tracer = tracer
        self._capture = capture_content

    def _call(
        self, kind: CallKind, request: LLMRequest | ToolsRequest, fn: Callable[[], Any]
    ) -> Any:
        span = self._start(request, stream=False)
        try:
            result = fn()
        except Exception as exc:
            _failed(span, exc)
            raise
        else:
            self._finished(span, result)
            return result
        finally:
            span.end()

    def stream(self, request: LLMRequest) -> Iterator[StreamEvent]:
        span = self._start(request, stream=True)
        started = time.perf_counter()
        first = True
        try:
            for event in self._inner.stream(request):
                if first and isinstance(event, TextDelta):
                    span.set_attribute(TIME_TO_FIRST_CHUNK, time.perf_counter() - started)
                    first = False
                if isinstance(event, LLMResult):
                    self._finished(span, event)
                yield event
        except Exception as exc:
            _failed(span, exc)
            raise
        finally:
            # Also when the reader stops early (a cancelled chat): the call ended there.
            span.end()

    def _start(self, request: LLMRequest | ToolsRequest, *, stream: bool) -> Span:
        attributes: dict[str, Any] = {
            OPERATION_NAME: OPERATION,
            PROVIDER_NAME: self.name,
            REQUEST_MODEL: self.model,
            REQUEST_MAX_TOKENS: request.max_output_tokens,
            OUTPUT_TYPE: "json"
            if isinstance(request, LLMRequest) and request.output_schema
            else "text",
        }
        if stream:
            attributes[REQUEST_STREAM] = True
        if self._capture:
            attributes[SYSTEM_INSTRUCTIONS] = _json([{"type": "text", "content": request.system}])
            items = request.messages if isinstance(request, LLMRequest) else request.items
            attributes[INPUT_MESSAGES] = _json([_message(item) for item in items])
        return self._tracer.start_span(
            f"{OPERATION} {self.model}", kind=SpanKind.CLIENT, attributes=attributes
        )

    def _finished(self, span: Span, result: LLMResult | ToolTurnResult) -> None:
        usage = result.usage
        span.set_attributes(
            {
                RESPONSE_MODEL: result.model,
                INPUT_TOKENS: usage.input_tokens,
                OUTPUT_TOKENS: usage.output_tokens,
                CACHE_READ_TOKENS: usage.cache_read_tokens,
                CACHE_CREATION_TOKENS: usage.cache_write_tokens,
                RESPONSE_FINISH_REASONS: [result.finish_reason],
            }
        )
        if self._capture:
            turn = result.turn if isinstance(result, ToolTurnResult) else AssistantTurn(result.text)
            output = {**_message(turn), "finish_reason": result.finish_reason}
            span.set_attribute(OUTPUT_MESSAGES, _json([output]))


def _failed(span: Span, exc: Exception) -> None:
    # The kind only: an error's message may quote what the vendor said about the prompt.
    kind = exc.error_kind if isinstance(exc, VamuError) else type(exc).__qualname__
    span.set_attribute(ERROR_TYPE, kind)
    span.set_status(Status(StatusCode.ERROR, kind))


def _message(item: AgentItem) -> dict[str, Any]:
    """One message in the conventions' form: a role and its parts."""
    if isinstance(item, Message):
        return {"role": item.role, "parts": [{"type": "text", "content": item.content}]}
    if isinstance(item, ToolResult):
        part = {"type": "tool_call_response", "id": item.call_id, "response": item.content}
        return {"role": "tool", "parts": [part]}
    parts: list[dict[str, Any]] = []
    if item.text:
        parts.append({"type": "text", "content": item.text})
    for call in item.tool_calls:
        parts.append(
            {
                "type": "tool_call",
                "id": call.call_id,
                "name": call.name,
                "arguments": call.arguments,
            }
        )
    return {"role": "assistant", "parts": parts}


def _json(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"))
