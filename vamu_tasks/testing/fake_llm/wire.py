"""What every vendor wire has in common: ids, SSE framing, and the interface of a wire."""

from __future__ import annotations

import json
import secrets
import string
import time
from dataclasses import dataclass
from typing import Any, ClassVar, TypeAlias

from vamu_tasks.testing.fake_llm.behaviours import Answer, ApiName

Payload: TypeAlias = dict[str, Any] | str


@dataclass(frozen=True)
class Frame:
    """One SSE event; `delta` marks the frames that carry a piece of the answer.

    Behaviours that break a stream (DropStream, StreamError, Truncated) cut it after a number
    of delta frames.
    """

    payload: Payload
    delta: bool = False


def new_id(prefix: str, length: int = 24) -> str:
    alphabet = string.ascii_letters + string.digits
    return prefix + "".join(secrets.choice(alphabet) for _ in range(length))


def chunks(text: str, size: int) -> list[str]:
    size = max(1, size)
    return [text[i : i + size] for i in range(0, len(text), size)]


def sse(payload: Payload, *, named: bool) -> bytes:
    data = payload if isinstance(payload, str) else json.dumps(payload)
    if named and isinstance(payload, dict):
        return f"event: {payload['type']}\ndata: {data}\n\n".encode()
    return f"data: {data}\n\n".encode()


def cut(frames: list[Frame], after_deltas: int) -> list[Frame]:
    """The frames up to and including the `after_deltas`-th delta frame."""
    out: list[Frame] = []
    seen = 0
    for frame in frames:
        if seen == after_deltas and (frame.delta or seen > 0):
            break
        out.append(frame)
        seen += frame.delta
    return out


class RequestRefused(Exception):
    """A request body the vendor refuses: the status, error type, message and OpenAI `param`."""

    def __init__(
        self, status: int, error_type: str, message: str, param: str | None = None
    ) -> None:
        super().__init__(message)
        self.status = status
        self.error_type = error_type
        self.message = message
        self.param = param


class Wire:
    """One API's wire format, made once per request so its ids stay consistent."""

    api: ClassVar[ApiName]
    default_model: ClassVar[str]
    auth_message: ClassVar[str]

    def __init__(self, body: dict[str, Any]) -> None:
        self.body = body
        self.model = str(body.get("model") or self.default_model)
        self.created = int(time.time())
        self.request_id = new_id("req_")

    @property
    def max_output_tokens(self) -> int | None:
        """The request's output token limit, if it set one."""
        raise NotImplementedError

    def check(self) -> None:
        """Raise `RequestRefused` for a body the vendor refuses (`rules.py`)."""
        raise NotImplementedError

    def message(self, answer: Answer) -> dict[str, Any]:
        raise NotImplementedError

    def stream(self, answer: Answer) -> list[Frame]:
        """The frames of a whole stream, from the first event to the terminating one."""
        raise NotImplementedError

    def stream_error(self, error_type: str, message: str, *, error_event: bool) -> list[Payload]:
        raise NotImplementedError

    def error_body(
        self, status: int, message: str, error_type: str | None, param: str | None = None
    ) -> dict[str, Any]:
        raise NotImplementedError

    def error_status(self, error_type: str) -> int:
        raise NotImplementedError

    def headers(self) -> dict[str, str]:
        raise NotImplementedError

    def encode(self, frames: list[Payload]) -> list[bytes]:
        return [sse(f, named=True) for f in frames]
