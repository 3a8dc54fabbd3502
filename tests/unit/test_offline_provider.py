"""The offline provider: deterministic, schema-valid answers without a network or a key."""

from __future__ import annotations

import json

import pytest

from vamu_tasks.context.static import StaticUserContextClient
from vamu_tasks.domain import LLMRequest, Message, OutputSchema
from vamu_tasks.inspiration import prompts
from vamu_tasks.inspiration.schemas import InspirationRequest, InspirationResult, llm_output_schema
from vamu_tasks.inspiration.service import generate_ideas
from vamu_tasks.llm.offline import OfflineProvider
from vamu_tasks.llm.pricing import cost_usd
from vamu_tasks.llm.spend import SpendMeter

CONTEXT = StaticUserContextClient()


def inspiration_request(user_id: str, count: int) -> LLMRequest:
    user = CONTEXT.get_context(user_id)
    return LLMRequest(
        system=prompts.SYSTEM,
        messages=(Message("user", prompts.user_prompt(user, count, None, None)),),
        output_schema=OutputSchema("event_ideas", llm_output_schema(count)),
    )


@pytest.mark.parametrize("count", range(1, 11))
def test_the_answer_to_the_inspiration_schema_is_a_valid_result_with_count_ideas(
    count: int,
) -> None:
    result = OfflineProvider().complete(inspiration_request("u-ada", count))

    parsed = InspirationResult.model_validate_json(result.text)
    assert len(parsed.ideas) == count
    assert all(idea.title and idea.description and idea.category for idea in parsed.ideas)


@pytest.mark.parametrize("user_id", ["u-ada", "u-bruno", "u-chioma", "u-dev"])
def test_the_same_request_always_gets_the_same_answer(user_id: str) -> None:
    request = inspiration_request(user_id, 3)

    first = OfflineProvider().complete(request)
    second = OfflineProvider().complete(request)

    assert first == second


def test_different_users_get_different_ideas_drawn_from_their_profile() -> None:
    answers = {}
    for user_id in ("u-ada", "u-chioma"):
        request = inspiration_request(user_id, 3)
        ideas = InspirationResult.model_validate_json(OfflineProvider().complete(request).text)
        prompt = request.messages[0].content.lower()
        assert all(idea.category in prompt for idea in ideas.ideas)
        answers[user_id] = ideas

    assert answers["u-ada"] != answers["u-chioma"]


@pytest.mark.parametrize("count", [1, 5, 10])
def test_generate_ideas_succeeds_offline_in_one_call_at_no_cost(count: int) -> None:
    meter = SpendMeter()

    result = generate_ideas(
        InspirationRequest(user_id="u-bruno", count=count),
        context=CONTEXT,
        llm=OfflineProvider(),
        meter=meter,
    )

    assert len(result.ideas) == count
    assert meter.calls == 1
    assert meter.spend.provider == meter.spend.model == "offline"
    assert meter.spend.usage.input_tokens > 0
    assert meter.spend.cost_usd == 0


def test_without_a_schema_the_answer_is_plain_text_echoing_the_last_message() -> None:
    request = LLMRequest(
        system="You are a helpful events assistant.",
        messages=(Message("user", "Hello"), Message("user", "Any jazz this weekend?")),
    )

    result = OfflineProvider().complete(request)

    assert result.text == "(offline model) You said: Any jazz this weekend?"
    with pytest.raises(ValueError):
        json.loads(result.text)
    assert (result.provider, result.model, result.finish_reason) == ("offline", "offline", "stop")
    assert result.usage.input_tokens > 0 and result.usage.output_tokens > 0
    assert cost_usd(result.model, result.usage) == 0
