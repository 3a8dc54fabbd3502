"""Prompt caching on both vendors, through the official SDKs and the fake's caches.

Every call marks its stable prefix (Anthropic `cache_control` breakpoints; OpenAI a
`prompt_cache_key`), and the fake reports reads and writes as the vendors do, so a chat's later
turns are seen reading their history from the cache.
"""

from __future__ import annotations

from decimal import Decimal

import pytest
from pydantic import SecretStr

from tests.conftest import LLM_KEY
from tests.integration.test_llm_adapters import build
from tests.unit.test_chatbot_service import Chat
from vamu_tasks.domain import AssistantTurn, Message, ToolResult, ToolSpec, ToolsRequest, Usage
from vamu_tasks.domain import ToolCall as DomainToolCall
from vamu_tasks.llm.anthropic import AnthropicProvider
from vamu_tasks.llm.pricing import PRICES, cost_usd
from vamu_tasks.llm.spend import SpendMeter
from vamu_tasks.testing.fake_llm import FakeLLMServer, Text
from vamu_tasks.testing.fake_llm.behaviours import Usage as FakeUsage
from vamu_tasks.testing.fake_llm.caching import PromptCache

CACHE = {"type": "ephemeral"}
TOOLS = tuple(
    ToolSpec(f"tool_{n}", "A tool.", {"type": "object", "properties": {}}) for n in range(3)
)
AGENT_ITEMS = (
    Message("user", "Find me a jazz night."),
    AssistantTurn("Let me look.", (DomainToolCall("toolu_1", "tool_0", "{}"),)),
    ToolResult("toolu_1", "tool_0", "[]"),
)


def marked(blocks: list[dict]) -> list[dict]:
    return [b for b in blocks if "cache_control" in b]


def test_an_anthropic_agent_step_marks_its_tools_system_and_newest_step_for_caching(
    fake_llm: FakeLLMServer,
):
    provider = build("anthropic", fake_llm)
    assert isinstance(provider, AnthropicProvider)
    fake_llm.push(Text("Done."))

    provider.complete_with_tools(ToolsRequest("You plan events.", AGENT_ITEMS, TOOLS))
    provider.close()

    body = fake_llm.requests[-1].body
    assert [t["name"] for t in marked(body["tools"])] == ["tool_2"]
    assert marked(body["system"]) == [
        {"type": "text", "text": "You plan events.", "cache_control": CACHE}
    ]
    # The newest tool result ends the prefix to cache: the next step reads all of it.
    assert [m["role"] for m in body["messages"]] == ["user", "assistant", "user"]
    assert body["messages"][2]["content"][-1]["cache_control"] == CACHE
    assert not marked(body["messages"][0]["content"] + body["messages"][1]["content"])


def test_the_one_hour_ttl_is_asked_for_counted_and_priced_at_twice_the_input_price(
    fake_llm: FakeLLMServer,
):
    provider = AnthropicProvider(
        api_key=SecretStr(LLM_KEY),
        model="claude-sonnet-4-6",
        base_url=fake_llm.anthropic_base_url,
        strict_validation=True,
        cache_ttl="1h",
    )
    fake_llm.push(Text("Done."))
    history = tuple(Message("user" if n % 2 == 0 else "assistant", "x" * 4000) for n in range(3))

    from vamu_tasks.domain import LLMRequest

    result = provider.complete(LLMRequest("You chat about events.", history))
    provider.close()

    body = fake_llm.requests[-1].body
    assert body["system"][0]["cache_control"] == {"type": "ephemeral", "ttl": "1h"}
    usage = result.usage
    assert usage.cache_write_tokens > 1024
    assert usage.cache_write_1h_tokens == usage.cache_write_tokens
    price = PRICES["claude-sonnet-4-6"]
    one_hour_only = Usage(usage.cache_write_tokens, 0, 0, usage.cache_write_tokens,
                          usage.cache_write_tokens)
    assert cost_usd("claude-sonnet-4-6", one_hour_only) == (
        usage.cache_write_tokens * price.input * 2 / 1_000_000
    ).quantize(Decimal("0.000001"))


def test_openai_requests_carry_the_prompt_cache_key_of_their_conversation(
    fake_llm: FakeLLMServer,
):
    chat = Chat(llm=build("openai", fake_llm))
    fake_llm.push(Text("Sure."))

    chat.reply(chat.started("Any jazz this week?"))

    assert fake_llm.requests[-1].body["prompt_cache_key"] == f"chat:{chat.conversation}"


@pytest.mark.parametrize("vendor", ["openai", "anthropic"])
def test_a_conversations_later_turns_read_their_history_from_the_cache(
    vendor: str, fake_llm: FakeLLMServer
):
    chat = Chat(llm=build(vendor, fake_llm))
    long = "Tell me about the jazz nights in Camden this month, with every detail. " * 54
    meters = []
    for n in range(3):
        fake_llm.push(Text(f"Answer {n}: " + "There is a lot on. " * 60))
        meter = SpendMeter()
        chat.reply(chat.started(f"{n}: {long}"), meter=meter)
        meters.append(meter.spend.usage)

    first, second, third = meters
    assert first.cache_read_tokens == 0
    assert second.cache_read_tokens >= 1024
    assert third.cache_read_tokens > second.cache_read_tokens
    if vendor == "anthropic":
        assert first.cache_write_tokens > 0  # Anthropic bills writes; OpenAI reports none
    assert third.input_tokens > third.cache_read_tokens + third.cache_write_tokens


def test_a_prompt_under_the_minimum_is_reported_as_the_behaviour_scripted_it():
    cache = PromptCache()
    usage = FakeUsage(input=12, output=3, cached=5)
    body = {"model": "claude-sonnet-4-6",
            "system": [{"type": "text", "text": "Short.", "cache_control": CACHE}],
            "messages": [{"role": "user", "content": "Hi"}]}

    assert cache.anthropic(body, usage) == usage
    assert cache.anthropic(body, usage) == usage


def test_a_cached_prefix_expires_after_its_ttl_and_is_written_again():
    now = [0.0]
    cache = PromptCache(clock=lambda: now[0])
    body = {"model": "claude-sonnet-4-6",
            "system": [{"type": "text", "text": "x" * 8000, "cache_control": CACHE}],
            "messages": [{"role": "user", "content": "Hi"}]}
    usage = FakeUsage(input=12, output=3)

    written = cache.anthropic(body, usage)
    now[0] = 299.0
    read = cache.anthropic(body, usage)  # a hit refreshes the 5 minutes
    now[0] = 299.0 + 301.0
    expired = cache.anthropic(body, usage)

    prefix = written.cache_write
    assert prefix > 1024 and written.cached == 0
    assert (read.cache_write, read.cached) == (0, prefix)
    assert (expired.cache_write, expired.cached) == (prefix, 0)


def test_openai_reads_a_prefix_only_with_the_same_prompt_cache_key():
    cache = PromptCache()

    def body(key: str, question: str) -> dict:
        return {"model": "gpt-5-mini", "instructions": "y" * 6000, "prompt_cache_key": key,
                "input": [{"role": "user", "content": question}]}

    usage = FakeUsage(input=12, output=3)
    cache.openai(body("chat:a", "first"), usage)
    same_key = cache.openai(body("chat:a", "second"), usage)
    other_key = cache.openai(body("chat:b", "second"), usage)

    assert same_key.cached >= 1024 and same_key.cached % 128 == 0
    assert other_key.cached == 0
