"""What the fake model does for one request, and what it says, whatever the wire.

A test pushes behaviours (`FakeLLMServer.push`) or sets a responder; the wires in
`openai_wire` and `anthropic_wire` turn each into the vendor's own JSON or SSE frames.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal, TypeAlias, cast

ApiName: TypeAlias = Literal["openai.responses", "openai.chat", "anthropic.messages"]


@dataclass(frozen=True)
class Text:
    """A normal completion.

    `input_tokens` counts the whole prompt, cached part and cache writes included, as OpenAI
    reports it; Anthropic reports the uncached remainder as `input_tokens` and the rest as
    `cache_read_input_tokens` and `cache_creation_input_tokens`, so both vendors describe the
    same prompt. `reasoning_tokens` > 0 makes an OpenAI Responses answer start with a
    `reasoning` output item, as gpt-5 and the o-series models' answers do.
    """

    text: str
    input_tokens: int = 12
    output_tokens: int = 0
    cached_tokens: int = 0
    cache_write_tokens: int = 0
    reasoning_tokens: int = 0
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
class Turn:
    """One model turn with text and several tool calls (parallel calls), in this order.

    Claude writes a sentence before its `tool_use` blocks; OpenAI models may emit several
    `function_call` items in one response.
    """

    calls: tuple[ToolCall, ...]
    text: str = ""
    input_tokens: int = 30
    output_tokens: int = 20
    reasoning_tokens: int = 0


@dataclass(frozen=True)
class MaxTokens:
    """The answer stops at the request's output token limit, in either mode.

    OpenAI: `status: "incomplete"` with `incomplete_details.reason: "max_output_tokens"` (a
    streamed `response.incomplete` event); Anthropic: `stop_reason: "max_tokens"` (streamed in
    `message_delta`, then `message_stop`); Chat Completions: `finish_reason: "length"`.
    """

    text: str = "a reply cut off at the token lim"
    input_tokens: int = 12


@dataclass(frozen=True)
class Error:
    """An HTTP error response with the vendor's error body; `retry_after` is in seconds."""

    status: int
    message: str = "fake error"
    retry_after: float | None = None
    error_type: str | None = None
    # The OpenAI `param` of the error body, where the vendor names one.
    param: str | None = None


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
    """A failure inside a 200 stream, shaped as each real API sends it.

    Anthropic sends `event: error` with the error `type` (`overloaded_error`,
    `rate_limit_error`, `api_error`). OpenAI's Responses stream sends an `error` event and then
    `response.failed`, whose `response.error.code` is `rate_limit_exceeded` or `server_error`;
    with `openai_error_event=False` only `response.failed` is sent, as the API reference shows
    it. `error_type` may be named either vendor's way: it is translated for the other.
    """

    after_chunks: int = 2
    error_type: str = "overloaded_error"
    message: str = "Overloaded"
    openai_error_event: bool = True


@dataclass(frozen=True)
class Truncated:
    """A stream that ends cleanly but without a stop reason or completion event.

    A non-streaming request gets the vendor's "ran out of tokens" answer instead (`MaxTokens`).
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
    Text
    | ToolCall
    | Turn
    | MaxTokens
    | Refusal
    | Error
    | Hang
    | DropStream
    | StreamError
    | Truncated
)
# The behaviours that answer 200 with a message or a stream.
Spoken: TypeAlias = (
    Text | ToolCall | Turn | MaxTokens | Refusal | DropStream | StreamError | Truncated
)


@dataclass(frozen=True)
class RecordedRequest:
    api: ApiName
    method: str
    path: str
    headers: dict[str, str]
    body: dict[str, Any]
    stream: bool
    received_at: float
    # The batch that carried the request (OpenAI `batch_…`, Anthropic `msgbatch_…`), if any.
    batch_id: str | None = None


Responder: TypeAlias = Callable[[RecordedRequest], Behaviour]

_KINDS: dict[str, type[Any]] = {
    "text": Text,
    "tool_call": ToolCall,
    "turn": Turn,
    "max_tokens": MaxTokens,
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
    if cls is Turn and isinstance(fields.get("calls"), list):
        fields["calls"] = tuple(_tool_call(c) for c in fields["calls"])
    try:
        return cast(Behaviour, cls(**fields))
    except TypeError as exc:
        raise ValueError(f"bad fields for {kind!r}: {exc}") from None


def _tool_call(data: object) -> ToolCall:
    call = behaviour_from_dict({"kind": "tool_call", **data} if isinstance(data, dict) else data)
    if not isinstance(call, ToolCall):
        raise ValueError("a turn's calls must be tool calls")
    return call


def behaviour_to_dict(behaviour: Behaviour) -> dict[str, Any]:
    """The inverse of `behaviour_from_dict`, for pushing behaviours to another process."""
    kind = next(k for k, cls in _KINDS.items() if isinstance(behaviour, cls))
    out: dict[str, Any] = {"kind": kind}
    for f in dataclasses.fields(behaviour):
        out[f.name] = getattr(behaviour, f.name)
    if isinstance(behaviour, Hang) and behaviour.then is not None:
        out["then"] = behaviour_to_dict(behaviour.then)
    if isinstance(behaviour, Turn):
        out["calls"] = [
            {k: v for k, v in behaviour_to_dict(c).items() if k != "kind"} for c in behaviour.calls
        ]
    return out


def content_text(content: object) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        parts = [p.get("text") for p in content if isinstance(p, dict)]
        return " ".join(p for p in parts if isinstance(p, str))
    return ""


def last_user_text(body: dict[str, Any]) -> str:
    items = body.get("messages", body.get("input"))
    if isinstance(items, str):
        return items
    if not isinstance(items, list):
        return ""
    for item in reversed(items):
        if isinstance(item, dict) and item.get("role") == "user":
            text = content_text(item.get("content"))
            # A user turn that only carries tool results has no text; look further back.
            if text:
                return text
    return ""


def default_responder(request: RecordedRequest) -> Behaviour:
    return Text("fake reply: " + last_user_text(request.body))


def estimate_tokens(text: str) -> int:
    return max(1, len(text) // 4)


@dataclass(frozen=True)
class Usage:
    input: int
    output: int
    cached: int = 0
    cache_write: int = 0
    reasoning: int = 0
    # The part of `cache_write` written with Anthropic's 1-hour TTL.
    cache_write_1h: int = 0


@dataclass(frozen=True)
class Call:
    """One tool call: the tool's name, its JSON arguments as text, and the call id (or "")."""

    name: str
    arguments: str
    call_id: str = ""


@dataclass(frozen=True)
class Answer:
    """What the fake model says, whatever the wire: text, then tool calls.

    A refusal carries its refusal text in `refusal`; `text` is then what was written before it.
    `stop` is "max_tokens" when the answer ends at the output token limit.
    """

    text: str
    usage: Usage
    calls: tuple[Call, ...] = ()
    chunk_size: int = 8
    refusal: str | None = None
    stop: Literal["end", "max_tokens"] = "end"

    @property
    def has_message(self) -> bool:
        """Whether the answer has a text (or refusal) part: any text, or no tool call at all."""
        return bool(self.text) or self.refusal is not None or not self.calls


def _call(call: ToolCall) -> Call:
    return Call(call.name, json.dumps(call.arguments), call.call_id)


def answer_for(behaviour: Spoken, max_output_tokens: int | None = None) -> Answer:
    if isinstance(behaviour, ToolCall):
        usage = Usage(behaviour.input_tokens, behaviour.output_tokens)
        return Answer("", usage, calls=(_call(behaviour),))
    if isinstance(behaviour, Turn):
        usage = Usage(
            behaviour.input_tokens,
            behaviour.output_tokens,
            reasoning=behaviour.reasoning_tokens,
        )
        return Answer(behaviour.text, usage, calls=tuple(_call(c) for c in behaviour.calls))
    if isinstance(behaviour, Text):
        output = behaviour.output_tokens or estimate_tokens(behaviour.text)
        usage = Usage(
            behaviour.input_tokens,
            output,
            behaviour.cached_tokens,
            behaviour.cache_write_tokens,
            behaviour.reasoning_tokens,
        )
        return Answer(behaviour.text, usage, chunk_size=behaviour.chunk_size)
    if isinstance(behaviour, Refusal):
        written = estimate_tokens(behaviour.partial or behaviour.text)
        return Answer(behaviour.partial, Usage(12, written), refusal=behaviour.text)
    if isinstance(behaviour, MaxTokens | Truncated):
        # The model wrote until the limit: the whole budget is spent.
        output = max_output_tokens or estimate_tokens(behaviour.text)
        return Answer(behaviour.text, Usage(12, output), stop="max_tokens")
    if isinstance(behaviour, StreamError):
        text = "a partial reply before the stream fails"
    else:
        text = behaviour.text
    return Answer(text, Usage(12, estimate_tokens(text)))
