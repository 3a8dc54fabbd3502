"""What the vendors send every day and the adapters must read right, through the official SDKs.

Reasoning items before the message (gpt-5 models), a stream cut by the token limit, text and
several tool calls in one turn, failures inside a stream with the vendors' real codes, and
Anthropic's cache writes. The use-case behaviour they lead to is in tests/e2e/test_vendor_paths.py.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from decimal import Decimal

import pytest

from tests.integration.test_llm_adapters import QUESTION, STRUCTURED, Provider, build
from vamu_tasks.domain import LLMResult, Message, TextDelta, ToolSpec, ToolsRequest, Usage
from vamu_tasks.errors import ProviderUnavailable, RateLimited, VamuError
from vamu_tasks.llm.anthropic import AnthropicProvider
from vamu_tasks.llm.openai import OpenAIProvider
from vamu_tasks.llm.pricing import PRICES, cost_usd
from vamu_tasks.testing.fake_llm import (
    Error,
    FakeLLMServer,
    MaxTokens,
    StreamError,
    Text,
    ToolCall,
    Turn,
)


@pytest.fixture(params=["openai", "anthropic"])
def provider(request: pytest.FixtureRequest, fake_llm: FakeLLMServer) -> Iterator[Provider]:
    built = build(request.param, fake_llm)
    yield built
    built.close()


def streamed(provider: Provider) -> tuple[str, LLMResult]:
    text, finals = "", []
    for event in provider.stream(QUESTION):
        if isinstance(event, TextDelta):
            text += event.text
        else:
            finals.append(event)
    [final] = finals
    return text, final


# --- the token limit ------------------------------------------------------------------------


def test_a_stream_cut_by_the_token_limit_ends_with_finish_reason_length(
    provider: Provider, fake_llm: FakeLLMServer
):
    fake_llm.push(MaxTokens("Friday: the winter jazz night, then"))

    text, final = streamed(provider)

    assert text == final.text == "Friday: the winter jazz night, then"
    assert final.finish_reason == "length"
    body = fake_llm.requests[-1].body
    limit = body.get("max_output_tokens", body.get("max_tokens"))
    assert final.usage.output_tokens == limit
    if provider.name == "openai":
        # The Responses stream ends in `response.incomplete`, not `response.completed`.
        assert limit == QUESTION.max_output_tokens


# --- reasoning items ------------------------------------------------------------------------


def test_reasoning_items_before_the_message_leave_the_text_and_count_as_output_tokens(
    fake_llm: FakeLLMServer,
):
    provider = build("openai", fake_llm)
    answer = json.dumps({"ideas": [{"title": "Jazz", "category": "music"}]})
    fake_llm.push(Text(answer, output_tokens=300, reasoning_tokens=256))
    fake_llm.push(Text("Plain reply.", output_tokens=90, reasoning_tokens=64))

    plain = provider.complete(STRUCTURED)
    text, final = streamed(provider)
    provider.close()

    assert (plain.text, plain.finish_reason) == (answer, "stop")
    # OpenAI bills reasoning as output: the row's output tokens include it.
    assert plain.usage.output_tokens == 300
    assert text == final.text == "Plain reply."
    assert final.usage.output_tokens == 90


def test_a_tool_turn_after_reasoning_reads_every_call(fake_llm: FakeLLMServer):
    provider = build("openai", fake_llm)
    assert isinstance(provider, OpenAIProvider)
    calls = (ToolCall("search_events", {"q": "jazz"}), ToolCall("get_my_context", {}))
    fake_llm.push(Turn(calls, reasoning_tokens=128))

    result = provider.complete_with_tools(TOOLS_REQUEST)
    provider.close()

    assert [(c.name, json.loads(c.arguments)) for c in result.turn.tool_calls] == [
        ("search_events", {"q": "jazz"}),
        ("get_my_context", {}),
    ]
    assert fake_llm.requests[-1].body["input"][0]["role"] == "user"


# --- text and parallel tool calls in one turn -----------------------------------------------

TOOLS_REQUEST = ToolsRequest(
    system="You plan events.",
    items=(Message("user", "Find me a jazz night."),),
    tools=(
        ToolSpec("search_events", "Search events.", {"type": "object", "properties": {}}),
        ToolSpec("get_my_context", "The user's profile.", {"type": "object", "properties": {}}),
    ),
)


@pytest.mark.parametrize("vendor", ["openai", "anthropic"])
def test_text_and_two_tool_calls_in_one_turn_come_out_in_order(
    vendor: str, fake_llm: FakeLLMServer
):
    provider = build(vendor, fake_llm)
    assert isinstance(provider, OpenAIProvider | AnthropicProvider)
    calls = (
        ToolCall("search_events", {"q": "jazz"}, call_id="call_1"),
        ToolCall("get_my_context", {}, call_id="call_2"),
    )
    fake_llm.push(Turn(calls, text="Let me look."))

    result = provider.complete_with_tools(TOOLS_REQUEST)
    provider.close()

    assert result.turn.text == "Let me look."
    assert [(c.call_id, c.name) for c in result.turn.tool_calls] == [
        ("call_1", "search_events"),
        ("call_2", "get_my_context"),
    ]
    assert result.finish_reason == "stop"


# --- failures inside a stream ---------------------------------------------------------------

# The same failure outside a stream (an HTTP error) and inside one, per vendor. OpenAI fails a
# stream with an `error` event then `response.failed`, or (as its reference shows) with
# `response.failed` alone; Anthropic with `event: error`.
OPENAI_429 = Error(429, error_type="rate_limit_exceeded")
FAILURES = [
    ("openai", OPENAI_429, "rate_limit_exceeded", RateLimited, True),
    ("openai", OPENAI_429, "rate_limit_exceeded", RateLimited, False),
    ("openai", Error(500), "server_error", ProviderUnavailable, True),
    ("openai", Error(500), "server_error", ProviderUnavailable, False),
    ("anthropic", Error(429), "rate_limit_error", RateLimited, True),
    ("anthropic", Error(529), "overloaded_error", ProviderUnavailable, True),
    ("anthropic", Error(500), "api_error", ProviderUnavailable, True),
]


@pytest.mark.parametrize(("vendor", "outside", "code", "kind", "error_event"), FAILURES)
def test_a_failure_inside_a_stream_is_classified_as_the_same_failure_outside_one(
    vendor: str,
    outside: Error,
    code: str,
    kind: type[VamuError],
    error_event: bool,
    fake_llm: FakeLLMServer,
):
    provider = build(vendor, fake_llm)
    fake_llm.push(outside)
    fake_llm.push(StreamError(after_chunks=2, error_type=code, openai_error_event=error_event))

    with pytest.raises(VamuError) as plain:
        provider.complete(QUESTION)
    with pytest.raises(VamuError) as inside:
        streamed(provider)
    provider.close()

    assert type(plain.value) is type(inside.value) is kind
    assert plain.value.error_kind == inside.value.error_kind


# --- cache writes ---------------------------------------------------------------------------


def test_anthropic_cache_writes_are_counted_and_priced_at_the_write_price(
    fake_llm: FakeLLMServer,
):
    provider = build("anthropic", fake_llm)
    fake_llm.push(Text("{}", input_tokens=5000, output_tokens=10, cache_write_tokens=4000))
    fake_llm.push(Text("{}", input_tokens=5000, output_tokens=10, cached_tokens=4000))

    written = provider.complete(STRUCTURED)
    read = provider.complete(STRUCTURED)
    provider.close()

    assert written.usage == Usage(5000, 10, cache_read_tokens=0, cache_write_tokens=4000)
    assert read.usage == Usage(5000, 10, cache_read_tokens=4000, cache_write_tokens=0)
    price = PRICES["claude-sonnet-4-6"]
    assert price.cache_write is not None
    expected = (1000 * price.input + 4000 * price.cache_write + 10 * price.output) / 1_000_000
    assert cost_usd(written.model, written.usage) == expected.quantize(Decimal("0.000001"))
    assert cost_usd(read.model, read.usage) < cost_usd(written.model, written.usage)  # type: ignore[operator]
