"""The fake LLM server speaks the wire formats the official SDKs validate strictly."""

from __future__ import annotations

import json
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from typing import Any
from urllib.error import HTTPError

import anthropic
import httpx2
import openai
import pytest
from pydantic import BaseModel

from vamu_tasks.testing.fake_llm import (
    DropStream,
    Error,
    FakeLLMServer,
    Hang,
    Refusal,
    StreamError,
    Text,
    ToolCall,
    Truncated,
    behaviour_from_dict,
    behaviour_to_dict,
)

OPENAI_MODEL = "gpt-4.1-mini"
# Deprecated Claude model names make the SDK warn, which `filterwarnings = error` turns fatal.
CLAUDE_MODEL = "claude-sonnet-4-6"

WEATHER_SCHEMA = {
    "type": "object",
    "properties": {"city": {"type": "string"}, "days": {"type": "integer"}},
    "required": ["city", "days"],
    "additionalProperties": False,
}
RESPONSES_TOOL = {
    "type": "function",
    "name": "get_weather",
    "description": "Weather forecast",
    "parameters": WEATHER_SCHEMA,
    "strict": True,
}
CHAT_TOOL = {
    "type": "function",
    "function": {"name": "get_weather", "parameters": WEATHER_SCHEMA, "strict": True},
}
ANTHROPIC_TOOL = {"name": "get_weather", "input_schema": WEATHER_SCHEMA}
IDEA_SCHEMA = {
    "type": "object",
    "properties": {"title": {"type": "string"}},
    "required": ["title"],
    "additionalProperties": False,
}
USER: list[Any] = [{"role": "user", "content": "hello there"}]
REFUSAL = "I'm sorry, but I can't help with that."


class Idea(BaseModel):
    title: str


@pytest.fixture(scope="module")
def server() -> Iterator[FakeLLMServer]:
    with FakeLLMServer() as fake:
        yield fake


@pytest.fixture(autouse=True)
def clean(server: FakeLLMServer) -> None:
    server.reset()
    server.latency = 0.0


@pytest.fixture(scope="module")
def oai(server: FakeLLMServer) -> Iterator[openai.OpenAI]:
    client = openai.OpenAI(
        base_url=server.openai_base_url,
        api_key="k",
        max_retries=0,
        _strict_response_validation=True,
    )
    yield client
    client.close()


@pytest.fixture(scope="module")
def claude(server: FakeLLMServer) -> Iterator[anthropic.Anthropic]:
    client = anthropic.Anthropic(
        base_url=server.anthropic_base_url,
        api_key="k",
        max_retries=0,
        _strict_response_validation=True,
    )
    yield client
    client.close()


# OpenAI Responses


def test_openai_responses_returns_text_and_echoes_the_model(server, oai):
    server.push(Text("bonjour", input_tokens=30, output_tokens=7))
    response = oai.responses.create(model=OPENAI_MODEL, input="hi")
    assert response.output_text == "bonjour"
    assert response.model == OPENAI_MODEL
    assert response.status == "completed"
    assert response.usage is not None
    assert (response.usage.input_tokens, response.usage.output_tokens) == (30, 7)
    assert response.usage.total_tokens == 37
    assert response._request_id is not None  # from the x-request-id header


def test_openai_responses_stream_reports_usage_with_cached_tokens(server, oai):
    text = "a streamed answer in several pieces"
    server.push(Text(text, input_tokens=100, cached_tokens=64, chunk_size=5))
    with oai.responses.stream(model=OPENAI_MODEL, input="hi") as stream:
        events = list(stream)
        final = stream.get_final_response()
    deltas = [e.delta for e in events if e.type == "response.output_text.delta"]
    assert "".join(deltas) == text
    assert len(deltas) == 7
    assert final.output_text == text
    assert final.usage is not None
    assert final.usage.input_tokens == 100
    assert final.usage.input_tokens_details.cached_tokens == 64
    assert final.usage.input_tokens_details.cache_write_tokens == 0
    assert final.usage.output_tokens_details.reasoning_tokens == 0


def test_openai_responses_stream_events_are_ordered_and_consistent(server, oai):
    server.push(Text("ordered", chunk_size=3))
    with oai.responses.create(model=OPENAI_MODEL, input="hi", stream=True) as stream:
        events = list(stream)
    types = [e.type for e in events]
    assert types[:4] == [
        "response.created",
        "response.in_progress",
        "response.output_item.added",
        "response.content_part.added",
    ]
    assert types[-4:] == [
        "response.output_text.done",
        "response.content_part.done",
        "response.output_item.done",
        "response.completed",
    ]
    assert [e.sequence_number for e in events] == list(range(len(events)))
    item_ids = {e.item_id for e in events if hasattr(e, "item_id")}
    assert len(item_ids) == 1
    assert {e.response.id for e in events if hasattr(e, "response")} == {events[0].response.id}


def test_openai_responses_structured_output_request_returns_text_verbatim(server, oai):
    malformed = '{"title": "unclosed'
    server.push(Text(malformed))
    response = oai.responses.create(
        model=OPENAI_MODEL,
        input="idea please",
        text={
            "format": {
                "type": "json_schema",
                "name": "idea",
                "schema": IDEA_SCHEMA,
                "strict": True,
            }
        },
    )
    assert response.output_text == malformed
    assert server.requests[-1].body["text"]["format"]["type"] == "json_schema"


def test_openai_responses_parse_reads_valid_structured_output(server, oai):
    server.push(Text.json({"title": "Picnic"}))
    response = oai.responses.parse(model=OPENAI_MODEL, input="idea", text_format=Idea)
    assert response.output_parsed == Idea(title="Picnic")


def test_openai_responses_tool_call_is_parsed_plain_and_streamed(server, oai):
    args = {"city": "Lyon", "days": 3}
    server.push(ToolCall("get_weather", args, call_id="call_fixed"), ToolCall("get_weather", args))
    response = oai.responses.create(model=OPENAI_MODEL, input="weather?", tools=[RESPONSES_TOOL])
    call = response.output[0]
    assert call.type == "function_call"
    assert (call.name, json.loads(call.arguments), call.call_id) == (
        "get_weather",
        args,
        "call_fixed",
    )

    with oai.responses.stream(model=OPENAI_MODEL, input="weather?", tools=[RESPONSES_TOOL]) as s:
        events = list(s)
        final = s.get_final_response()
    assert any(e.type == "response.function_call_arguments.delta" for e in events)
    streamed = final.output[0]
    assert streamed.type == "function_call"
    assert streamed.name == "get_weather"
    assert streamed.parsed_arguments == args
    assert streamed.call_id.startswith("call_")


def test_openai_responses_truncated_stream_has_no_completed_event(server, oai):
    server.push(Truncated("cut off here", after_chunks=1))
    with oai.responses.stream(model=OPENAI_MODEL, input="hi") as stream:
        events = list(stream)
        with pytest.raises(RuntimeError, match=r"response\.completed"):
            stream.get_final_response()
    assert "response.completed" not in [e.type for e in events]
    assert [e.delta for e in events if e.type == "response.output_text.delta"] == ["cut off "]


def test_openai_responses_truncated_plain_answer_is_incomplete(server, oai):
    server.push(Truncated("cut off"))
    response = oai.responses.create(model=OPENAI_MODEL, input="hi")
    assert response.status == "incomplete"
    assert response.incomplete_details is not None
    assert response.incomplete_details.reason == "max_output_tokens"


def test_openai_responses_refusal_is_a_refusal_content_part(server, oai):
    server.push(Refusal(REFUSAL))
    response = oai.responses.create(model=OPENAI_MODEL, input="hi")
    assert response.status == "completed"
    assert response.incomplete_details is None
    assert response.usage is not None
    [item] = response.output
    assert item.type == "message"
    [part] = item.content
    assert part.type == "refusal"
    assert part.refusal == REFUSAL
    assert response.output_text == ""


def test_openai_responses_refusal_streams_refusal_events(server, oai):
    server.push(Refusal(REFUSAL), Refusal(REFUSAL))
    with oai.responses.create(model=OPENAI_MODEL, input="hi", stream=True) as stream:
        events = list(stream)
    types = [e.type for e in events]
    assert types[:4] == [
        "response.created",
        "response.in_progress",
        "response.output_item.added",
        "response.content_part.added",
    ]
    assert types[-4:] == [
        "response.refusal.done",
        "response.content_part.done",
        "response.output_item.done",
        "response.completed",
    ]
    assert set(types[4:-4]) == {"response.refusal.delta"}
    assert events[3].part.type == "refusal"
    assert events[3].part.refusal == ""
    assert "".join(e.delta for e in events if e.type == "response.refusal.delta") == REFUSAL
    assert events[-4].refusal == REFUSAL
    assert events[-3].part.type == "refusal"
    assert [e.sequence_number for e in events] == list(range(len(events)))
    assert len({e.item_id for e in events if hasattr(e, "item_id")}) == 1
    assert "response.output_text.delta" not in types

    # The SDK's stream helper accumulates it into the same final response.
    with oai.responses.stream(model=OPENAI_MODEL, input="hi") as helper:
        list(helper)
        final = helper.get_final_response()
    assert final.status == "completed"
    [item] = final.output
    assert item.type == "message"
    assert [(p.type, getattr(p, "refusal", None)) for p in item.content] == [("refusal", REFUSAL)]


def test_openai_responses_stream_error_raises_api_error(server, oai):
    server.push(StreamError(error_type="server_error", message="boom"))
    with pytest.raises(openai.APIError, match="boom"):
        with oai.responses.stream(model=OPENAI_MODEL, input="hi") as stream:
            list(stream)


# OpenAI Chat Completions


def test_openai_chat_returns_text_with_stop_finish_reason(server, oai):
    completion = oai.chat.completions.create(model=OPENAI_MODEL, messages=USER)
    assert completion.choices[0].message.content == "fake reply: hello there"
    assert completion.choices[0].finish_reason == "stop"
    assert completion.model == OPENAI_MODEL
    assert completion.usage is not None


def test_openai_chat_stream_ends_with_a_usage_chunk_when_asked(server, oai):
    text = "chat stream text"
    server.push(Text(text, input_tokens=40, cached_tokens=8, output_tokens=4))
    with oai.chat.completions.create(
        model=OPENAI_MODEL,
        messages=USER,
        stream=True,
        stream_options={"include_usage": True},
    ) as stream:
        chunks = list(stream)
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == text
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == "stop"
    last = chunks[-1]
    assert last.choices == []
    assert last.usage is not None
    assert (last.usage.prompt_tokens, last.usage.completion_tokens) == (40, 4)
    assert last.usage.prompt_tokens_details is not None
    assert last.usage.prompt_tokens_details.cached_tokens == 8


def test_openai_chat_stream_without_include_usage_has_no_usage(server, oai):
    with oai.chat.completions.create(model=OPENAI_MODEL, messages=USER, stream=True) as stream:
        chunks = list(stream)
    assert all(c.choices for c in chunks)
    assert all(c.usage is None for c in chunks)


def test_openai_chat_structured_output_request_returns_text_verbatim(server, oai):
    malformed = "{not json at all"
    server.push(Text(malformed))
    completion = oai.chat.completions.create(
        model=OPENAI_MODEL,
        messages=USER,
        response_format={
            "type": "json_schema",
            "json_schema": {"name": "idea", "schema": IDEA_SCHEMA, "strict": True},
        },
    )
    assert completion.choices[0].message.content == malformed


def test_openai_chat_tool_call_is_parsed_plain_and_streamed(server, oai):
    args = {"city": "Nice", "days": 2}
    server.push(ToolCall("get_weather", args), ToolCall("get_weather", args, call_id="call_x"))
    completion = oai.chat.completions.create(model=OPENAI_MODEL, messages=USER, tools=[CHAT_TOOL])
    choice = completion.choices[0]
    assert choice.finish_reason == "tool_calls"
    assert choice.message.tool_calls is not None
    call = choice.message.tool_calls[0]
    assert call.type == "function"
    assert (call.function.name, json.loads(call.function.arguments)) == ("get_weather", args)

    with oai.chat.completions.stream(model=OPENAI_MODEL, messages=USER, tools=[CHAT_TOOL]) as s:
        final = s.get_final_completion()
    streamed = final.choices[0]
    assert streamed.finish_reason == "tool_calls"
    assert streamed.message.tool_calls is not None
    tool_call = streamed.message.tool_calls[0]
    assert tool_call.id == "call_x"
    assert tool_call.function.parsed_arguments == args


def test_openai_chat_tool_call_chunks_carry_index_always_and_id_only_first(server, oai):
    server.push(ToolCall("get_weather", {"city": "Paris", "days": 10}))
    with oai.chat.completions.create(
        model=OPENAI_MODEL, messages=USER, tools=[CHAT_TOOL], stream=True
    ) as stream:
        deltas = [c.choices[0].delta for c in stream if c.choices[0].delta.tool_calls]
    assert len(deltas) > 2
    assert all(d.tool_calls and d.tool_calls[0].index == 0 for d in deltas)
    assert deltas[0].tool_calls and deltas[0].tool_calls[0].id
    assert all(d.tool_calls and d.tool_calls[0].id is None for d in deltas[1:])


def test_openai_chat_truncated_stream_has_no_finish_reason(server, oai):
    server.push(Truncated("truncated text", after_chunks=1))
    with oai.chat.completions.create(model=OPENAI_MODEL, messages=USER, stream=True) as stream:
        chunks = list(stream)
    assert all(c.choices[0].finish_reason is None for c in chunks)


def test_openai_chat_truncated_plain_answer_stops_for_length(server, oai):
    server.push(Truncated())
    completion = oai.chat.completions.create(model=OPENAI_MODEL, messages=USER)
    assert completion.choices[0].finish_reason == "length"


def test_openai_chat_refusal_is_in_message_refusal_plain_and_streamed(server, oai):
    server.push(Refusal(REFUSAL), Refusal(REFUSAL), Refusal(REFUSAL))
    completion = oai.chat.completions.create(model=OPENAI_MODEL, messages=USER)
    choice = completion.choices[0]
    assert choice.message.refusal == REFUSAL
    assert choice.message.content is None
    assert choice.finish_reason == "stop"

    with oai.chat.completions.create(model=OPENAI_MODEL, messages=USER, stream=True) as stream:
        chunks = list(stream)
    assert "".join(c.choices[0].delta.refusal or "" for c in chunks) == REFUSAL
    assert all(not c.choices[0].delta.content for c in chunks)
    assert chunks[-1].choices[0].finish_reason == "stop"

    with oai.chat.completions.stream(model=OPENAI_MODEL, messages=USER) as helper:
        events = [e.type for e in helper]
        final = helper.get_final_completion()
    assert "refusal.done" in events
    assert final.choices[0].message.refusal == REFUSAL
    assert final.choices[0].message.content is None


def test_openai_chat_stream_error_raises_api_error(server, oai):
    server.push(StreamError(message="mid-stream failure"))
    with pytest.raises(openai.APIError, match="mid-stream failure"):
        with oai.chat.completions.create(model=OPENAI_MODEL, messages=USER, stream=True) as s:
            list(s)


# OpenAI errors and failures, for both APIs


def call_responses(client: openai.OpenAI, stream: bool = False) -> None:
    if stream:
        with client.responses.create(model=OPENAI_MODEL, input="hi", stream=True) as s:
            list(s)
    else:
        client.responses.create(model=OPENAI_MODEL, input="hi")


def call_chat(client: openai.OpenAI, stream: bool = False) -> None:
    if stream:
        with client.chat.completions.create(model=OPENAI_MODEL, messages=USER, stream=True) as s:
            list(s)
    else:
        client.chat.completions.create(model=OPENAI_MODEL, messages=USER)


OPENAI_CALLS = pytest.mark.parametrize(
    "call", [call_responses, call_chat], ids=["responses", "chat"]
)


@OPENAI_CALLS
def test_openai_rate_limit_maps_to_rate_limit_error_with_retry_after(server, oai, call):
    server.push(Error(429, "slow down", retry_after=7))
    with pytest.raises(openai.RateLimitError) as caught:
        call(oai)
    assert caught.value.response.headers["retry-after"] == "7"
    assert caught.value.code == "rate_limit_exceeded"
    assert caught.value.type == "rate_limit_exceeded"
    assert caught.value.request_id is not None


@OPENAI_CALLS
def test_openai_server_error_maps_to_internal_server_error(server, oai, call):
    server.push(Error(500, "oops"))
    with pytest.raises(openai.InternalServerError) as caught:
        call(oai)
    assert caught.value.status_code == 500
    assert caught.value.type == "server_error"


@OPENAI_CALLS
def test_openai_context_length_error_is_a_bad_request_with_its_code(server, oai, call):
    server.push(Error(400, "too long", error_type="context_length_exceeded"))
    with pytest.raises(openai.BadRequestError) as caught:
        call(oai)
    assert caught.value.code == "context_length_exceeded"
    assert caught.value.type == "invalid_request_error"


@OPENAI_CALLS
def test_openai_hang_beyond_the_client_timeout_raises_api_timeout_error(server, oai, call):
    server.push(Hang(3.0))
    started = time.monotonic()
    with pytest.raises(openai.APITimeoutError):
        call(oai.with_options(timeout=0.3))
    assert time.monotonic() - started < 2.0


def test_openai_hang_then_answers_with_the_given_behaviour(server, oai):
    server.push(Hang(0.2, then=Text("late but here")))
    started = time.monotonic()
    response = oai.responses.create(model=OPENAI_MODEL, input="hi")
    assert response.output_text == "late but here"
    assert time.monotonic() - started >= 0.2


@OPENAI_CALLS
def test_openai_dropped_stream_raises_api_connection_error(server, oai, call):
    # openai wraps transport failures met while iterating a stream in APIConnectionError.
    server.push(DropStream())
    with pytest.raises(openai.APIConnectionError) as caught:
        call(oai, stream=True)
    assert isinstance(caught.value.__cause__, httpx2.RemoteProtocolError)


# Anthropic Messages


def test_anthropic_messages_returns_text_and_cache_usage(server, claude):
    server.push(Text("hej", input_tokens=50, cached_tokens=20, output_tokens=2))
    message = claude.messages.create(model=CLAUDE_MODEL, max_tokens=64, messages=USER)
    assert message.content[0].type == "text"
    assert message.content[0].text == "hej"
    assert message.stop_reason == "end_turn"
    assert message.model == CLAUDE_MODEL
    # Anthropic counts cached prompt tokens apart from input_tokens.
    assert message.usage.input_tokens == 30
    assert message.usage.cache_read_input_tokens == 20
    assert message.usage.cache_creation_input_tokens == 0
    assert message.usage.output_tokens == 2
    assert message._request_id is not None  # from the request-id header


def test_anthropic_stream_reports_final_usage_and_stop_reason(server, claude):
    text = "streamed from claude"
    server.push(Text(text, input_tokens=10, cached_tokens=4, output_tokens=5, chunk_size=4))
    with claude.messages.stream(model=CLAUDE_MODEL, max_tokens=64, messages=USER) as stream:
        pieces = list(stream.text_stream)
        final = stream.get_final_message()
    assert "".join(pieces) == text
    assert len(pieces) == 5
    assert final.stop_reason == "end_turn"
    assert final.usage.output_tokens == 5
    assert final.usage.cache_read_input_tokens == 4


def test_anthropic_raw_stream_frames_follow_the_documented_order(server, claude):
    server.push(Text("abcdefgh", chunk_size=4))
    with claude.messages.create(
        model=CLAUDE_MODEL, max_tokens=64, messages=USER, stream=True
    ) as stream:
        types = [event.type for event in stream]
    # The SDK swallows `ping`, so it does not appear here.
    assert types == [
        "message_start",
        "content_block_start",
        "content_block_delta",
        "content_block_delta",
        "content_block_stop",
        "message_delta",
        "message_stop",
    ]


def test_anthropic_structured_output_request_returns_text_verbatim(server, claude):
    malformed = '{"title": 42'
    server.push(Text(malformed))
    message = claude.messages.create(
        model=CLAUDE_MODEL,
        max_tokens=64,
        messages=USER,
        output_config={"format": {"type": "json_schema", "schema": IDEA_SCHEMA}},
    )
    assert message.content[0].type == "text"
    assert message.content[0].text == malformed
    assert server.requests[-1].body["output_config"]["format"]["type"] == "json_schema"


def test_anthropic_tool_use_is_parsed_plain_and_streamed(server, claude):
    args = {"city": "Bern", "days": 5}
    server.push(ToolCall("get_weather", args), ToolCall("get_weather", args, call_id="toolu_x"))
    message = claude.messages.create(
        model=CLAUDE_MODEL, max_tokens=64, messages=USER, tools=[ANTHROPIC_TOOL]
    )
    block = message.content[0]
    assert message.stop_reason == "tool_use"
    assert block.type == "tool_use"
    assert (block.name, block.input) == ("get_weather", args)
    assert block.id.startswith("toolu_")

    with claude.messages.stream(
        model=CLAUDE_MODEL, max_tokens=64, messages=USER, tools=[ANTHROPIC_TOOL]
    ) as stream:
        final = stream.get_final_message()
    streamed = final.content[0]
    assert final.stop_reason == "tool_use"
    assert streamed.type == "tool_use"
    assert (streamed.id, streamed.name, streamed.input) == ("toolu_x", "get_weather", args)


def test_anthropic_refusal_stops_with_stop_reason_refusal(server, claude):
    server.push(Refusal(REFUSAL), Refusal(REFUSAL, partial="Hello.."))
    message = claude.messages.create(model=CLAUDE_MODEL, max_tokens=64, messages=USER)
    assert message.stop_reason == "refusal"
    assert message.content == []
    assert message.stop_details is not None
    assert message.stop_details.type == "refusal"
    assert message.stop_details.explanation == REFUSAL

    partial = claude.messages.create(model=CLAUDE_MODEL, max_tokens=64, messages=USER)
    assert partial.stop_reason == "refusal"
    assert [(b.type, getattr(b, "text", None)) for b in partial.content] == [("text", "Hello..")]


def test_anthropic_refusal_streams_a_message_delta_with_stop_reason_refusal(server, claude):
    server.push(Refusal(REFUSAL), Refusal(REFUSAL, partial="I will explain how"))
    with claude.messages.create(
        model=CLAUDE_MODEL, max_tokens=64, messages=USER, stream=True
    ) as stream:
        events = list(stream)
    # Refused before any text: no content block at all.
    assert [e.type for e in events] == ["message_start", "message_delta", "message_stop"]
    delta = events[1]
    assert delta.type == "message_delta"
    assert delta.delta.stop_reason == "refusal"
    assert delta.delta.stop_details is not None
    assert delta.delta.stop_details.explanation == REFUSAL

    with claude.messages.stream(model=CLAUDE_MODEL, max_tokens=64, messages=USER) as helper:
        pieces = list(helper.text_stream)
        final = helper.get_final_message()
    assert "".join(pieces) == "I will explain how"
    assert final.stop_reason == "refusal"
    assert final.content[0].type == "text"
    assert final.content[0].text == "I will explain how"


def test_refusal_round_trips_through_the_control_format():
    refusal = Refusal("no", partial="well")
    assert behaviour_to_dict(refusal) == {"kind": "refusal", "text": "no", "partial": "well"}
    assert behaviour_from_dict(behaviour_to_dict(refusal)) == refusal


def test_anthropic_rate_limit_maps_to_rate_limit_error_with_retry_after(server, claude):
    server.push(Error(429, "slow down", retry_after=1.5))
    with pytest.raises(anthropic.RateLimitError) as caught:
        claude.messages.create(model=CLAUDE_MODEL, max_tokens=64, messages=USER)
    assert caught.value.response.headers["retry-after"] == "1.5"
    assert caught.value.type == "rate_limit_error"
    assert caught.value.request_id is not None


def test_anthropic_overloaded_529_is_an_api_status_error_with_status_529(server, claude):
    server.push(Error(529, "Overloaded"))
    with pytest.raises(anthropic.APIStatusError) as caught:
        claude.messages.create(model=CLAUDE_MODEL, max_tokens=64, messages=USER)
    assert caught.value.status_code == 529
    assert caught.value.type == "overloaded_error"
    # anthropic 2.10 has a dedicated class for 529, a subclass of InternalServerError.
    assert isinstance(caught.value, anthropic.InternalServerError)


def test_anthropic_server_error_maps_to_internal_server_error(server, claude):
    server.push(Error(500, "oops"))
    with pytest.raises(anthropic.InternalServerError) as caught:
        claude.messages.create(model=CLAUDE_MODEL, max_tokens=64, messages=USER)
    assert caught.value.type == "api_error"


def test_anthropic_bad_request_maps_to_bad_request_error(server, claude):
    server.push(Error(400, "prompt is too long", error_type="context_length_exceeded"))
    with pytest.raises(anthropic.BadRequestError) as caught:
        claude.messages.create(model=CLAUDE_MODEL, max_tokens=64, messages=USER)
    assert caught.value.type == "invalid_request_error"
    assert caught.value.api_message == "prompt is too long"


def test_anthropic_hang_beyond_the_client_timeout_raises_api_timeout_error(server, claude):
    server.push(Hang(3.0))
    with pytest.raises(anthropic.APITimeoutError):
        claude.with_options(timeout=0.3).messages.create(
            model=CLAUDE_MODEL, max_tokens=64, messages=USER
        )


def test_anthropic_dropped_stream_raises_a_transport_error(server, claude):
    server.push(DropStream())
    # anthropic 2.10 does not wrap transport errors met while iterating a stream: the raw
    # httpx2.RemoteProtocolError leaks out. APIConnectionError is accepted too so the test
    # survives an SDK that starts wrapping it, as openai already does.
    with pytest.raises((httpx2.TransportError, anthropic.APIConnectionError)) as caught:
        with claude.messages.stream(model=CLAUDE_MODEL, max_tokens=64, messages=USER) as s:
            list(s)
    assert isinstance(caught.value, httpx2.RemoteProtocolError)


def test_anthropic_stream_error_raises_api_status_error_during_iteration(server, claude):
    server.push(StreamError(after_chunks=1, error_type="overloaded_error", message="Overloaded"))
    received = []
    with pytest.raises(anthropic.APIStatusError) as caught:
        with claude.messages.stream(model=CLAUDE_MODEL, max_tokens=64, messages=USER) as s:
            received.extend(s.text_stream)
    assert received  # the error came mid-stream, after some text
    assert caught.value.status_code == 200
    assert caught.value.type == "overloaded_error"


def test_anthropic_stream_error_on_a_plain_request_is_an_http_error(server, claude):
    server.push(StreamError(error_type="overloaded_error"))
    with pytest.raises(anthropic.APIStatusError) as caught:
        claude.messages.create(model=CLAUDE_MODEL, max_tokens=64, messages=USER)
    assert caught.value.status_code == 529


def test_anthropic_truncated_stream_has_no_stop_reason(server, claude):
    server.push(Truncated("cut off mid sentence", after_chunks=2))
    with claude.messages.stream(model=CLAUDE_MODEL, max_tokens=64, messages=USER) as stream:
        events = list(stream)
        final = stream.get_final_message()
    assert "message_stop" not in [e.type for e in events]
    assert final.stop_reason is None
    assert final.content[0].type == "text"
    assert final.content[0].text == "cut off mid sent"


def test_anthropic_truncated_plain_answer_stops_for_max_tokens(server, claude):
    server.push(Truncated())
    message = claude.messages.create(model=CLAUDE_MODEL, max_tokens=64, messages=USER)
    assert message.stop_reason == "max_tokens"


# Scripting, recording, auth, control


def test_script_is_shared_fifo_and_falls_back_to_the_responder(server, oai, claude):
    server.push(Text("first"), Text("second"))
    server.set_responder(lambda request: Text(f"responder for {request.api}"))
    assert oai.responses.create(model=OPENAI_MODEL, input="x").output_text == "first"
    message = claude.messages.create(model=CLAUDE_MODEL, max_tokens=64, messages=USER)
    assert message.content[0].type == "text"
    assert message.content[0].text == "second"
    fallback = oai.chat.completions.create(model=OPENAI_MODEL, messages=USER)
    assert fallback.choices[0].message.content == "responder for openai.chat"


def test_default_responder_echoes_the_last_user_message(server, claude):
    message = claude.messages.create(
        model=CLAUDE_MODEL,
        max_tokens=64,
        messages=[
            {"role": "user", "content": "first question"},
            {"role": "assistant", "content": "an answer"},
            {"role": "user", "content": [{"type": "text", "text": "second question"}]},
        ],
    )
    assert message.content[0].type == "text"
    assert message.content[0].text == "fake reply: second question"


def test_requests_are_recorded_with_lower_case_headers(server, oai, claude):
    oai.responses.create(model=OPENAI_MODEL, input="hi", stream=True).close()
    claude.messages.create(model=CLAUDE_MODEL, max_tokens=64, messages=USER)
    first, second = server.requests
    assert (first.api, first.method, first.path, first.stream) == (
        "openai.responses",
        "POST",
        "/v1/responses",
        True,
    )
    assert first.headers["authorization"] == "Bearer k"
    assert second.api == "anthropic.messages"
    assert second.stream is False
    assert second.body["max_tokens"] == 64
    assert "anthropic-version" in second.headers
    assert second.headers["authorization"] == "Bearer k"
    assert first.received_at <= second.received_at


def test_latency_delays_every_answer(server, oai):
    server.latency = 0.25
    started = time.monotonic()
    oai.responses.create(model=OPENAI_MODEL, input="hi")
    assert time.monotonic() - started >= 0.25


def test_api_key_check_rejects_a_wrong_key_in_both_vendor_shapes():
    with FakeLLMServer(api_key="secret") as fake:
        wrong_openai = openai.OpenAI(
            base_url=fake.openai_base_url,
            api_key="wrong",
            max_retries=0,
            _strict_response_validation=True,
        )
        wrong_claude = anthropic.Anthropic(
            base_url=fake.anthropic_base_url,
            api_key="wrong",
            max_retries=0,
            _strict_response_validation=True,
        )
        right_claude = anthropic.Anthropic(
            base_url=fake.anthropic_base_url,
            api_key="secret",
            max_retries=0,
            _strict_response_validation=True,
        )
        with wrong_openai, wrong_claude, right_claude:
            fake.push(Text("only for the right key"))
            with pytest.raises(openai.AuthenticationError) as openai_caught:
                wrong_openai.responses.create(model=OPENAI_MODEL, input="hi")
            with pytest.raises(anthropic.AuthenticationError) as claude_caught:
                wrong_claude.messages.create(model=CLAUDE_MODEL, max_tokens=8, messages=USER)
            message = right_claude.messages.create(model=CLAUDE_MODEL, max_tokens=8, messages=USER)
        assert openai_caught.value.code == "invalid_api_key"
        assert claude_caught.value.type == "authentication_error"
        assert message.content[0].type == "text"
        assert message.content[0].text == "only for the right key"
        request = urllib.request.Request(
            fake.url + "/v1/messages",
            data=json.dumps({"model": CLAUDE_MODEL, "max_tokens": 8, "messages": USER}).encode(),
            headers={"x-api-key": "secret", "content-type": "application/json"},
        )
        with urllib.request.urlopen(request, timeout=5) as answer:
            assert json.load(answer)["type"] == "message"


def test_unknown_path_is_a_404_in_the_vendor_shape(server):
    for headers, expected in [
        ({}, {"error"}),
        ({"anthropic-version": "2023-06-01"}, {"type", "error", "request_id"}),
    ]:
        request = urllib.request.Request(server.url + "/v1/nope", data=b"{}", headers=headers)
        with pytest.raises(HTTPError) as caught:
            urllib.request.urlopen(request, timeout=5)
        with caught.value as response:
            assert response.code == 404
            assert set(json.load(response)) == expected


def post_json(url: str, payload: object) -> object:
    request = urllib.request.Request(
        url, data=json.dumps(payload).encode(), headers={"content-type": "application/json"}
    )
    with urllib.request.urlopen(request, timeout=5) as answer:
        return json.load(answer)


def test_standalone_process_serves_and_accepts_control_requests():
    process = subprocess.Popen(
        [sys.executable, "-m", "vamu_tasks.testing.fake_llm", "--port", "0", "--latency", "0.2"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert process.stdout is not None
        url = json.loads(process.stdout.readline())["url"]
        assert url.startswith("http://127.0.0.1:")
        behaviours = [behaviour_to_dict(Text("from afar")), {"kind": "error", "status": 429}]
        assert post_json(url + "/_fake/push", behaviours) == {"queued": 2}
        with openai.OpenAI(
            base_url=url + "/v1", api_key="k", max_retries=0, _strict_response_validation=True
        ) as client:
            started = time.monotonic()
            assert client.responses.create(model=OPENAI_MODEL, input="hi").output_text == (
                "from afar"
            )
            assert time.monotonic() - started >= 0.2
            assert post_json(url + "/_fake/config", {"latency": 0}) == {"latency": 0.0}
            with pytest.raises(openai.RateLimitError):
                client.chat.completions.create(model=OPENAI_MODEL, messages=USER)
        with urllib.request.urlopen(url + "/_fake/requests", timeout=5) as answer:
            recorded = json.load(answer)
        assert [r["api"] for r in recorded] == ["openai.responses", "openai.chat"]
        assert post_json(url + "/_fake/reset", {}) == {"ok": True}
    finally:
        process.terminate()
        _out, err = process.communicate(timeout=10)
    assert process.returncode == 0
    assert err == ""
