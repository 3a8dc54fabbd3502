"""Both LLM adapters, driven through the official SDKs against the wire-faithful fake server.

Every failure a provider can send must come out as one `VamuError` with the right `error_kind`,
after exactly one HTTP request (the task layer, not the SDK, owns retries), and without the API
key anywhere in what a log line or a job row would show.
"""

from __future__ import annotations

import json
import traceback
from collections.abc import Callable, Iterator
from decimal import Decimal
from typing import Any, Protocol

import pytest
from pydantic import SecretStr

from tests.conftest import LLM_KEY
from vamu_tasks.domain import (
    LLMRequest,
    LLMResult,
    Message,
    OutputSchema,
    StreamEvent,
    TextDelta,
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
    VamuError,
)
from vamu_tasks.llm.anthropic import AnthropicProvider
from vamu_tasks.llm.openai import OpenAIProvider
from vamu_tasks.llm.pricing import cost_usd
from vamu_tasks.testing.fake_llm import (
    Behaviour,
    DropStream,
    Error,
    FakeLLMServer,
    Hang,
    MaxTokens,
    Refusal,
    Text,
)

OPENAI_MODEL = "gpt-5-mini"
CLAUDE_MODEL = "claude-sonnet-4-6"
WRONG_KEY = "sk-wrong-key-0123456789abcdef"
SHORT_TIMEOUT_S = 0.3

SYSTEM = "You suggest events in the user's city. Answer in JSON."
QUESTION = LLMRequest(
    system="You are VAMU's helpful events assistant.",
    messages=(Message("user", "Anything on tonight in London?"),),
)
IDEAS_SCHEMA = {
    "type": "object",
    "properties": {
        "ideas": {
            "type": "array",
            "items": {
                "type": "object",
                "properties": {"title": {"type": "string"}, "category": {"type": "string"}},
                "required": ["title", "category"],
                "additionalProperties": False,
            },
        }
    },
    "required": ["ideas"],
    "additionalProperties": False,
}
STRUCTURED = LLMRequest(
    system=SYSTEM,
    messages=(Message("user", "Three ideas for Saturday, please."),),
    output_schema=OutputSchema(name="inspiration_ideas", schema=IDEAS_SCHEMA),
)


class Provider(Protocol):
    name: str
    model: str

    def complete(self, request: LLMRequest) -> LLMResult: ...

    def stream(self, request: LLMRequest) -> Iterator[StreamEvent]: ...

    def close(self) -> None: ...


MakeProvider = Callable[..., Provider]


def build(
    vendor: str, fake_llm: FakeLLMServer, *, api_key: str = LLM_KEY, timeout_s: float = 5.0
) -> Provider:
    """The adapter as production builds it, but pointed at the fake and strict about the wire."""
    if vendor == "openai":
        return OpenAIProvider(
            api_key=SecretStr(api_key),
            model=OPENAI_MODEL,
            base_url=fake_llm.openai_base_url,
            timeout_s=timeout_s,
            max_retries=0,
            strict_validation=True,
        )
    return AnthropicProvider(
        api_key=SecretStr(api_key),
        model=CLAUDE_MODEL,
        base_url=fake_llm.anthropic_base_url,
        timeout_s=timeout_s,
        max_retries=0,
        strict_validation=True,
    )


@pytest.fixture(params=["openai", "anthropic"])
def make_provider(
    request: pytest.FixtureRequest, fake_llm: FakeLLMServer
) -> Iterator[MakeProvider]:
    """Builds the adapter under test (each vendor in turn); every one built is closed after."""
    built: list[Provider] = []

    def make(**options: Any) -> Provider:
        built.append(build(request.param, fake_llm, **options))
        return built[-1]

    yield make
    for provider in built:
        provider.close()


@pytest.fixture
def provider(make_provider: MakeProvider) -> Provider:
    return make_provider()


@pytest.fixture
def openai_provider(fake_llm: FakeLLMServer) -> Iterator[Provider]:
    provider = build("openai", fake_llm)
    yield provider
    provider.close()


@pytest.fixture
def anthropic_provider(fake_llm: FakeLLMServer) -> Iterator[Provider]:
    provider = build("anthropic", fake_llm)
    yield provider
    provider.close()


def failure_of(provider: Provider, fake_llm: FakeLLMServer, *script: Behaviour) -> VamuError:
    """The error one call raises after `script`, checked for the rules every failure obeys."""
    fake_llm.push(*script)
    with pytest.raises(VamuError) as caught:
        provider.complete(QUESTION)
    error = caught.value
    # One owner for retries: with max_retries=0 the SDK never asks twice.
    assert len(fake_llm.requests) == 1
    shown = "".join(traceback.format_exception(error))  # the whole chain, as a log shows it
    for key in (LLM_KEY, WRONG_KEY):
        assert key not in str(error)
        assert key not in error.message
        assert key not in shown
    return error


# --- successful calls -------------------------------------------------------------------------


def test_a_plain_completion_returns_the_text_provider_model_and_normalised_usage(
    provider: Provider, fake_llm: FakeLLMServer
) -> None:
    # The same prompt on both wires: 100 input tokens, 40 of them read from the prompt cache.
    # OpenAI reports input_tokens=100 (cached included); Anthropic input_tokens=60 plus
    # cache_read_input_tokens=40, which the adapter must add back.
    fake_llm.push(
        Text("Jazz at the Roundhouse.", input_tokens=100, output_tokens=20, cached_tokens=40)
    )

    result = provider.complete(QUESTION)

    assert result.text == "Jazz at the Roundhouse."
    assert result.provider == provider.name
    assert result.model == provider.model
    assert result.usage == Usage(
        input_tokens=100, output_tokens=20, cache_read_tokens=40, cache_write_tokens=0
    )
    assert result.finish_reason == "stop"


def test_anthropic_cache_reads_are_added_back_into_input_tokens(
    anthropic_provider: Provider, fake_llm: FakeLLMServer
) -> None:
    # On the wire: input_tokens=100, cache_read_input_tokens=900. Ours counts the whole prompt.
    fake_llm.push(Text("ok", input_tokens=1000, output_tokens=5, cached_tokens=900))

    result = anthropic_provider.complete(QUESTION)

    assert result.usage.input_tokens == 1000
    assert result.usage.cache_read_tokens == 900
    # Priced as 100 plain + 900 cached input tokens, not 100 plain only.
    assert cost_usd(result.model, result.usage) == (
        Decimal(100) * Decimal("3.00") + Decimal(900) * Decimal("0.30") + Decimal(5) * 15
    ) / Decimal(1_000_000)


def test_the_cost_of_a_call_comes_from_the_price_table(
    provider: Provider, fake_llm: FakeLLMServer
) -> None:
    fake_llm.push(Text("ok", input_tokens=100, output_tokens=20, cached_tokens=40))

    result = provider.complete(QUESTION)

    # 60 plain input, 40 cached input and 20 output tokens at the model's list price per 1M.
    expected = {
        "openai": Decimal("60") * Decimal("0.25")
        + Decimal("40") * Decimal("0.025")
        + Decimal("20") * Decimal("2.00"),
        "anthropic": Decimal("60") * Decimal("3.00")
        + Decimal("40") * Decimal("0.30")
        + Decimal("20") * Decimal("15.00"),
    }[provider.name] / Decimal(1_000_000)
    assert cost_usd(result.model, result.usage) == expected
    assert cost_usd(result.model, result.usage) > 0


def test_a_structured_request_sends_the_schema_and_system_prompt_in_the_vendor_fields(
    provider: Provider, fake_llm: FakeLLMServer
) -> None:
    ideas = {"ideas": [{"title": "Samba night", "category": "music"}]}
    fake_llm.push(Text.json(ideas))

    result = provider.complete(STRUCTURED)

    assert json.loads(result.text) == ideas
    [sent] = fake_llm.requests
    body = sent.body
    assert body["model"] == provider.model
    if provider.name == "openai":
        assert sent.path == "/v1/responses"
        assert body["instructions"] == SYSTEM
        assert body["text"]["format"] == {
            "type": "json_schema",
            "name": "inspiration_ideas",
            "schema": IDEAS_SCHEMA,
            "strict": True,
        }
        assert body["input"] == [{"role": "user", "content": "Three ideas for Saturday, please."}]
    else:
        assert sent.path == "/v1/messages"
        assert body["system"] == [
            {"type": "text", "text": SYSTEM, "cache_control": {"type": "ephemeral"}}
        ]
        assert body["output_config"]["format"] == {"type": "json_schema", "schema": IDEAS_SCHEMA}
        assert body["messages"] == [
            {
                "role": "user",
                "content": [
                    {
                        "type": "text",
                        "text": "Three ideas for Saturday, please.",
                        "cache_control": {"type": "ephemeral"},
                    }
                ],
            }
        ]


def test_a_plain_request_sends_no_output_schema(
    provider: Provider, fake_llm: FakeLLMServer
) -> None:
    fake_llm.push(Text("hello"))

    provider.complete(QUESTION)

    body = fake_llm.requests[0].body
    assert "output_config" not in body
    assert "format" not in (body.get("text") or {})


def test_an_answer_cut_off_by_the_token_limit_says_so_in_its_finish_reason(
    provider: Provider, fake_llm: FakeLLMServer
) -> None:
    fake_llm.push(MaxTokens("Three ideas: 1. Jaz"))

    result = provider.complete(QUESTION)

    assert (result.text, result.finish_reason) == ("Three ideas: 1. Jaz", "length")
    # The whole output budget was spent, as the vendors report it.
    assert result.usage.output_tokens == QUESTION.max_output_tokens


# --- failures ----------------------------------------------------------------------------------


def test_a_429_with_retry_after_is_rate_limited_with_that_delay(
    provider: Provider, fake_llm: FakeLLMServer
) -> None:
    error = failure_of(provider, fake_llm, Error(429, "Rate limit reached", retry_after=7))

    assert isinstance(error, RateLimited)
    assert error.error_kind == "rate_limited"
    assert error.retryable
    assert error.retry_after == 7


def test_an_openai_429_for_insufficient_quota_is_a_quota_error_not_a_rate_limit(
    openai_provider: Provider, fake_llm: FakeLLMServer
) -> None:
    error = failure_of(
        openai_provider,
        fake_llm,
        Error(429, "You exceeded your current quota", error_type="insufficient_quota"),
    )

    assert isinstance(error, QuotaExceeded)
    assert error.error_kind == "quota"
    assert not error.retryable


def test_an_anthropic_billing_error_is_a_quota_error(
    anthropic_provider: Provider, fake_llm: FakeLLMServer
) -> None:
    error = failure_of(
        anthropic_provider, fake_llm, Error(402, "Payment required", error_type="billing_error")
    )

    assert isinstance(error, QuotaExceeded)
    assert error.error_kind == "quota"


def test_an_anthropic_credit_balance_too_low_error_is_a_quota_error(
    anthropic_provider: Provider, fake_llm: FakeLLMServer
) -> None:
    # The shape the live API sends when the account has no credit left.
    error = failure_of(
        anthropic_provider,
        fake_llm,
        Error(
            400,
            "Your credit balance is too low to access the Anthropic API. "
            "Please go to Plans & Billing to upgrade or purchase credits.",
        ),
    )

    assert isinstance(error, QuotaExceeded)
    assert error.error_kind == "quota"


def test_a_500_is_provider_unavailable_and_retryable(
    provider: Provider, fake_llm: FakeLLMServer
) -> None:
    error = failure_of(provider, fake_llm, Error(500, "The server had an error"))

    assert isinstance(error, ProviderUnavailable)
    assert error.error_kind == "provider_error"
    assert error.retryable


def test_an_anthropic_529_overloaded_is_provider_unavailable(
    anthropic_provider: Provider, fake_llm: FakeLLMServer
) -> None:
    error = failure_of(anthropic_provider, fake_llm, Error(529, "Overloaded"))

    assert isinstance(error, ProviderUnavailable)
    assert error.error_kind == "provider_error"
    assert error.retryable


def test_a_provider_slower_than_the_client_timeout_is_a_timeout(
    make_provider: MakeProvider, fake_llm: FakeLLMServer
) -> None:
    provider = make_provider(timeout_s=SHORT_TIMEOUT_S)

    error = failure_of(provider, fake_llm, Hang(1.0))

    assert isinstance(error, ProviderTimeout)
    assert error.error_kind == "timeout"
    assert error.retryable


def test_a_prompt_longer_than_the_context_window_is_context_length_exceeded(
    provider: Provider, fake_llm: FakeLLMServer
) -> None:
    vendor_error = {
        "openai": Error(
            400,
            "Your input exceeds the context window of this model.",
            error_type="context_length_exceeded",
        ),
        "anthropic": Error(400, "prompt is too long: 214833 tokens > 200000 maximum"),
    }[provider.name]

    error = failure_of(provider, fake_llm, vendor_error)

    assert isinstance(error, ContextLengthExceeded)
    assert error.error_kind == "context_length"
    assert not error.retryable


def test_a_wrong_api_key_is_rejected_without_showing_either_key(
    make_provider: MakeProvider, fake_llm: FakeLLMServer
) -> None:
    provider = make_provider(api_key=WRONG_KEY)

    error = failure_of(provider, fake_llm)  # the fake answers 401 to any other key

    assert isinstance(error, ProviderRejected)
    assert error.error_kind == "provider_error"
    assert not error.retryable
    assert "401" in str(error)


def test_an_invalid_request_is_rejected(provider: Provider, fake_llm: FakeLLMServer) -> None:
    error = failure_of(
        provider,
        fake_llm,
        Error(400, "Invalid value for 'max_output_tokens'", error_type="invalid_request_error"),
    )

    assert isinstance(error, ProviderRejected)
    assert error.error_kind == "provider_error"
    assert not error.retryable
    assert "Invalid value for 'max_output_tokens'" in str(error)


def test_a_connection_dropped_mid_answer_is_provider_unavailable(
    provider: Provider, fake_llm: FakeLLMServer
) -> None:
    error = failure_of(provider, fake_llm, DropStream())

    assert isinstance(error, ProviderUnavailable)
    assert error.error_kind == "provider_error"
    assert error.retryable


def test_an_openai_content_policy_error_is_content_filtered(
    openai_provider: Provider, fake_llm: FakeLLMServer
) -> None:
    error = failure_of(
        openai_provider,
        fake_llm,
        Error(
            400,
            "Your request was rejected by the safety system",
            error_type="content_policy_violation",
        ),
    )

    assert isinstance(error, ContentFiltered)
    assert error.error_kind == "content_filter"


def test_a_model_refusal_is_content_filtered(provider: Provider, fake_llm: FakeLLMServer) -> None:
    # OpenAI: a `refusal` content part in a completed response; Anthropic: stop_reason "refusal".
    error = failure_of(provider, fake_llm, Refusal("I'm sorry, but I can't help with that."))

    assert isinstance(error, ContentFiltered)
    assert error.error_kind == "content_filter"
    assert not error.retryable
    if provider.name == "openai":
        assert "I'm sorry, but I can't help with that." in error.message


def test_an_anthropic_refusal_after_some_text_is_content_filtered_not_a_short_answer(
    anthropic_provider: Provider, fake_llm: FakeLLMServer
) -> None:
    # Claude's classifiers can stop an answer already under way: the text so far comes back
    # with stop_reason "refusal", and it must not pass for the whole answer.
    error = failure_of(anthropic_provider, fake_llm, Refusal(partial="Step one: take the"))

    assert isinstance(error, ContentFiltered)
    assert error.error_kind == "content_filter"


def test_a_model_refusal_in_a_stream_is_content_filtered_without_a_final_result(
    provider: Provider, fake_llm: FakeLLMServer
) -> None:
    partial = "Step one: take the" if provider.name == "anthropic" else ""
    fake_llm.push(Refusal("I'm sorry, but I can't help with that.", partial=partial))
    deltas: list[str] = []
    finals: list[LLMResult] = []

    with pytest.raises(VamuError) as caught:
        for event in provider.stream(QUESTION):
            if isinstance(event, TextDelta):
                deltas.append(event.text)
            else:
                finals.append(event)

    error = caught.value
    assert isinstance(error, ContentFiltered)
    assert error.error_kind == "content_filter"
    assert finals == []
    # The refusal text is not the model's answer; Claude's partial text was streamed before.
    assert "".join(deltas) == partial
    [sent] = fake_llm.requests
    assert sent.stream is True


@pytest.mark.parametrize(
    "status", [429, 500, 503], ids=["rate-limited", "server-error", "unavailable"]
)
def test_with_max_retries_zero_the_sdk_sends_exactly_one_request_even_for_retryable_statuses(
    provider: Provider, fake_llm: FakeLLMServer, status: int
) -> None:
    # Queue a success behind the failure: an SDK retry would reach it and the call would pass.
    fake_llm.push(Error(status, "try again", retry_after=0), Text("second try"))

    with pytest.raises(VamuError) as caught:
        provider.complete(QUESTION)

    assert caught.value.retryable
    assert len(fake_llm.requests) == 1
