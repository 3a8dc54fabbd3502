"""`stream()` of both LLM adapters, through the official SDKs, against the wire-faithful fake.

A stream yields the text piece by piece and then one `LLMResult`; a stream that breaks, carries
an error event or ends without a stop reason raises a retryable error and never ends quietly.
"""

from __future__ import annotations

import traceback
from collections.abc import Iterator
from dataclasses import dataclass, field

import pytest
from pydantic import SecretStr

from tests.conftest import LLM_KEY
from vamu_tasks.domain import LLMRequest, LLMResult, Message, TextDelta, Usage
from vamu_tasks.errors import (
    ProviderTimeout,
    ProviderUnavailable,
    RateLimited,
    StreamInterrupted,
    VamuError,
)
from vamu_tasks.llm.anthropic import AnthropicProvider
from vamu_tasks.llm.openai import OpenAIProvider
from vamu_tasks.testing.fake_llm import (
    Behaviour,
    DropStream,
    Error,
    FakeLLMServer,
    Hang,
    StreamError,
    Text,
    Truncated,
)

OPENAI_MODEL = "gpt-5-mini"
CLAUDE_MODEL = "claude-sonnet-4-6"
SHORT_TIMEOUT_S = 0.3
REPLY = "Ezra Collective play the Roundhouse on Friday; doors open at 7 pm."
QUESTION = LLMRequest(
    system="You are VAMU's helpful events assistant.",
    messages=(
        Message("user", "Any jazz this week?"),
        Message("assistant", "Which part of London?"),
        Message("user", "Camden, please."),
    ),
    max_output_tokens=256,
)

Provider = OpenAIProvider | AnthropicProvider


def build(vendor: str, fake_llm: FakeLLMServer, *, timeout_s: float = 5.0) -> Provider:
    """The adapter as production builds it, but pointed at the fake and strict about the wire."""
    if vendor == "openai":
        return OpenAIProvider(
            api_key=SecretStr(LLM_KEY),
            model=OPENAI_MODEL,
            base_url=fake_llm.openai_base_url,
            timeout_s=timeout_s,
            max_retries=0,
            strict_validation=True,
        )
    return AnthropicProvider(
        api_key=SecretStr(LLM_KEY),
        model=CLAUDE_MODEL,
        base_url=fake_llm.anthropic_base_url,
        timeout_s=timeout_s,
        max_retries=0,
        strict_validation=True,
    )


@pytest.fixture(params=["openai", "anthropic"])
def vendor(request: pytest.FixtureRequest) -> str:
    name: str = request.param
    return name


@pytest.fixture
def provider(vendor: str, fake_llm: FakeLLMServer) -> Iterator[Provider]:
    built = build(vendor, fake_llm)
    yield built
    built.close()


@dataclass
class Streamed:
    """What a consumer of `stream()` saw: the deltas, the final result, or the error."""

    deltas: list[str] = field(default_factory=list)
    finals: list[LLMResult] = field(default_factory=list)
    error: VamuError | None = None

    @property
    def text(self) -> str:
        return "".join(self.deltas)


def consume(provider: Provider, request: LLMRequest = QUESTION) -> Streamed:
    seen = Streamed()
    try:
        for event in provider.stream(request):
            if isinstance(event, TextDelta):
                assert not seen.finals, "a delta arrived after the final result"
                seen.deltas.append(event.text)
            else:
                assert isinstance(event, LLMResult)
                seen.finals.append(event)
    except VamuError as exc:
        seen.error = exc
    return seen


def streamed_ok(provider: Provider, fake_llm: FakeLLMServer, behaviour: Behaviour) -> Streamed:
    fake_llm.push(behaviour)
    seen = consume(provider)
    assert seen.error is None, seen.error
    assert len(seen.finals) == 1
    return seen


def streamed_failure(
    provider: Provider, fake_llm: FakeLLMServer, *script: Behaviour
) -> tuple[VamuError, str]:
    """The error a stream ends with, and the text yielded before it; one request, no key shown."""
    fake_llm.push(*script)
    seen = consume(provider)
    assert seen.error is not None, f"the stream ended quietly with {seen.text!r}"
    assert seen.finals == [], "a broken stream must not yield a final result"
    assert len(fake_llm.requests) == 1  # max_retries=0: the task layer owns retries
    shown = "".join(traceback.format_exception(seen.error))
    assert LLM_KEY not in shown
    return seen.error, seen.text


def assert_streamed_request(fake_llm: FakeLLMServer, vendor: str) -> None:
    [sent] = fake_llm.requests
    assert sent.stream is True
    assert sent.body["stream"] is True
    assert sent.path == {"openai": "/v1/responses", "anthropic": "/v1/messages"}[vendor]


# --- complete streams ---------------------------------------------------------------------------


def test_the_deltas_join_into_the_text_of_the_final_result(
    provider: Provider, fake_llm: FakeLLMServer, vendor: str
) -> None:
    seen = streamed_ok(provider, fake_llm, Text(REPLY, input_tokens=100, output_tokens=20))

    [final] = seen.finals
    assert seen.text == REPLY
    assert final.text == REPLY
    assert (final.provider, final.model) == (vendor, provider.model)
    assert final.finish_reason == "stop"
    assert_streamed_request(fake_llm, vendor)


def test_the_final_result_has_the_normalised_usage_with_cached_tokens_counted_as_input(
    provider: Provider, fake_llm: FakeLLMServer
) -> None:
    # 100 prompt tokens, 40 read from the cache. Anthropic reports input_tokens=60 plus
    # cache_read_input_tokens=40; its output count arrives only in message_delta.
    seen = streamed_ok(
        provider, fake_llm, Text(REPLY, input_tokens=100, output_tokens=20, cached_tokens=40)
    )

    assert seen.finals[0].usage == Usage(
        input_tokens=100, output_tokens=20, cache_read_tokens=40, cache_write_tokens=0
    )


def test_small_wire_chunks_arrive_as_many_deltas_in_order(
    provider: Provider, fake_llm: FakeLLMServer
) -> None:
    seen = streamed_ok(provider, fake_llm, Text(REPLY, chunk_size=4))

    assert len(seen.deltas) == -(-len(REPLY) // 4)
    assert seen.deltas[0] == REPLY[:4]
    assert seen.text == REPLY == seen.finals[0].text


def test_the_conversation_and_system_prompt_go_out_in_the_vendor_fields(
    provider: Provider, fake_llm: FakeLLMServer, vendor: str
) -> None:
    streamed_ok(provider, fake_llm, Text(REPLY))

    body = fake_llm.requests[0].body
    turns = [
        {"role": "user", "content": "Any jazz this week?"},
        {"role": "assistant", "content": "Which part of London?"},
        {"role": "user", "content": "Camden, please."},
    ]
    if vendor == "openai":
        assert body["instructions"] == QUESTION.system
        assert body["input"] == turns
        assert body["max_output_tokens"] == 256
    else:
        cache = {"type": "ephemeral"}
        assert body["system"] == [{"type": "text", "text": QUESTION.system, "cache_control": cache}]
        # The newest message ends the prefix to cache; the next turn reads up to it.
        assert body["messages"] == [
            {"role": "user", "content": [{"type": "text", "text": "Any jazz this week?"}]},
            {"role": "assistant", "content": [{"type": "text", "text": "Which part of London?"}]},
            {
                "role": "user",
                "content": [{"type": "text", "text": "Camden, please.", "cache_control": cache}],
            },
        ]
        assert body["max_tokens"] == 256


def test_the_first_delta_is_yielded_before_the_stream_is_over(
    provider: Provider, fake_llm: FakeLLMServer
) -> None:
    fake_llm.push(Text(REPLY, chunk_size=4))

    events = provider.stream(QUESTION)
    first = next(events)
    rest = list(events)

    assert first == TextDelta(REPLY[:4])
    assert isinstance(rest[-1], LLMResult)


# --- broken streams -----------------------------------------------------------------------------


def test_a_dropped_connection_is_retryable_and_only_the_partial_text_was_yielded(
    provider: Provider, fake_llm: FakeLLMServer, vendor: str
) -> None:
    text = "partial reply that never ends"

    error, yielded = streamed_failure(provider, fake_llm, DropStream(text, after_chunks=2))

    assert isinstance(error, ProviderUnavailable)  # StreamInterrupted is one too
    assert error.error_kind == "provider_error"
    assert error.retryable
    assert yielded == text[:16]  # two 8-character wire chunks
    assert_streamed_request(fake_llm, vendor)


def test_an_anthropic_overloaded_error_event_inside_a_200_stream_is_provider_unavailable(
    fake_llm: FakeLLMServer,
) -> None:
    provider = build("anthropic", fake_llm)
    try:
        error, yielded = streamed_failure(
            provider, fake_llm, StreamError(after_chunks=2, error_type="overloaded_error")
        )
    finally:
        provider.close()

    assert isinstance(error, ProviderUnavailable)
    assert error.error_kind == "provider_error"
    assert error.retryable
    assert "overloaded_error" in error.message
    assert yielded == "a partial reply before the stream fails"[:16]
    assert_streamed_request(fake_llm, "anthropic")


def test_an_openai_error_event_inside_a_stream_is_provider_unavailable(
    fake_llm: FakeLLMServer,
) -> None:
    provider = build("openai", fake_llm)
    try:
        error, yielded = streamed_failure(
            provider, fake_llm, StreamError(after_chunks=2, error_type="server_error")
        )
    finally:
        provider.close()

    assert isinstance(error, ProviderUnavailable)
    assert error.error_kind == "provider_error"
    assert error.retryable
    assert yielded == "a partial reply before the stream fails"[:16]
    assert_streamed_request(fake_llm, "openai")


def test_a_stream_that_ends_without_a_stop_reason_is_interrupted_not_a_short_answer(
    provider: Provider, fake_llm: FakeLLMServer, vendor: str
) -> None:
    error, yielded = streamed_failure(provider, fake_llm, Truncated("cut off mid-sentence", 2))

    assert isinstance(error, StreamInterrupted)
    assert error.error_kind == "provider_error"
    assert error.retryable
    assert yielded == "cut off mid-sentence"[:16]
    assert_streamed_request(fake_llm, vendor)


def test_a_429_before_the_stream_is_rate_limited_with_its_retry_after(
    provider: Provider, fake_llm: FakeLLMServer, vendor: str
) -> None:
    error, yielded = streamed_failure(provider, fake_llm, Error(429, "Slow down", retry_after=3))

    assert isinstance(error, RateLimited)
    assert error.error_kind == "rate_limited"
    assert error.retry_after == 3
    assert yielded == ""
    assert_streamed_request(fake_llm, vendor)


def test_a_503_before_the_stream_is_provider_unavailable(
    provider: Provider, fake_llm: FakeLLMServer
) -> None:
    error, yielded = streamed_failure(provider, fake_llm, Error(503, "Service unavailable"))

    assert isinstance(error, ProviderUnavailable)
    assert error.error_kind == "provider_error"
    assert yielded == ""


def test_a_provider_slower_than_the_client_timeout_is_a_timeout(
    vendor: str, fake_llm: FakeLLMServer
) -> None:
    provider = build(vendor, fake_llm, timeout_s=SHORT_TIMEOUT_S)
    try:
        error, yielded = streamed_failure(provider, fake_llm, Hang(1.0, then=Text(REPLY)))
    finally:
        provider.close()

    assert isinstance(error, ProviderTimeout)
    assert error.error_kind == "timeout"
    assert error.retryable
    assert yielded == ""
    assert_streamed_request(fake_llm, vendor)
