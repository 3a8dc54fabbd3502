"""The fake LLM refuses, rule by rule, what the real APIs refuse, with their status and JSON.

Each rule is written once in vamu_tasks/testing/fake_llm/rules.py with the vendor page it
comes from; each test here breaks one rule and checks the refusal, and a body that keeps every
rule is accepted, so a rule that refused everything would fail too.
"""

from __future__ import annotations

import copy
import json
import urllib.request
from typing import Any
from urllib.error import HTTPError

import anthropic
import openai
import pytest
from pydantic import SecretStr

from tests.conftest import LLM_KEY
from vamu_tasks.domain import LLMRequest, Message, OutputSchema
from vamu_tasks.errors import ProviderRejected
from vamu_tasks.inspiration.schemas import llm_output_schema
from vamu_tasks.llm.anthropic import AnthropicProvider
from vamu_tasks.llm.openai import OpenAIProvider
from vamu_tasks.testing.fake_llm import FakeLLMServer, Text

CLAUDE = "claude-sonnet-4-6"
GPT = "gpt-5-mini"
USER = [{"role": "user", "content": "Ideas, please."}]


def post(server: FakeLLMServer, path: str, body: dict[str, Any]) -> tuple[int, Any]:
    request = urllib.request.Request(
        server.url + path,
        data=json.dumps(body).encode(),
        headers={
            "content-type": "application/json",
            "anthropic-version": "2023-06-01",
            "x-api-key": LLM_KEY,
        },
    )
    try:
        with urllib.request.urlopen(request, timeout=5) as answer:
            return answer.status, json.load(answer)
    except HTTPError as error:
        return error.code, json.load(error)


def claude(**fields: Any) -> dict[str, Any]:
    return {"model": CLAUDE, "max_tokens": 256, "messages": USER, **fields}


def claude_schema(schema: dict[str, Any]) -> dict[str, Any]:
    return claude(output_config={"format": {"type": "json_schema", "schema": schema}})


def refused_by_anthropic(server: FakeLLMServer, body: dict[str, Any]) -> tuple[int, str, str]:
    status, answer = post(server, "/v1/messages", body)
    assert answer["type"] == "error" and answer["request_id"].startswith("req_")
    return status, answer["error"]["type"], answer["error"]["message"]


def gpt(**fields: Any) -> dict[str, Any]:
    return {"model": GPT, "input": USER, **fields}


def strict_format(schema: dict[str, Any]) -> dict[str, Any]:
    fmt = {"type": "json_schema", "name": "event_ideas", "schema": schema, "strict": True}
    return gpt(text={"format": fmt})


def refused_by_openai(server: FakeLLMServer, body: dict[str, Any], path: str = "/v1/responses"):
    status, answer = post(server, path, body)
    error = answer["error"]
    assert set(error) == {"message", "type", "param", "code"}
    return status, error


def closed(properties: dict[str, Any]) -> dict[str, Any]:
    return {
        "type": "object",
        "properties": properties,
        "required": list(properties),
        "additionalProperties": False,
    }


@pytest.fixture
def server(fake_llm: FakeLLMServer) -> FakeLLMServer:
    fake_llm.set_responder(lambda request: Text("{}"))
    return fake_llm


# --- Anthropic structured outputs ---------------------------------------------------------

BOUNDS = [
    ("integer", "minimum", 1),
    ("integer", "maximum", 10),
    ("number", "exclusiveMinimum", 0),
    ("number", "exclusiveMaximum", 1),
    ("integer", "multipleOf", 2),
    ("string", "minLength", 1),
    ("string", "maxLength", 200),
    ("array", "maxItems", 3),
    ("array", "uniqueItems", True),
    ("object", "minProperties", 1),
    ("object", "maxProperties", 3),
]


@pytest.mark.parametrize(("kind", "keyword", "value"), BOUNDS)
def test_anthropic_refuses_a_bound_its_grammar_cannot_express(
    server: FakeLLMServer, kind: str, keyword: str, value: object
):
    field: dict[str, Any] = {"type": kind, keyword: value}
    if kind == "array":
        field["items"] = {"type": "string"}
    if kind == "object":
        field.update(properties={}, additionalProperties=False)

    refusal = refused_by_anthropic(server, claude_schema(closed({"field": field})))

    assert refusal == (
        400,
        "invalid_request_error",
        f"output_config.format.schema: For '{kind}' type, property '{keyword}' is not supported",
    )


def test_anthropic_refuses_min_items_above_one_and_accepts_zero_or_one(server: FakeLLMServer):
    def items(n: int) -> dict[str, Any]:
        return closed({"ideas": {"type": "array", "items": {"type": "string"}, "minItems": n}})

    status, kind, message = refused_by_anthropic(server, claude_schema(items(3)))

    assert (status, kind) == (400, "invalid_request_error")
    assert message.startswith("output_config.format.schema: For 'array' type, 'minItems'")
    assert post(server, "/v1/messages", claude_schema(items(0)))[0] == 200
    assert post(server, "/v1/messages", claude_schema(items(1)))[0] == 200


@pytest.mark.parametrize("nested", [False, True])
def test_anthropic_refuses_an_object_that_does_not_close_its_properties(
    server: FakeLLMServer, nested: bool
):
    open_object = {"type": "object", "properties": {"title": {"type": "string"}}}
    schema = closed({"idea": open_object}) if nested else open_object

    refusal = refused_by_anthropic(server, claude_schema(schema))

    assert refusal == (
        400,
        "invalid_request_error",
        "output_config.format.schema: For 'object' type, 'additionalProperties' must be "
        "explicitly set to false",
    )


def test_anthropic_refuses_a_string_format_off_its_list_and_accepts_one_on_it(
    server: FakeLLMServer,
):
    def formatted(fmt: str) -> dict[str, Any]:
        return closed({"when": {"type": "string", "format": fmt}})

    status, _, message = refused_by_anthropic(server, claude_schema(formatted("phone")))

    assert status == 400 and "format 'phone'" in message
    for fmt in ("date-time", "date", "email", "uri", "uuid"):
        assert post(server, "/v1/messages", claude_schema(formatted(fmt)))[0] == 200


def test_the_deprecated_output_format_parameter_is_held_to_the_same_rules(server: FakeLLMServer):
    schema = closed({"n": {"type": "integer", "minimum": 1}})
    body = claude(output_format={"type": "json_schema", "schema": schema})

    assert refused_by_anthropic(server, body)[2] == (
        "output_format.schema: For 'integer' type, property 'minimum' is not supported"
    )


def test_the_ideas_schema_as_the_anthropic_sdk_transforms_it_is_accepted(server: FakeLLMServer):
    schema = llm_output_schema(3)

    raw = refused_by_anthropic(server, claude_schema(schema))
    transformed = post(server, "/v1/messages", claude_schema(anthropic.transform_schema(schema)))

    assert raw[2].endswith("For 'array' type, property 'maxItems' is not supported")
    assert transformed[0] == 200


# --- Anthropic messages ---------------------------------------------------------------------


@pytest.mark.parametrize("field", ["model", "max_tokens", "messages"])
def test_anthropic_refuses_a_request_without_a_required_field(server: FakeLLMServer, field: str):
    body = claude()
    del body[field]

    assert refused_by_anthropic(server, body) == (
        400,
        "invalid_request_error",
        f"{field}: Field required",
    )


def tool_use(*ids: str) -> dict[str, Any]:
    blocks = [{"type": "text", "text": "Let me look."}]
    blocks += [{"type": "tool_use", "id": i, "name": "search_events", "input": {}} for i in ids]
    return {"role": "assistant", "content": blocks}


def tool_results(*ids: str) -> dict[str, Any]:
    content = [{"type": "tool_result", "tool_use_id": i, "content": "[]"} for i in ids]
    return {"role": "user", "content": content}


def test_anthropic_refuses_a_tool_use_whose_result_is_not_in_the_next_message(
    server: FakeLLMServer,
):
    messages = [*USER, tool_use("toolu_01A", "toolu_01B"), tool_results("toolu_01A")]

    assert refused_by_anthropic(server, claude(messages=messages)) == (
        400,
        "invalid_request_error",
        "messages.1: `tool_use` ids were found without `tool_result` blocks immediately after: "
        "toolu_01B. Each `tool_use` block must have a corresponding `tool_result` block in the "
        "next message.",
    )


def test_anthropic_refuses_a_tool_result_that_answers_no_tool_use_of_the_previous_message(
    server: FakeLLMServer,
):
    messages = [
        *USER,
        tool_use("toolu_01A"),
        tool_results("toolu_01A"),
        {"role": "assistant", "content": "Nothing found."},
        tool_results("toolu_01A"),
    ]

    assert refused_by_anthropic(server, claude(messages=messages)) == (
        400,
        "invalid_request_error",
        "messages.4.content.0: unexpected `tool_use_id` found in `tool_result` blocks: "
        "toolu_01A. Each `tool_result` block must have a corresponding `tool_use` block in the "
        "previous message.",
    )


def test_anthropic_accepts_parallel_tool_uses_answered_together_in_the_next_message(
    server: FakeLLMServer,
):
    messages = [*USER, tool_use("toolu_01A", "toolu_01B"), tool_results("toolu_01B", "toolu_01A")]

    assert post(server, "/v1/messages", claude(messages=messages))[0] == 200


def test_anthropic_refuses_more_than_four_cache_breakpoints(server: FakeLLMServer):
    mark = {"type": "ephemeral"}
    system = [{"type": "text", "text": f"part {n}", "cache_control": mark} for n in range(5)]

    assert refused_by_anthropic(server, claude(system=system)) == (
        400,
        "invalid_request_error",
        "A maximum of 4 blocks with cache_control may be provided. Found 5.",
    )
    assert post(server, "/v1/messages", claude(system=system[:4]))[0] == 200


def test_anthropic_answers_an_unknown_model_with_its_not_found_error(server: FakeLLMServer):
    assert refused_by_anthropic(server, claude(model="claude-sonnet-5-9")) == (
        404,
        "not_found_error",
        "model: claude-sonnet-5-9",
    )
    assert post(server, "/v1/messages", claude(model="claude-sonnet-4-5-20250929"))[0] == 200


# --- OpenAI Responses -----------------------------------------------------------------------


def test_openai_strict_output_refuses_an_object_that_does_not_close_its_properties(
    server: FakeLLMServer,
):
    schema = closed({"ideas": {"type": "array", "items": {"type": "object", "properties": {}}}})

    status, error = refused_by_openai(server, strict_format(schema))

    assert (status, error["type"], error["param"]) == (
        400,
        "invalid_request_error",
        "text.format.schema",
    )
    assert error["code"] == "invalid_json_schema"
    assert error["message"] == (
        "Invalid schema for response_format 'event_ideas': In context=('properties', 'ideas', "
        "'items'), 'additionalProperties' is required to be supplied and to be false."
    )


def test_openai_strict_output_refuses_a_property_missing_from_required(server: FakeLLMServer):
    schema = closed({"title": {"type": "string"}, "when": {"type": ["string", "null"]}})
    schema["required"] = ["title"]

    status, error = refused_by_openai(server, strict_format(schema))

    assert status == 400
    assert error["message"] == (
        "Invalid schema for response_format 'event_ideas': In context=(), 'required' is "
        "required to be supplied and to be an array including every key in properties. "
        "Missing 'when'."
    )


def test_openai_strict_function_tools_are_held_to_the_same_rules_but_loose_ones_are_not(
    server: FakeLLMServer,
):
    loose = {"type": "object", "properties": {"q": {"type": "string"}}}
    tool = {"type": "function", "name": "search_events", "parameters": loose}

    status, error = refused_by_openai(server, gpt(tools=[{**tool, "strict": True}]))

    assert (status, error["param"], error["code"]) == (
        400,
        "tools[0].parameters",
        "invalid_function_parameters",
    )
    assert error["message"].startswith("Invalid schema for function 'search_events': ")
    assert post(server, "/v1/responses", gpt(tools=[{**tool, "strict": False}]))[0] == 200


def test_openai_refuses_a_call_output_that_answers_no_call_in_the_input(server: FakeLLMServer):
    output = {"type": "function_call_output", "call_id": "call_abc", "output": "[]"}
    call = {"type": "function_call", "call_id": "call_abc", "name": "f", "arguments": "{}"}

    status, error = refused_by_openai(server, gpt(input=[*USER, output]))

    assert (status, error["param"], error["code"]) == (400, "input", None)
    assert error["message"] == "No tool call found for function call output with call_id call_abc."
    assert post(server, "/v1/responses", gpt(input=[*USER, call, output]))[0] == 200
    chained = gpt(input=[output], previous_response_id="resp_stored")
    assert post(server, "/v1/responses", chained)[0] == 200


def test_openai_answers_an_unknown_model_as_each_endpoint_does(server: FakeLLMServer):
    status, error = refused_by_openai(server, gpt(model="gpt-6-turbo"))
    chat_status, chat_error = refused_by_openai(
        server, {"model": "gpt-6-turbo", "messages": USER}, "/v1/chat/completions"
    )

    assert (status, error["code"], error["param"]) == (400, "model_not_found", "model")
    assert error["message"] == "The requested model 'gpt-6-turbo' does not exist."
    assert (chat_status, chat_error["code"]) == (404, "model_not_found")
    assert chat_error["message"] == (
        "The model `gpt-6-turbo` does not exist or you do not have access to it."
    )
    assert post(server, "/v1/responses", gpt(model="gpt-5-mini-2025-08-07"))[0] == 200


# --- what the SDKs and the adapters make of a refusal ----------------------------------------


def test_a_refused_request_leaves_the_scripted_answer_for_the_next_request(server: FakeLLMServer):
    server.push(Text("scripted"))

    refused_by_openai(server, gpt(model="gpt-6"))
    status, answer = post(server, "/v1/responses", gpt())

    assert status == 200
    assert answer["output"][0]["content"][0]["text"] == "scripted"


def test_the_sdks_raise_their_bad_request_errors_with_the_vendors_message(server: FakeLLMServer):
    oai = openai.OpenAI(api_key=LLM_KEY, base_url=server.openai_base_url, max_retries=0)
    claude_client = anthropic.Anthropic(api_key=LLM_KEY, base_url=server.url, max_retries=0)
    schema = llm_output_schema(2)
    open_schema = copy.deepcopy(schema)
    del open_schema["additionalProperties"]

    with pytest.raises(openai.BadRequestError, match="'additionalProperties' is required"):
        oai.responses.create(
            model=GPT,
            input="Ideas",
            text={"format": {"type": "json_schema", "name": "x", "schema": open_schema,
                             "strict": True}},
        )
    with pytest.raises(anthropic.BadRequestError, match="property 'maxItems' is not supported"):
        claude_client.messages.create(
            model=CLAUDE, max_tokens=64, messages=USER,  # type: ignore[arg-type]
            output_config={"format": {"type": "json_schema", "schema": schema}},
        )
    with pytest.raises(anthropic.NotFoundError, match="model: claude-9"):
        claude_client.messages.create(model="claude-9", max_tokens=64, messages=USER)  # type: ignore[arg-type]
    oai.close()
    claude_client.close()


@pytest.mark.parametrize("vendor", ["openai", "anthropic"])
def test_an_unknown_model_fails_the_job_as_provider_error_without_a_retry(
    server: FakeLLMServer, vendor: str
):
    key = SecretStr(LLM_KEY)
    provider = (
        OpenAIProvider(api_key=key, model="gpt-6", base_url=server.openai_base_url)
        if vendor == "openai"
        else AnthropicProvider(api_key=key, model="claude-9", base_url=server.anthropic_base_url)
    )
    request = LLMRequest("Be brief.", (Message("user", "Hi"),), OutputSchema("x", closed({})))

    with pytest.raises(ProviderRejected, match=r"does not exist|model: claude-9") as caught:
        provider.complete(request)
    provider.close()

    assert caught.value.error_kind == "provider_error"
    assert not caught.value.retryable
