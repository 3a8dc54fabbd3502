"""The Anthropic Messages wire (docs.claude.com/en/api/messages and /en/docs/build-with-claude/
streaming), as anthropic-python validates it with `_strict_response_validation=True`."""

from __future__ import annotations

import json
from typing import Any

from vamu_tasks.testing.fake_llm import rules
from vamu_tasks.testing.fake_llm.behaviours import Answer, Usage
from vamu_tasks.testing.fake_llm.wire import Frame, Payload, Wire, chunks, new_id

_ANTHROPIC_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    402: "billing_error",
    403: "permission_error",
    404: "not_found_error",
    413: "request_too_large",
    429: "rate_limit_error",
    500: "api_error",
    504: "timeout_error",
    529: "overloaded_error",
}
_ANTHROPIC_STATUS = {kind: status for status, kind in _ANTHROPIC_TYPES.items()}
# Error types named the OpenAI way, translated when a script aims them at Anthropic.
_ANTHROPIC_ALIASES = {
    "context_length_exceeded": "invalid_request_error",
    "rate_limit_exceeded": "rate_limit_error",
    "server_error": "api_error",
    "insufficient_quota": "billing_error",
    "model_not_found": "not_found_error",
}


class AnthropicWire(Wire):
    api = "anthropic.messages"
    default_model = "claude-fake"
    auth_message = "invalid x-api-key"

    def __init__(self, body: dict[str, Any]) -> None:
        super().__init__(body)
        self.message_id = new_id("msg_01")
        self.call_id = new_id("toolu_01", 22)

    @property
    def max_output_tokens(self) -> int | None:
        value = self.body.get("max_tokens")
        return value if isinstance(value, int) else None

    def check(self) -> None:
        rules.check_anthropic_messages(self.body)

    def headers(self) -> dict[str, str]:
        return {"request-id": self.request_id}

    def _type(self, status: int, error_type: str | None) -> str:
        if error_type is not None:
            return _ANTHROPIC_ALIASES.get(error_type, error_type)
        fallback = "api_error" if status >= 500 else "invalid_request_error"
        return _ANTHROPIC_TYPES.get(status, fallback)

    def error_body(
        self, status: int, message: str, error_type: str | None, param: str | None = None
    ) -> dict[str, Any]:
        return {
            "type": "error",
            "error": {"type": self._type(status, error_type), "message": message},
            "request_id": self.request_id,
        }

    def error_status(self, error_type: str) -> int:
        return _ANTHROPIC_STATUS.get(_ANTHROPIC_ALIASES.get(error_type, error_type), 500)

    def _usage(self, usage: Usage, output: int) -> dict[str, Any]:
        return {
            "input_tokens": max(0, usage.input - usage.cached - usage.cache_write),
            "cache_creation_input_tokens": usage.cache_write,
            "cache_read_input_tokens": usage.cached,
            "cache_creation": {
                "ephemeral_5m_input_tokens": usage.cache_write - usage.cache_write_1h,
                "ephemeral_1h_input_tokens": usage.cache_write_1h,
            },
            "output_tokens": output,
            "service_tier": "standard",
        }

    def _message(
        self, content: list[dict[str, Any]], stop: str | None, usage: dict[str, Any]
    ) -> dict[str, Any]:
        return {
            "id": self.message_id,
            "type": "message",
            "role": "assistant",
            "model": self.model,
            "content": content,
            "stop_reason": stop,
            "stop_sequence": None,
            "usage": usage,
        }

    def _blocks(self, answer: Answer, *, full: bool) -> list[dict[str, Any]]:
        """The content blocks: text (none for a refusal before any text), then tool_use."""
        blocks: list[dict[str, Any]] = []
        if answer.text or (answer.refusal is None and not answer.calls):
            blocks.append({"type": "text", "text": answer.text if full else ""})
        for index, call in enumerate(answer.calls):
            blocks.append(
                {
                    "type": "tool_use",
                    "id": call.call_id or f"{self.call_id}{index}",
                    "name": call.name,
                    "input": json.loads(call.arguments) if full else {},
                }
            )
        return blocks

    @staticmethod
    def _stop(answer: Answer) -> dict[str, Any]:
        """The stop reason, with `stop_details` when it is a refusal."""
        if answer.refusal is not None:
            details = {"type": "refusal", "category": None, "explanation": answer.refusal}
            return {"stop_reason": "refusal", "stop_details": details}
        if answer.calls:
            return {"stop_reason": "tool_use"}
        return {"stop_reason": "max_tokens" if answer.stop == "max_tokens" else "end_turn"}

    def message(self, answer: Answer) -> dict[str, Any]:
        stop = self._stop(answer)
        usage = self._usage(answer.usage, answer.usage.output)
        message = self._message(self._blocks(answer, full=True), stop["stop_reason"], usage)
        message.update(stop)
        return message

    def stream(self, answer: Answer) -> list[Frame]:
        # The live API reports a token or so of output at message_start, the total at the end.
        start = self._message([], None, self._usage(answer.usage, 1))
        frames = [Frame({"type": "message_start", "message": start})]
        for index, block in enumerate(self._blocks(answer, full=False)):
            frames.append(
                Frame({"type": "content_block_start", "index": index, "content_block": block})
            )
            if index == 0:
                frames.append(Frame({"type": "ping"}))
            if block["type"] == "text":
                deltas = [
                    {"type": "text_delta", "text": p}
                    for p in chunks(answer.text, answer.chunk_size)
                ]
            else:
                call = answer.calls[index - self._first_call(answer)]
                deltas = [
                    {"type": "input_json_delta", "partial_json": p}
                    for p in chunks(call.arguments, answer.chunk_size)
                ]
            frames += [
                Frame({"type": "content_block_delta", "index": index, "delta": d}, True)
                for d in deltas
            ]
            frames.append(Frame({"type": "content_block_stop", "index": index}))
        final_usage = self._usage(answer.usage, answer.usage.output)
        del final_usage["cache_creation"], final_usage["service_tier"]
        stop = {**self._stop(answer), "stop_sequence": None}
        frames += [
            Frame({"type": "message_delta", "delta": stop, "usage": final_usage}),
            Frame({"type": "message_stop"}),
        ]
        return frames

    def _first_call(self, answer: Answer) -> int:
        """The block index of the first tool_use block."""
        return len(self._blocks(answer, full=False)) - len(answer.calls)

    def stream_error(self, error_type: str, message: str, *, error_event: bool) -> list[Payload]:
        kind = _ANTHROPIC_ALIASES.get(error_type, error_type)
        return [{"type": "error", "error": {"type": kind, "message": message}}]
