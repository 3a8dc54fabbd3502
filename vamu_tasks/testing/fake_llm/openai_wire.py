"""The OpenAI wires: the Responses API (what the adapter uses) and Chat Completions.

Shapes follow the API reference (platform.openai.com/docs/api-reference/responses and
/chat) and what openai-python validates with `_strict_response_validation=True`.
"""

from __future__ import annotations

import time
from typing import Any, ClassVar

from vamu_tasks.testing.fake_llm import rules
from vamu_tasks.testing.fake_llm.behaviours import Answer, Call, Usage
from vamu_tasks.testing.fake_llm.wire import Frame, Payload, Wire, chunks, new_id, sse

_OPENAI_DEFAULT_ERRORS: dict[int, tuple[str, str | None]] = {
    401: ("invalid_request_error", "invalid_api_key"),
    429: ("rate_limit_exceeded", "rate_limit_exceeded"),
}
# Error types named the Anthropic way, translated when a script aims them at OpenAI.
_OPENAI_ALIASES = {
    "overloaded_error": "server_error",
    "api_error": "server_error",
    "rate_limit_error": "rate_limit_exceeded",
}
# Codes the API sends with `type: invalid_request_error` (rules.py and the batch APIs raise
# them by code).
_INVALID_REQUEST_CODES = {
    "model_not_found",
    "invalid_json_schema",
    "invalid_function_parameters",
    "invalid_value",
    "invalid_type",
}
_OPENAI_STATUS = {"rate_limit_exceeded": 429, "invalid_request_error": 400, "server_error": 500}


class OpenAIWire(Wire):
    default_model = "gpt-fake"
    auth_message = (
        "Incorrect API key provided. You can find your API key at "
        "https://platform.openai.com/account/api-keys."
    )
    context_param: ClassVar[str] = "input"

    def headers(self) -> dict[str, str]:
        return {
            "x-request-id": self.request_id,
            "openai-version": "2020-10-01",
            "openai-processing-ms": "1",
        }

    def error_body(
        self, status: int, message: str, error_type: str | None, param: str | None = None
    ) -> dict[str, Any]:
        code: str | None
        if error_type is None:
            fallback = ("server_error" if status >= 500 else "invalid_request_error", None)
            kind, code = _OPENAI_DEFAULT_ERRORS.get(status, fallback)
        elif error_type == "context_length_exceeded":
            kind, code, param = "invalid_request_error", error_type, self.context_param
        elif error_type in _INVALID_REQUEST_CODES:
            kind, code = "invalid_request_error", error_type
        elif error_type == "invalid_request_error":
            kind, code = error_type, None
        else:
            kind = _OPENAI_ALIASES.get(error_type, error_type)
            code = kind
        return {"error": {"message": message, "type": kind, "param": param, "code": code}}

    def error_status(self, error_type: str) -> int:
        if error_type == "overloaded_error":
            return 503
        return _OPENAI_STATUS.get(_OPENAI_ALIASES.get(error_type, error_type), 500)

    def _error_detail(self, error_type: str, message: str) -> dict[str, Any]:
        kind = _OPENAI_ALIASES.get(error_type, error_type)
        return {"type": kind, "code": kind, "message": message, "param": None}


def _responses_usage(usage: Usage) -> dict[str, Any]:
    return {
        "input_tokens": usage.input,
        "input_tokens_details": {"cached_tokens": usage.cached, "cache_write_tokens": 0},
        "output_tokens": usage.output,
        "output_tokens_details": {"reasoning_tokens": usage.reasoning},
        "total_tokens": usage.input + usage.output,
    }


def _echo_tool(tool: object) -> object:
    if isinstance(tool, dict) and tool.get("type") == "function":
        return {"description": None, "parameters": None, "strict": True, **tool}
    return tool


def _content_part(answer: Answer, *, full: bool) -> dict[str, Any]:
    """The message's one content part: the answer's text, or its refusal."""
    if answer.refusal is not None:
        return {"type": "refusal", "refusal": answer.refusal if full else ""}
    text = answer.text if full else ""
    return {"type": "output_text", "text": text, "annotations": [], "logprobs": []}


class ResponsesWire(OpenAIWire):
    api = "openai.responses"

    def __init__(self, body: dict[str, Any]) -> None:
        super().__init__(body)
        self.response_id = new_id("resp_", 32)
        self.message_id = new_id("msg_", 32)
        self.reasoning_id = new_id("rs_", 32)

    @property
    def max_output_tokens(self) -> int | None:
        value = self.body.get("max_output_tokens")
        return value if isinstance(value, int) else None

    def check(self) -> None:
        rules.check_openai_responses(self.body)

    def _settings(self) -> dict[str, Any]:
        """The request settings the real API echoes back in every Response object."""
        body = self.body
        text = body.get("text")
        text = text if isinstance(text, dict) else {}
        tools = body.get("tools")
        tools = tools if isinstance(tools, list) else []
        return {
            "instructions": body.get("instructions"),
            "max_output_tokens": body.get("max_output_tokens"),
            "metadata": body.get("metadata") or {},
            "parallel_tool_calls": body.get("parallel_tool_calls", True),
            "previous_response_id": body.get("previous_response_id"),
            "prompt_cache_key": body.get("prompt_cache_key"),
            "reasoning": body.get("reasoning") or {"effort": None, "summary": None},
            "store": body.get("store", True),
            "temperature": body.get("temperature", 1.0),
            "text": {"format": {"type": "text"}, "verbosity": "medium", **text},
            "tool_choice": body.get("tool_choice", "auto"),
            "tools": [_echo_tool(t) for t in tools],
            "top_p": body.get("top_p", 1.0),
            "truncation": body.get("truncation", "disabled"),
        }

    def _response(
        self, status: str, output: list[dict[str, Any]], usage: Usage | None
    ) -> dict[str, Any]:
        return {
            "id": self.response_id,
            "object": "response",
            "created_at": self.created,
            "status": status,
            "background": False,
            "completed_at": int(time.time()) if status == "completed" else None,
            "error": None,
            "incomplete_details": (
                {"reason": "max_output_tokens"} if status == "incomplete" else None
            ),
            "max_tool_calls": None,
            "model": self.model,
            "output": output,
            "safety_identifier": None,
            "service_tier": "default",
            "top_logprobs": 0,
            "usage": None if usage is None else _responses_usage(usage),
            "user": None,
            **self._settings(),
        }

    def _reasoning_item(self) -> dict[str, Any]:
        # Without `include: ["reasoning.encrypted_content"]` a reasoning item carries no text.
        return {"id": self.reasoning_id, "type": "reasoning", "summary": []}

    def _message_item(self, part: dict[str, Any] | None, status: str) -> dict[str, Any]:
        return {
            "id": self.message_id,
            "type": "message",
            "status": status,
            "role": "assistant",
            "content": [] if part is None else [part],
        }

    def _call_item(self, call: Call, index: int, *, full: bool) -> dict[str, Any]:
        return {
            "id": f"fc_{self.response_id[5:]}{index}",
            "type": "function_call",
            "status": "completed" if full else "in_progress",
            "arguments": call.arguments if full else "",
            "call_id": call.call_id or f"call_{self.response_id[5:29]}{index}",
            "name": call.name,
        }

    @staticmethod
    def _status(answer: Answer) -> str:
        return "incomplete" if answer.stop == "max_tokens" else "completed"

    def _items(self, answer: Answer) -> list[dict[str, Any]]:
        """The output items of the finished response, in order."""
        items: list[dict[str, Any]] = []
        if answer.usage.reasoning:
            items.append(self._reasoning_item())
        if answer.has_message:
            items.append(self._message_item(_content_part(answer, full=True), self._status(answer)))
        items += [self._call_item(c, i, full=True) for i, c in enumerate(answer.calls)]
        return items

    def message(self, answer: Answer) -> dict[str, Any]:
        return self._response(self._status(answer), self._items(answer), answer.usage)

    def stream(self, answer: Answer) -> list[Frame]:
        in_progress = self._response("in_progress", [], None)
        frames = [
            Frame({"type": "response.created", "response": in_progress}),
            Frame({"type": "response.in_progress", "response": in_progress}),
        ]
        items = self._items(answer)
        first_call = len(items) - len(answer.calls)
        for index, item in enumerate(items):
            added = {"type": "response.output_item.added", "output_index": index, "item": item}
            if item["type"] == "message":
                frames += self._message_frames(answer, index)
            elif item["type"] == "function_call":
                frames += self._call_frames(answer, index, index - first_call)
            else:
                frames.append(Frame(added))
            done = {"type": "response.output_item.done", "output_index": index, "item": item}
            frames.append(Frame(done))
        final = "response.incomplete" if answer.stop == "max_tokens" else "response.completed"
        response = self._response(self._status(answer), items, answer.usage)
        frames.append(Frame({"type": final, "response": response}))
        return frames

    def _call_frames(self, answer: Answer, index: int, call_index: int) -> list[Frame]:
        call = answer.calls[call_index]
        started = self._call_item(call, call_index, full=False)
        where = {"item_id": started["id"], "output_index": index}
        frames = [
            Frame({"type": "response.output_item.added", "output_index": index, "item": started})
        ]
        frames += [
            Frame({"type": "response.function_call_arguments.delta", **where, "delta": p}, True)
            for p in chunks(call.arguments, answer.chunk_size)
        ]
        done = {
            "type": "response.function_call_arguments.done",
            **where,
            "name": call.name,
            "arguments": call.arguments,
        }
        return [*frames, Frame(done)]

    def _message_frames(self, answer: Answer, index: int) -> list[Frame]:
        where = {"item_id": self.message_id, "output_index": index, "content_index": 0}
        part = _content_part(answer, full=True)
        started = self._message_item(None, "in_progress")
        frames = [
            Frame({"type": "response.output_item.added", "output_index": index, "item": started}),
            Frame(
                {
                    "type": "response.content_part.added",
                    **where,
                    "part": _content_part(answer, full=False),
                }
            ),
        ]
        if answer.refusal is not None:
            frames += [
                Frame({"type": "response.refusal.delta", **where, "delta": piece}, True)
                for piece in chunks(answer.refusal, answer.chunk_size)
            ]
            frames.append(
                Frame({"type": "response.refusal.done", **where, "refusal": answer.refusal})
            )
        else:
            frames += [
                Frame(
                    {"type": "response.output_text.delta", **where, "delta": p, "logprobs": []},
                    True,
                )
                for p in chunks(answer.text, answer.chunk_size)
            ]
            frames.append(
                Frame(
                    {
                        "type": "response.output_text.done",
                        **where,
                        "text": answer.text,
                        "logprobs": [],
                    }
                )
            )
        frames.append(Frame({"type": "response.content_part.done", **where, "part": part}))
        return frames

    def stream_error(self, error_type: str, message: str, *, error_event: bool) -> list[Payload]:
        # openai-python raises APIError on an event with an `error` key, so after an `error`
        # event `response.failed` is only seen raw; without one, the SDK yields it.
        failed = self._response("failed", [], None)
        code = "rate_limit_exceeded" if "rate_limit" in error_type else "server_error"
        failed["error"] = {"code": code, "message": message}
        frames: list[Payload] = []
        if error_event:
            frames.append({"type": "error", "error": self._error_detail(error_type, message)})
        frames.append({"type": "response.failed", "response": failed})
        return frames

    def encode(self, frames: list[Payload]) -> list[bytes]:
        out = []
        for number, frame in enumerate(frames):
            payload = {**frame, "sequence_number": number} if isinstance(frame, dict) else frame
            out.append(sse(payload, named=True))
        return out


def _chat_usage(usage: Usage) -> dict[str, Any]:
    return {
        "prompt_tokens": usage.input,
        "completion_tokens": usage.output,
        "total_tokens": usage.input + usage.output,
        "prompt_tokens_details": {"cached_tokens": usage.cached, "audio_tokens": 0},
        "completion_tokens_details": {
            "reasoning_tokens": usage.reasoning,
            "audio_tokens": 0,
            "accepted_prediction_tokens": 0,
            "rejected_prediction_tokens": 0,
        },
    }


class ChatWire(OpenAIWire):
    api = "openai.chat"
    context_param = "messages"

    def __init__(self, body: dict[str, Any]) -> None:
        super().__init__(body)
        self.completion_id = new_id("chatcmpl-", 29)
        options = body.get("stream_options")
        self.include_usage = isinstance(options, dict) and options.get("include_usage") is True

    @property
    def max_output_tokens(self) -> int | None:
        value = self.body.get("max_completion_tokens", self.body.get("max_tokens"))
        return value if isinstance(value, int) else None

    def check(self) -> None:
        rules.check_openai_chat(self.body)

    def _envelope(self, obj: str) -> dict[str, Any]:
        return {
            "id": self.completion_id,
            "object": obj,
            "created": self.created,
            "model": self.model,
            "service_tier": "default",
            "system_fingerprint": "fp_fake",
        }

    def _tool_call(self, call: Call, index: int, arguments: str) -> dict[str, Any]:
        return {
            "id": call.call_id or f"call_{self.completion_id[9:33]}{index}",
            "type": "function",
            "function": {"name": call.name, "arguments": arguments},
        }

    @staticmethod
    def _finish(answer: Answer) -> str:
        if answer.calls:
            return "tool_calls"
        return "length" if answer.stop == "max_tokens" else "stop"

    def message(self, answer: Answer) -> dict[str, Any]:
        message: dict[str, Any] = {"role": "assistant", "refusal": None, "annotations": []}
        if answer.refusal is not None:
            message.update(content=None, refusal=answer.refusal)
        else:
            message["content"] = answer.text or None
        if answer.calls:
            message["tool_calls"] = [
                self._tool_call(c, i, c.arguments) for i, c in enumerate(answer.calls)
            ]
        choice = {
            "index": 0,
            "message": message,
            "logprobs": None,
            "finish_reason": self._finish(answer),
        }
        return {
            **self._envelope("chat.completion"),
            "choices": [choice],
            "usage": _chat_usage(answer.usage),
        }

    def _chunk(self, delta: dict[str, Any], finish: str | None = None) -> dict[str, Any]:
        chunk = self._envelope("chat.completion.chunk")
        chunk["choices"] = [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}]
        if self.include_usage:
            chunk["usage"] = None
        return chunk

    def stream(self, answer: Answer) -> list[Frame]:
        if answer.refusal is not None:
            first = {"role": "assistant", "content": None, "refusal": ""}
            frames = [Frame(self._chunk(first))]
            frames += [
                Frame(self._chunk({"refusal": p}), True)
                for p in chunks(answer.refusal, answer.chunk_size)
            ]
        else:
            content = "" if answer.has_message else None
            frames = [
                Frame(self._chunk({"role": "assistant", "content": content, "refusal": None}))
            ]
            frames += [
                Frame(self._chunk({"content": p}), True)
                for p in chunks(answer.text, answer.chunk_size)
            ]
        for index, call in enumerate(answer.calls):
            opened = {"index": index, **self._tool_call(call, index, "")}
            frames.append(Frame(self._chunk({"tool_calls": [opened]})))
            frames += [
                Frame(
                    self._chunk({"tool_calls": [{"index": index, "function": {"arguments": p}}]}),
                    True,
                )
                for p in chunks(call.arguments, answer.chunk_size)
            ]
        frames.append(Frame(self._chunk({}, self._finish(answer))))
        if self.include_usage:
            usage_chunk = self._envelope("chat.completion.chunk")
            usage_chunk.update(choices=[], usage=_chat_usage(answer.usage))
            frames.append(Frame(usage_chunk))
        frames.append(Frame("[DONE]"))
        return frames

    def stream_error(self, error_type: str, message: str, *, error_event: bool) -> list[Payload]:
        return [{"error": self._error_detail(error_type, message)}]

    def encode(self, frames: list[Payload]) -> list[bytes]:
        return [sse(f, named=False) for f in frames]
