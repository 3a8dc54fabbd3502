"""A wire-faithful fake of the OpenAI Responses/Chat and Anthropic Messages HTTP APIs."""

from __future__ import annotations

import argparse
import dataclasses
import http
import json
import secrets
import signal
import socket
import socketserver
import string
import sys
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import FrameType
from typing import Any, ClassVar, Literal, TypeAlias, cast

__all__ = [
    "Behaviour",
    "DropStream",
    "Error",
    "FakeLLMServer",
    "Hang",
    "RecordedRequest",
    "Refusal",
    "Responder",
    "StreamError",
    "Text",
    "ToolCall",
    "Truncated",
    "behaviour_from_dict",
    "behaviour_to_dict",
    "default_responder",
    "main",
]

ApiName: TypeAlias = Literal["openai.responses", "openai.chat", "anthropic.messages"]


@dataclass(frozen=True)
class Text:
    """A normal completion.

    `input_tokens` counts the whole prompt, cached part included, as OpenAI reports it;
    Anthropic reports the uncached remainder as `input_tokens` and the cached part as
    `cache_read_input_tokens`, so both vendors describe the same prompt.
    """

    text: str
    input_tokens: int = 12
    output_tokens: int = 0
    cached_tokens: int = 0
    chunk_size: int = 8
    # Seconds between streamed frames, for a model that writes at a human pace.
    chunk_delay: float = 0.0

    @classmethod
    def json(cls, obj: object, **kw: Any) -> Text:
        return cls(json.dumps(obj), **kw)


@dataclass(frozen=True)
class ToolCall:
    """The model calls one tool."""

    name: str
    arguments: dict[str, object]
    call_id: str = ""
    input_tokens: int = 20
    output_tokens: int = 10


@dataclass(frozen=True)
class Error:
    """An HTTP error response with the vendor's error body; `retry_after` is in seconds."""

    status: int
    message: str = "fake error"
    retry_after: float | None = None
    error_type: str | None = None


@dataclass(frozen=True)
class Hang:
    """Sleep before answering, to provoke client timeouts; then answer with `then`."""

    seconds: float
    then: Behaviour | None = None


@dataclass(frozen=True)
class DropStream:
    """Start an SSE stream, then close the socket mid-stream without the terminating chunk."""

    text: str = "partial reply that never ends"
    after_chunks: int = 2


@dataclass(frozen=True)
class StreamError:
    """An error event inside a 200 stream, shaped as each real API sends it."""

    after_chunks: int = 2
    error_type: str = "overloaded_error"
    message: str = "Overloaded"


@dataclass(frozen=True)
class Truncated:
    """A stream that ends cleanly but without a stop reason or completion event.

    A non-streaming request gets the vendor's "ran out of tokens" answer instead.
    """

    text: str = "cut off"
    after_chunks: int = 2


@dataclass(frozen=True)
class Refusal:
    """The model declines to answer, as each API says so.

    OpenAI finishes normally with `text` as the refusal: a `refusal` content part (Responses)
    or `message.refusal` (Chat). Claude 4 has no refusal text: its streaming classifiers stop
    the answer with `stop_reason: "refusal"` after whatever `partial` text it had written (often
    none), and `text` becomes the explanation in `stop_details`.
    """

    text: str = "I'm sorry, but I can't help with that."
    partial: str = ""


Behaviour: TypeAlias = (
    Text | ToolCall | Refusal | Error | Hang | DropStream | StreamError | Truncated
)
# The behaviours that answer 200 with a message or a stream.
_Spoken: TypeAlias = Text | ToolCall | Refusal | DropStream | StreamError | Truncated


@dataclass(frozen=True)
class RecordedRequest:
    api: ApiName
    method: str
    path: str
    headers: dict[str, str]
    body: dict[str, Any]
    stream: bool
    received_at: float


Responder: TypeAlias = Callable[[RecordedRequest], Behaviour]

_KINDS: dict[str, type[Any]] = {
    "text": Text,
    "tool_call": ToolCall,
    "refusal": Refusal,
    "error": Error,
    "hang": Hang,
    "drop_stream": DropStream,
    "stream_error": StreamError,
    "truncated": Truncated,
}


def behaviour_from_dict(data: object) -> Behaviour:
    """Build a behaviour from `{"kind": "text", "text": ...}` (the control endpoint's format)."""
    if not isinstance(data, dict):
        raise ValueError("a behaviour must be a JSON object")
    fields = dict(data)
    kind = fields.pop("kind", None)
    cls = _KINDS.get(str(kind))
    if cls is None:
        raise ValueError(f"unknown behaviour kind {kind!r}; expected one of {sorted(_KINDS)}")
    if cls is Hang and fields.get("then") is not None:
        fields["then"] = behaviour_from_dict(fields["then"])
    try:
        return cast(Behaviour, cls(**fields))
    except TypeError as exc:
        raise ValueError(f"bad fields for {kind!r}: {exc}") from None


def behaviour_to_dict(behaviour: Behaviour) -> dict[str, Any]:
    """The inverse of `behaviour_from_dict`, for pushing behaviours to another process."""
    kind = next(k for k, cls in _KINDS.items() if isinstance(behaviour, cls))
    out: dict[str, Any] = {"kind": kind}
    for f in dataclasses.fields(behaviour):
        out[f.name] = getattr(behaviour, f.name)
    if isinstance(behaviour, Hang) and behaviour.then is not None:
        out["then"] = behaviour_to_dict(behaviour.then)
    return out


def _new_id(prefix: str, length: int = 24) -> str:
    alphabet = string.ascii_letters + string.digits
    return prefix + "".join(secrets.choice(alphabet) for _ in range(length))


def _estimate_tokens(text: str) -> int:
    return max(1, len(text) // 4)


def _chunks(text: str, size: int) -> list[str]:
    size = max(1, size)
    return [text[i : i + size] for i in range(0, len(text), size)]


def _content_text(content: object) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        parts = [p.get("text") for p in content if isinstance(p, dict)]
        return " ".join(p for p in parts if isinstance(p, str))
    return ""


def _last_user_text(body: dict[str, Any]) -> str:
    items = body.get("messages", body.get("input"))
    if isinstance(items, str):
        return items
    if not isinstance(items, list):
        return ""
    for item in reversed(items):
        if isinstance(item, dict) and item.get("role") == "user":
            text = _content_text(item.get("content"))
            # A user turn that only carries tool results has no text; look further back.
            if text:
                return text
    return ""


def default_responder(request: RecordedRequest) -> Behaviour:
    return Text("fake reply: " + _last_user_text(request.body))


@dataclass(frozen=True)
class _Usage:
    input: int
    output: int
    cached: int


@dataclass(frozen=True)
class _Answer:
    """What the fake model says, whatever the wire: text, or one tool call's JSON arguments.

    A refusal carries its refusal text in `refusal`; `text` is then what was written before it.
    """

    text: str
    usage: _Usage
    tool: str | None = None
    call_id: str = ""
    chunk_size: int = 8
    refusal: str | None = None


def _answer_for(behaviour: _Spoken) -> _Answer:
    if isinstance(behaviour, ToolCall):
        usage = _Usage(behaviour.input_tokens, behaviour.output_tokens, 0)
        args = json.dumps(behaviour.arguments)
        return _Answer(args, usage, tool=behaviour.name, call_id=behaviour.call_id)
    if isinstance(behaviour, Text):
        output = behaviour.output_tokens or _estimate_tokens(behaviour.text)
        usage = _Usage(behaviour.input_tokens, output, behaviour.cached_tokens)
        return _Answer(behaviour.text, usage, chunk_size=behaviour.chunk_size)
    if isinstance(behaviour, Refusal):
        written = _estimate_tokens(behaviour.partial or behaviour.text)
        return _Answer(behaviour.partial, _Usage(12, written, 0), refusal=behaviour.text)
    if isinstance(behaviour, StreamError):
        text = "a partial reply before the stream fails"
    else:
        text = behaviour.text
    return _Answer(text, _Usage(12, _estimate_tokens(text), 0))


Payload: TypeAlias = dict[str, Any] | str
Frames: TypeAlias = list[Payload]


def _sse(payload: Payload, *, named: bool) -> bytes:
    data = payload if isinstance(payload, str) else json.dumps(payload)
    if named and isinstance(payload, dict):
        return f"event: {payload['type']}\ndata: {data}\n\n".encode()
    return f"data: {data}\n\n".encode()


class _Wire:
    """One API's wire format, made once per request so its ids stay consistent."""

    api: ClassVar[ApiName]
    default_model: ClassVar[str]
    auth_message: ClassVar[str]

    def __init__(self, body: dict[str, Any]) -> None:
        self.body = body
        self.model = str(body.get("model") or self.default_model)
        self.created = int(time.time())
        self.request_id = _new_id("req_")

    def message(self, answer: _Answer, *, truncated: bool) -> dict[str, Any]:
        raise NotImplementedError

    def stream(self, answer: _Answer) -> tuple[Frames, Frames, Frames]:
        """The frames of a full stream: (before the deltas, the deltas, after the deltas)."""
        raise NotImplementedError

    def stream_error(self, error_type: str, message: str) -> Frames:
        raise NotImplementedError

    def error_body(self, status: int, message: str, error_type: str | None) -> dict[str, Any]:
        raise NotImplementedError

    def error_status(self, error_type: str) -> int:
        raise NotImplementedError

    def headers(self) -> dict[str, str]:
        raise NotImplementedError

    def encode(self, frames: Frames) -> list[bytes]:
        return [_sse(f, named=True) for f in frames]


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
_OPENAI_STATUS = {"rate_limit_exceeded": 429, "invalid_request_error": 400, "server_error": 500}


class _OpenAIWire(_Wire):
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

    def error_body(self, status: int, message: str, error_type: str | None) -> dict[str, Any]:
        param: str | None = None
        if error_type is None:
            fallback = ("server_error" if status >= 500 else "invalid_request_error", None)
            kind, code = _OPENAI_DEFAULT_ERRORS.get(status, fallback)
        elif error_type == "context_length_exceeded":
            kind, code, param = "invalid_request_error", error_type, self.context_param
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


def _responses_usage(usage: _Usage) -> dict[str, Any]:
    return {
        "input_tokens": usage.input,
        "input_tokens_details": {"cached_tokens": usage.cached, "cache_write_tokens": 0},
        "output_tokens": usage.output,
        "output_tokens_details": {"reasoning_tokens": 0},
        "total_tokens": usage.input + usage.output,
    }


def _echo_tool(tool: object) -> object:
    if isinstance(tool, dict) and tool.get("type") == "function":
        return {"description": None, "parameters": None, "strict": True, **tool}
    return tool


def _output_text_part(text: str) -> dict[str, Any]:
    return {"type": "output_text", "text": text, "annotations": [], "logprobs": []}


def _refusal_part(refusal: str) -> dict[str, Any]:
    return {"type": "refusal", "refusal": refusal}


def _content_part(answer: _Answer, *, full: bool) -> dict[str, Any]:
    """The message's one content part: the answer's text, or its refusal."""
    if answer.refusal is not None:
        return _refusal_part(answer.refusal if full else "")
    return _output_text_part(answer.text if full else "")


class _ResponsesWire(_OpenAIWire):
    api = "openai.responses"

    def __init__(self, body: dict[str, Any]) -> None:
        super().__init__(body)
        self.response_id = _new_id("resp_", 32)
        self.message_id = _new_id("msg_", 32)
        self.call_item_id = _new_id("fc_", 32)
        self.call_id = _new_id("call_")

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
        self, status: str, output: list[dict[str, Any]], usage: _Usage | None
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

    def _message_item(self, part: dict[str, Any] | None, status: str) -> dict[str, Any]:
        return {
            "id": self.message_id,
            "type": "message",
            "status": status,
            "role": "assistant",
            "content": [] if part is None else [part],
        }

    def _call_item(self, answer: _Answer, arguments: str, status: str) -> dict[str, Any]:
        return {
            "id": self.call_item_id,
            "type": "function_call",
            "status": status,
            "arguments": arguments,
            "call_id": answer.call_id or self.call_id,
            "name": answer.tool,
        }

    def message(self, answer: _Answer, *, truncated: bool) -> dict[str, Any]:
        if answer.tool is not None:
            return self._response(
                "completed", [self._call_item(answer, answer.text, "completed")], answer.usage
            )
        status = "incomplete" if truncated else "completed"
        item = self._message_item(_content_part(answer, full=True), status)
        return self._response(status, [item], answer.usage)

    def stream(self, answer: _Answer) -> tuple[Frames, Frames, Frames]:
        in_progress = self._response("in_progress", [], None)
        head: Frames = [
            {"type": "response.created", "response": in_progress},
            {"type": "response.in_progress", "response": in_progress},
        ]
        if answer.tool is not None:
            return self._tool_stream(answer, head)
        where = {"item_id": self.message_id, "output_index": 0, "content_index": 0}
        head += [
            {
                "type": "response.output_item.added",
                "output_index": 0,
                "item": self._message_item(None, "in_progress"),
            },
            {
                "type": "response.content_part.added",
                **where,
                "part": _content_part(answer, full=False),
            },
        ]
        deltas, done = self._content_frames(answer, where)
        part = _content_part(answer, full=True)
        item = self._message_item(part, "completed")
        tail: Frames = [
            done,
            {"type": "response.content_part.done", **where, "part": part},
            {"type": "response.output_item.done", "output_index": 0, "item": item},
            {
                "type": "response.completed",
                "response": self._response("completed", [item], answer.usage),
            },
        ]
        return head, deltas, tail

    @staticmethod
    def _content_frames(answer: _Answer, where: dict[str, Any]) -> tuple[Frames, Payload]:
        """The deltas of the message's content part, and the event that closes it."""
        if answer.refusal is not None:
            refusals: Frames = [
                {"type": "response.refusal.delta", **where, "delta": piece}
                for piece in _chunks(answer.refusal, answer.chunk_size)
            ]
            return refusals, {"type": "response.refusal.done", **where, "refusal": answer.refusal}
        deltas: Frames = [
            {"type": "response.output_text.delta", **where, "delta": piece, "logprobs": []}
            for piece in _chunks(answer.text, answer.chunk_size)
        ]
        done = {"type": "response.output_text.done", **where, "text": answer.text, "logprobs": []}
        return deltas, done

    def _tool_stream(self, answer: _Answer, head: Frames) -> tuple[Frames, Frames, Frames]:
        where = {"item_id": self.call_item_id, "output_index": 0}
        head = [
            *head,
            {
                "type": "response.output_item.added",
                "output_index": 0,
                "item": self._call_item(answer, "", "in_progress"),
            },
        ]
        deltas: Frames = [
            {"type": "response.function_call_arguments.delta", **where, "delta": piece}
            for piece in _chunks(answer.text, answer.chunk_size)
        ]
        item = self._call_item(answer, answer.text, "completed")
        tail: Frames = [
            {
                "type": "response.function_call_arguments.done",
                **where,
                "name": answer.tool,
                "arguments": answer.text,
            },
            {"type": "response.output_item.done", "output_index": 0, "item": item},
            {
                "type": "response.completed",
                "response": self._response("completed", [item], answer.usage),
            },
        ]
        return head, deltas, tail

    def stream_error(self, error_type: str, message: str) -> Frames:
        # The live API nests the details under "error" (unlike its own reference page);
        # openai-python raises APIError on that key, so `response.failed` is only seen raw.
        failed = self._response("failed", [], None)
        code = "rate_limit_exceeded" if "rate_limit" in error_type else "server_error"
        failed["error"] = {"code": code, "message": message}
        return [
            {"type": "error", "error": self._error_detail(error_type, message)},
            {"type": "response.failed", "response": failed},
        ]

    def encode(self, frames: Frames) -> list[bytes]:
        out = []
        for number, frame in enumerate(frames):
            payload = {**frame, "sequence_number": number} if isinstance(frame, dict) else frame
            out.append(_sse(payload, named=True))
        return out


def _chat_usage(usage: _Usage) -> dict[str, Any]:
    return {
        "prompt_tokens": usage.input,
        "completion_tokens": usage.output,
        "total_tokens": usage.input + usage.output,
        "prompt_tokens_details": {"cached_tokens": usage.cached, "audio_tokens": 0},
        "completion_tokens_details": {
            "reasoning_tokens": 0,
            "audio_tokens": 0,
            "accepted_prediction_tokens": 0,
            "rejected_prediction_tokens": 0,
        },
    }


class _ChatWire(_OpenAIWire):
    api = "openai.chat"
    context_param = "messages"

    def __init__(self, body: dict[str, Any]) -> None:
        super().__init__(body)
        self.completion_id = _new_id("chatcmpl-", 29)
        self.call_id = _new_id("call_")
        options = body.get("stream_options")
        self.include_usage = isinstance(options, dict) and options.get("include_usage") is True

    def _envelope(self, obj: str) -> dict[str, Any]:
        return {
            "id": self.completion_id,
            "object": obj,
            "created": self.created,
            "model": self.model,
            "service_tier": "default",
            "system_fingerprint": "fp_fake",
        }

    def _tool_call(self, answer: _Answer, arguments: str) -> dict[str, Any]:
        return {
            "id": answer.call_id or self.call_id,
            "type": "function",
            "function": {"name": answer.tool, "arguments": arguments},
        }

    def message(self, answer: _Answer, *, truncated: bool) -> dict[str, Any]:
        message: dict[str, Any] = {"role": "assistant", "refusal": None, "annotations": []}
        if answer.tool is not None:
            message.update(content=None, tool_calls=[self._tool_call(answer, answer.text)])
            finish = "tool_calls"
        elif answer.refusal is not None:
            message.update(content=None, refusal=answer.refusal)
            finish = "stop"
        else:
            message["content"] = answer.text
            finish = "length" if truncated else "stop"
        choice = {"index": 0, "message": message, "logprobs": None, "finish_reason": finish}
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

    def stream(self, answer: _Answer) -> tuple[Frames, Frames, Frames]:
        pieces = _chunks(answer.text, answer.chunk_size)
        if answer.tool is not None:
            call = {"index": 0, **self._tool_call(answer, "")}
            first = {"role": "assistant", "content": None, "tool_calls": [call], "refusal": None}
            deltas: Frames = [
                self._chunk({"tool_calls": [{"index": 0, "function": {"arguments": p}}]})
                for p in pieces
            ]
            finish = "tool_calls"
        elif answer.refusal is not None:
            first = {"role": "assistant", "content": None, "refusal": ""}
            pieces = _chunks(answer.refusal, answer.chunk_size)
            deltas = [self._chunk({"refusal": p}) for p in pieces]
            finish = "stop"
        else:
            first = {"role": "assistant", "content": "", "refusal": None}
            deltas = [self._chunk({"content": p}) for p in pieces]
            finish = "stop"
        tail: Frames = [self._chunk({}, finish)]
        if self.include_usage:
            usage_chunk = self._envelope("chat.completion.chunk")
            usage_chunk.update(choices=[], usage=_chat_usage(answer.usage))
            tail.append(usage_chunk)
        tail.append("[DONE]")
        return [self._chunk(first)], deltas, tail

    def stream_error(self, error_type: str, message: str) -> Frames:
        return [{"error": self._error_detail(error_type, message)}]

    def encode(self, frames: Frames) -> list[bytes]:
        return [_sse(f, named=False) for f in frames]


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
}


class _AnthropicWire(_Wire):
    api = "anthropic.messages"
    default_model = "claude-fake"
    auth_message = "invalid x-api-key"

    def __init__(self, body: dict[str, Any]) -> None:
        super().__init__(body)
        self.message_id = _new_id("msg_01")
        self.call_id = _new_id("toolu_01")

    def headers(self) -> dict[str, str]:
        return {"request-id": self.request_id}

    def _type(self, status: int, error_type: str | None) -> str:
        if error_type is not None:
            return _ANTHROPIC_ALIASES.get(error_type, error_type)
        fallback = "api_error" if status >= 500 else "invalid_request_error"
        return _ANTHROPIC_TYPES.get(status, fallback)

    def error_body(self, status: int, message: str, error_type: str | None) -> dict[str, Any]:
        return {
            "type": "error",
            "error": {"type": self._type(status, error_type), "message": message},
            "request_id": self.request_id,
        }

    def error_status(self, error_type: str) -> int:
        return _ANTHROPIC_STATUS.get(_ANTHROPIC_ALIASES.get(error_type, error_type), 500)

    def _usage(self, usage: _Usage, output: int) -> dict[str, Any]:
        return {
            "input_tokens": max(0, usage.input - usage.cached),
            "cache_creation_input_tokens": 0,
            "cache_read_input_tokens": usage.cached,
            "cache_creation": {"ephemeral_5m_input_tokens": 0, "ephemeral_1h_input_tokens": 0},
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

    def _block(self, answer: _Answer, *, full: bool) -> dict[str, Any]:
        if answer.tool is None:
            return {"type": "text", "text": answer.text if full else ""}
        arguments = json.loads(answer.text) if full else {}
        return {
            "type": "tool_use",
            "id": answer.call_id or self.call_id,
            "name": answer.tool,
            "input": arguments,
        }

    @staticmethod
    def _has_block(answer: _Answer) -> bool:
        """A refusal that came before any text has no content block at all."""
        return answer.refusal is None or bool(answer.text)

    @staticmethod
    def _stop(answer: _Answer, *, truncated: bool) -> dict[str, Any]:
        """The stop reason, with `stop_details` when it is a refusal."""
        if answer.refusal is not None:
            details = {"type": "refusal", "category": None, "explanation": answer.refusal}
            return {"stop_reason": "refusal", "stop_details": details}
        if answer.tool is not None:
            return {"stop_reason": "tool_use"}
        return {"stop_reason": "max_tokens" if truncated else "end_turn"}

    def message(self, answer: _Answer, *, truncated: bool) -> dict[str, Any]:
        stop = self._stop(answer, truncated=truncated)
        usage = self._usage(answer.usage, answer.usage.output)
        content = [self._block(answer, full=True)] if self._has_block(answer) else []
        message = self._message(content, stop["stop_reason"], usage)
        message.update(stop)
        return message

    def stream(self, answer: _Answer) -> tuple[Frames, Frames, Frames]:
        # The live API reports a token or so of output at message_start, the total at the end.
        start = self._message([], None, self._usage(answer.usage, 1))
        has_block = self._has_block(answer)
        head: Frames = [{"type": "message_start", "message": start}]
        if has_block:
            block = self._block(answer, full=False)
            head.append({"type": "content_block_start", "index": 0, "content_block": block})
        head.append({"type": "ping"})
        pieces = _chunks(answer.text, answer.chunk_size)
        if answer.tool is None:
            deltas = [{"type": "text_delta", "text": p} for p in pieces]
        else:
            deltas = [{"type": "input_json_delta", "partial_json": p} for p in pieces]
        final_usage = self._usage(answer.usage, answer.usage.output)
        del final_usage["cache_creation"], final_usage["service_tier"]
        stop = {**self._stop(answer, truncated=False), "stop_sequence": None}
        tail: Frames = [
            {"type": "message_delta", "delta": stop, "usage": final_usage},
            {"type": "message_stop"},
        ]
        if has_block:
            tail.insert(0, {"type": "content_block_stop", "index": 0})
        frames: Frames = [{"type": "content_block_delta", "index": 0, "delta": d} for d in deltas]
        return head, frames, tail

    def stream_error(self, error_type: str, message: str) -> Frames:
        kind = _ANTHROPIC_ALIASES.get(error_type, error_type)
        return [{"type": "error", "error": {"type": kind, "message": message}}]


_API_ROUTES: dict[str, type[_Wire]] = {
    "/v1/responses": _ResponsesWire,
    "/v1/chat/completions": _ChatWire,
    "/v1/messages": _AnthropicWire,
}

# Clients that time out or hang up leave broken pipes and resets behind; those are not bugs.
_QUIET_ERRORS = (OSError,)


def _reason(status: int) -> str:
    try:
        return http.HTTPStatus(status).phrase
    except ValueError:
        return "Overloaded" if status == 529 else "Error"


def _retry_after(seconds: float) -> str:
    return str(int(seconds)) if float(seconds).is_integer() else str(seconds)


class _HTTPServer(ThreadingHTTPServer):
    # socketserver listens with a backlog of 5; a burst of concurrent clients then waits
    # out a 1 s SYN retry.
    request_queue_size = 1024

    def __init__(self, address: tuple[str, int], owner: FakeLLMServer) -> None:
        self.owner = owner
        self._open: set[socket.socket] = set()
        self._workers: list[threading.Thread] = []
        self._open_lock = threading.Lock()
        super().__init__(address, _Handler)

    def server_bind(self) -> None:
        # HTTPServer.server_bind resolves a FQDN, which can stall for seconds without DNS.
        socketserver.TCPServer.server_bind(self)
        host, port = self.server_address[:2]
        self.server_name = str(host)
        self.server_port = int(port)

    def process_request(self, request: Any, client_address: Any) -> None:
        # Daemon threads so a stuck one never blocks interpreter exit; socketserver does not
        # join daemon threads, so they are tracked here and joined by close_all.
        worker = threading.Thread(
            target=self.process_request_thread,
            args=(request, client_address),
            name="fake-llm-connection",
            daemon=True,
        )
        with self._open_lock:
            self._open.add(request)
            self._workers = [w for w in self._workers if w.is_alive()]
            self._workers.append(worker)
        worker.start()

    def shutdown_request(self, request: Any) -> None:
        with self._open_lock:
            self._open.discard(request)
        super().shutdown_request(request)

    def close_all(self, timeout: float) -> None:
        """Hang up on every client, including idle keep-alive ones, and wait for the handlers."""
        with self._open_lock:
            connections, workers = list(self._open), list(self._workers)
        for connection in connections:
            try:
                connection.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
        deadline = time.monotonic() + timeout
        for worker in workers:
            worker.join(max(0.0, deadline - time.monotonic()))

    def handle_error(self, request: Any, client_address: Any) -> None:
        if isinstance(sys.exc_info()[1], _QUIET_ERRORS):
            return
        super().handle_error(request, client_address)


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "fake-llm/1"
    # Headers, body and each SSE frame are separate writes: with Nagle on, every answer
    # stalls ~40 ms on the client's delayed ACK.
    disable_nagle_algorithm = True

    @property
    def _owner(self) -> FakeLLMServer:
        return cast(_HTTPServer, self.server).owner

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def handle(self) -> None:
        try:
            super().handle()
        except _QUIET_ERRORS:
            self.close_connection = True

    def do_GET(self) -> None:
        self._dispatch()

    def do_POST(self) -> None:
        self._dispatch()

    def _dispatch(self) -> None:
        path = self.path.split("?", 1)[0]
        control = _CONTROL_ROUTES.get((self.command, path))
        if control is not None:
            control(self)
            return
        wire = _API_ROUTES.get(path) if self.command == "POST" else None
        if wire is None:
            self._not_found(path)
            return
        self._serve_api(wire)

    def _read_body(self) -> bytes:
        if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
            return self._read_chunked()
        length = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(length) if length > 0 else b""

    def _read_chunked(self) -> bytes:
        parts = []
        while True:
            size = int(self.rfile.readline().split(b";")[0].strip() or b"0", 16)
            if size == 0:
                break
            parts.append(self.rfile.read(size))
            self.rfile.readline()
        while self.rfile.readline() not in (b"\r\n", b"\n", b""):
            pass
        return b"".join(parts)

    def _read_json(self) -> object:
        raw = self._read_body()
        return json.loads(raw) if raw.strip() else None

    def _not_found(self, path: str) -> None:
        self._read_body()
        vendor: type[_Wire] = _AnthropicWire if "anthropic-version" in self.headers else _ChatWire
        wire = vendor({})
        message = f"Invalid URL ({self.command} {path})"
        if vendor is _AnthropicWire:
            message = "Not Found"
        self._send_json(404, wire.error_body(404, message, None), wire.headers())

    def _serve_api(self, wire_cls: type[_Wire]) -> None:
        try:
            body = self._read_json()
        except ValueError:
            body = None
        wire = wire_cls(body if isinstance(body, dict) else {})
        request = RecordedRequest(
            api=wire.api,
            method=self.command,
            path=self.path,
            headers={k.lower(): v for k, v in self.headers.items()},
            body=wire.body,
            stream=wire.body.get("stream") is True,
            received_at=time.monotonic(),
        )
        owner = self._owner
        owner._record(request)
        behaviour: Behaviour
        if not isinstance(body, dict):
            behaviour = Error(400, "We could not parse the JSON body of your request.")
        elif not owner._authorized(request.headers):
            behaviour = Error(401, wire.auth_message)
        else:
            behaviour = owner._next(request)
        self._answer(wire, request, behaviour)

    def _answer(self, wire: _Wire, request: RecordedRequest, behaviour: Behaviour) -> None:
        owner = self._owner
        while isinstance(behaviour, Hang):
            if not owner._pause(behaviour.seconds):
                return
            behaviour = behaviour.then or owner._fallback(request)
        if not owner._pause(owner.latency):
            return
        if isinstance(behaviour, StreamError) and not request.stream:
            status = wire.error_status(behaviour.error_type)
            behaviour = Error(status, behaviour.message, error_type=behaviour.error_type)
        if isinstance(behaviour, Error):
            self._send_error(wire, behaviour)
        elif request.stream:
            self._send_stream(wire, behaviour)
        else:
            self._send_message(wire, behaviour)

    def _send_json(self, status: int, payload: object, headers: dict[str, str]) -> None:
        data = json.dumps(payload).encode()
        self.send_response(status, _reason(status))
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        for name, value in headers.items():
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(data)

    def _send_error(self, wire: _Wire, error: Error) -> None:
        headers = wire.headers()
        if error.retry_after is not None:
            headers["Retry-After"] = _retry_after(error.retry_after)
        body = wire.error_body(error.status, error.message, error.error_type)
        self._send_json(error.status, body, headers)

    def _send_message(self, wire: _Wire, behaviour: _Spoken) -> None:
        answer = _answer_for(behaviour)
        body = wire.message(answer, truncated=isinstance(behaviour, Truncated))
        if not isinstance(behaviour, DropStream):
            self._send_json(200, body, wire.headers())
            return
        data = json.dumps(body).encode()
        self.send_response(200, "OK")
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        for name, value in wire.headers().items():
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(data[: len(data) // 2])
        self._drop()

    def _send_stream(self, wire: _Wire, behaviour: _Spoken) -> None:
        head, deltas, tail = wire.stream(_answer_for(behaviour))
        if isinstance(behaviour, Text | ToolCall | Refusal):
            frames = head + deltas + tail
        else:
            frames = head + deltas[: max(0, behaviour.after_chunks)]
        if isinstance(behaviour, StreamError):
            frames += wire.stream_error(behaviour.error_type, behaviour.message)
        self.send_response(200, "OK")
        self.send_header("Content-Type", "text/event-stream; charset=utf-8")
        self.send_header("Cache-Control", "no-cache")
        self.send_header("Transfer-Encoding", "chunked")
        for name, value in wire.headers().items():
            self.send_header(name, value)
        self.end_headers()
        delay = behaviour.chunk_delay if isinstance(behaviour, Text) else 0.0
        for data in wire.encode(frames):
            self.wfile.write(b"%x\r\n%s\r\n" % (len(data), data))
            if delay:
                time.sleep(delay)
        if isinstance(behaviour, DropStream):
            self._drop()
        else:
            self.wfile.write(b"0\r\n\r\n")

    def _drop(self) -> None:
        self.close_connection = True
        try:
            self.connection.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass

    def _control_push(self) -> None:
        try:
            data = self._read_json()
            items = data.get("behaviours") if isinstance(data, dict) else data
            if not isinstance(items, list):
                raise ValueError("expected a JSON list of behaviours")
            behaviours = [behaviour_from_dict(item) for item in items]
        except ValueError as exc:
            self._send_json(400, {"error": str(exc)}, {})
            return
        self._owner.push(*behaviours)
        self._send_json(200, {"queued": self._owner._queued()}, {})

    def _control_reset(self) -> None:
        self._read_body()
        self._owner.reset()
        self._send_json(200, {"ok": True}, {})

    def _control_requests(self) -> None:
        self._send_json(200, [dataclasses.asdict(r) for r in self._owner.requests], {})

    def _control_config(self) -> None:
        try:
            data = self._read_json()
            if not isinstance(data, dict):
                raise ValueError("expected a JSON object")
            if "latency" in data:
                self._owner.latency = float(data["latency"])
        except (ValueError, TypeError) as exc:
            self._send_json(400, {"error": str(exc)}, {})
            return
        self._send_json(200, {"latency": self._owner.latency}, {})


_CONTROL_ROUTES: dict[tuple[str, str], Callable[[_Handler], None]] = {
    ("POST", "/_fake/push"): _Handler._control_push,
    ("POST", "/_fake/reset"): _Handler._control_reset,
    ("GET", "/_fake/requests"): _Handler._control_requests,
    ("POST", "/_fake/config"): _Handler._control_config,
}


class FakeLLMServer:
    """A loopback HTTP server that the official SDKs accept as OpenAI or Anthropic."""

    def __init__(
        self,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        latency: float = 0.0,
        responder: Responder | None = None,
        api_key: str | None = None,
    ) -> None:
        self.latency = latency
        self._address = (host, port)
        self._api_key = api_key
        self._responder = responder
        self._lock = threading.Lock()
        self._script: deque[Behaviour] = deque()
        self._requests: list[RecordedRequest] = []
        self._stopping = threading.Event()
        self._httpd: _HTTPServer | None = None
        self._thread: threading.Thread | None = None

    def start(self) -> FakeLLMServer:
        if self._httpd is not None:
            return self
        self._stopping.clear()
        httpd = _HTTPServer(self._address, self)
        self._httpd = httpd
        self._thread = threading.Thread(
            target=httpd.serve_forever, kwargs={"poll_interval": 0.05}, name="fake-llm", daemon=True
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        httpd, thread = self._httpd, self._thread
        if httpd is None:
            return
        self._stopping.set()
        httpd.shutdown()
        httpd.close_all(timeout=5.0)
        httpd.server_close()
        if thread is not None:
            thread.join()
        self._httpd = self._thread = None

    def __enter__(self) -> FakeLLMServer:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    @property
    def url(self) -> str:
        if self._httpd is None:
            raise RuntimeError("FakeLLMServer is not started")
        host, port = self._httpd.server_address[:2]
        host = str(host)
        return f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"

    @property
    def openai_base_url(self) -> str:
        return self.url + "/v1"

    @property
    def anthropic_base_url(self) -> str:
        return self.url

    def push(self, *behaviours: Behaviour) -> None:
        with self._lock:
            self._script.extend(behaviours)

    def set_responder(self, responder: Responder | None) -> None:
        with self._lock:
            self._responder = responder

    @property
    def requests(self) -> list[RecordedRequest]:
        with self._lock:
            return list(self._requests)

    def reset(self) -> None:
        with self._lock:
            self._script.clear()
            self._requests.clear()
            self._responder = None

    def _record(self, request: RecordedRequest) -> None:
        with self._lock:
            self._requests.append(request)

    def _queued(self) -> int:
        with self._lock:
            return len(self._script)

    def _authorized(self, headers: dict[str, str]) -> bool:
        if self._api_key is None:
            return True
        bearer = headers.get("authorization", "")
        return bearer == f"Bearer {self._api_key}" or headers.get("x-api-key") == self._api_key

    def _next(self, request: RecordedRequest) -> Behaviour:
        with self._lock:
            if self._script:
                return self._script.popleft()
        return self._fallback(request)

    def _fallback(self, request: RecordedRequest) -> Behaviour:
        with self._lock:
            responder = self._responder or default_responder
        try:
            return responder(request)
        except Exception as exc:
            return Error(500, f"fake responder failed: {exc!r}")

    def _pause(self, seconds: float) -> bool:
        """Sleep unless the server stops first; False means it is stopping."""
        if seconds <= 0:
            return not self._stopping.is_set()
        return not self._stopping.wait(seconds)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m vamu_tasks.testing.fake_llm",
        description="Serve a fake OpenAI/Anthropic API until SIGTERM or SIGINT.",
    )
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--latency", type=float, default=0.0, help="seconds before each answer")
    parser.add_argument("--api-key", default=None, help="reject requests without this key")
    args = parser.parse_args(argv)

    stop = threading.Event()

    def on_signal(signum: int, frame: FrameType | None) -> None:
        stop.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    server = FakeLLMServer(
        host=args.host, port=args.port, latency=args.latency, api_key=args.api_key
    )
    with server:
        print(json.dumps({"url": server.url}), flush=True)
        while not stop.wait(0.5):
            pass
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
