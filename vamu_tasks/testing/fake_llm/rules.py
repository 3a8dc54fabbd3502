"""The request rules the real APIs enforce, each written once with the page it comes from.

A body that breaks a rule gets the vendor's own refusal: `RequestRefused` carries the status,
error type, message and (OpenAI) `param`, and the wire renders the vendor's error JSON. Where a
message's exact wording could not be confirmed from the vendor's pages or reported errors, its
rule says so.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any

from vamu_tasks.llm.pricing import ANTHROPIC_MODELS, OPENAI_MODELS, is_served
from vamu_tasks.testing.fake_llm.wire import RequestRefused

# --- OpenAI -------------------------------------------------------------------------------


def check_openai_responses(body: Mapping[str, Any]) -> None:
    _openai_model(body, status=400)
    text = body.get("text")
    fmt = text.get("format") if isinstance(text, dict) else None
    if isinstance(fmt, dict) and fmt.get("type") == "json_schema" and fmt.get("strict") is True:
        problem = _openai_strict_problem(fmt.get("schema"))
        if problem:
            raise RequestRefused(
                400,
                "invalid_json_schema",
                f"Invalid schema for response_format '{fmt.get('name')}': {problem}",
                "text.format.schema",
            )
    tools = body.get("tools")
    for index, tool in enumerate(tools if isinstance(tools, list) else []):
        if isinstance(tool, dict) and tool.get("type") == "function" and tool.get("strict"):
            problem = _openai_strict_problem(tool.get("parameters"))
            if problem:
                raise RequestRefused(
                    400,
                    "invalid_function_parameters",
                    f"Invalid schema for function '{tool.get('name')}': {problem}",
                    f"tools[{index}].parameters",
                )
    _openai_call_outputs(body)


def check_openai_chat(body: Mapping[str, Any]) -> None:
    # Chat Completions answers an unknown model with 404 (the Responses API with 400).
    _openai_model(body, status=404)


def _openai_model(body: Mapping[str, Any], *, status: int) -> None:
    """platform.openai.com/docs/models: a model the API does not serve is refused by name.

    Responses: 400 "The requested model 'X' does not exist.", Chat Completions: 404 "The model
    `X` does not exist or you do not have access to it."; both `code: model_not_found`.
    """
    model = body.get("model")
    if not isinstance(model, str) or not model:
        raise RequestRefused(
            400, "invalid_request_error", "Missing required parameter: 'model'.", "model"
        )
    if is_served(OPENAI_MODELS, model):
        return
    if status == 404:
        message = f"The model `{model}` does not exist or you do not have access to it."
    else:
        message = f"The requested model '{model}' does not exist."
    raise RequestRefused(status, "model_not_found", message, "model")


def _openai_strict_problem(schema: object) -> str | None:
    """platform.openai.com/docs/guides/structured-outputs#supported-schemas: with
    `strict: true`, every object sets `additionalProperties: false` and lists every property in
    `required` (optional fields are written as a union with null)."""
    for context, node in _subschemas(schema, ()):
        if node.get("type") != "object" and "properties" not in node:
            continue
        where = f"In context={context!r}"
        if node.get("additionalProperties") is not False:
            return f"{where}, 'additionalProperties' is required to be supplied and to be false."
        properties = node.get("properties")
        keys = list(properties) if isinstance(properties, dict) else []
        required = node.get("required")
        missing = [k for k in keys if not isinstance(required, list) or k not in required]
        if missing:
            return (
                f"{where}, 'required' is required to be supplied and to be an array including "
                f"every key in properties. Missing '{missing[0]}'."
            )
    return None


def _openai_call_outputs(body: Mapping[str, Any]) -> None:
    """platform.openai.com/docs/guides/function-calling: a `function_call_output` answers a
    `function_call` given earlier in `input` (or stored with `previous_response_id`)."""
    if body.get("previous_response_id"):
        return
    items = body.get("input")
    seen: set[str] = set()
    for item in items if isinstance(items, list) else []:
        if not isinstance(item, dict):
            continue
        if item.get("type") == "function_call":
            seen.add(str(item.get("call_id")))
        elif item.get("type") == "function_call_output" and item.get("call_id") not in seen:
            raise RequestRefused(
                400,
                "invalid_request_error",
                f"No tool call found for function call output with call_id {item.get('call_id')}.",
                "input",
            )


# --- Anthropic ----------------------------------------------------------------------------

# docs.claude.com/en/docs/build-with-claude/structured-outputs#json-schema-limitations, and the
# anthropic SDK's own `transform_schema`, which moves these into the description instead.
_UNSUPPORTED_KEYWORDS = (
    "minimum",
    "maximum",
    "exclusiveMinimum",
    "exclusiveMaximum",
    "multipleOf",
    "minLength",
    "maxLength",
    "maxItems",
    "uniqueItems",
    "minProperties",
    "maxProperties",
)
# The same page's list of supported string formats (the SDK's `SupportedStringFormats`).
_SUPPORTED_FORMATS = frozenset(
    {"date-time", "time", "date", "duration", "email", "hostname", "uri", "ipv4", "ipv6", "uuid"}
)


def check_anthropic_messages(body: Mapping[str, Any]) -> None:
    # docs.claude.com/en/api/messages: `model`, `max_tokens` and `messages` are required.
    for field in ("model", "max_tokens", "messages"):
        if field not in body:
            raise RequestRefused(400, "invalid_request_error", f"{field}: Field required")
    model = body["model"]
    # docs.claude.com/en/api/errors: an unknown model is a 404 not_found_error naming it.
    if not isinstance(model, str) or not is_served(ANTHROPIC_MODELS, model):
        raise RequestRefused(404, "not_found_error", f"model: {model}")
    _anthropic_tool_pairs(body["messages"])
    _anthropic_breakpoints(body)
    for param in ("output_config", "output_format"):
        config = body.get(param)
        fmt = (
            config.get("format")
            if param == "output_config" and isinstance(config, dict)
            else config
        )
        if isinstance(fmt, dict) and fmt.get("type") == "json_schema":
            where = f"{param}.format.schema" if param == "output_config" else f"{param}.schema"
            problem = _anthropic_schema_problem(fmt.get("schema"))
            if problem:
                raise RequestRefused(400, "invalid_request_error", f"{where}: {problem}")


def _anthropic_breakpoints(body: Mapping[str, Any]) -> None:
    """docs.claude.com/en/docs/build-with-claude/prompt-caching: at most 4 blocks (tools, system
    or message content) may carry `cache_control`."""
    found = 0
    tools = body.get("tools")
    blocks: list[Any] = list(tools) if isinstance(tools, list) else []
    system = body.get("system")
    blocks += system if isinstance(system, list) else []
    for message in body.get("messages") or []:
        content = message.get("content") if isinstance(message, dict) else None
        blocks += content if isinstance(content, list) else []
    found = sum(1 for b in blocks if isinstance(b, dict) and "cache_control" in b)
    if found > 4:
        raise RequestRefused(
            400,
            "invalid_request_error",
            f"A maximum of 4 blocks with cache_control may be provided. Found {found}.",
        )


def _anthropic_schema_problem(schema: object) -> str | None:
    """Structured outputs compile the schema into a grammar, which refuses numeric,
    string-length and array bounds, `minItems` above 1, open objects and unknown formats.

    The wording of the `additionalProperties` and bound messages is as the API sends it; the
    `minItems` and `format` messages are written in the same form but not confirmed.
    """
    for _context, node in _subschemas(schema, ()):
        kind = node.get("type", "unknown")
        for keyword in _UNSUPPORTED_KEYWORDS:
            if keyword in node:
                return f"For '{kind}' type, property '{keyword}' is not supported"
        if node.get("minItems", 0) not in (0, 1):
            return "For 'array' type, 'minItems' values other than 0 or 1 are not supported"
        if kind == "object" and node.get("additionalProperties") is not False:
            return "For 'object' type, 'additionalProperties' must be explicitly set to false"
        fmt = node.get("format")
        if kind == "string" and fmt is not None and fmt not in _SUPPORTED_FORMATS:
            return f"For 'string' type, format '{fmt}' is not supported"
    return None


def _anthropic_tool_pairs(messages: object) -> None:
    """docs.claude.com/en/docs/agents-and-tools/tool-use/implement-tool-use: each `tool_use`
    block is answered by a `tool_result` in the very next (user) message, and a `tool_result`
    answers a `tool_use` of the message just before it."""
    if not isinstance(messages, list):
        return
    previous: set[str] = set()
    for index, message in enumerate(messages):
        blocks = message.get("content") if isinstance(message, dict) else None
        blocks = blocks if isinstance(blocks, list) else []
        answered = set()
        for position, block in enumerate(blocks):
            if isinstance(block, dict) and block.get("type") == "tool_result":
                use_id = block.get("tool_use_id")
                if use_id not in previous:
                    raise RequestRefused(
                        400,
                        "invalid_request_error",
                        f"messages.{index}.content.{position}: unexpected `tool_use_id` found in "
                        f"`tool_result` blocks: {use_id}. Each `tool_result` block must have a "
                        "corresponding `tool_use` block in the previous message.",
                    )
                answered.add(str(use_id))
        if previous - answered:
            raise RequestRefused(
                400,
                "invalid_request_error",
                f"messages.{index - 1}: `tool_use` ids were found without `tool_result` blocks "
                f"immediately after: {', '.join(sorted(previous - answered))}. Each `tool_use` "
                "block must have a corresponding `tool_result` block in the next message.",
            )
        previous = {
            str(b.get("id")) for b in blocks if isinstance(b, dict) and b.get("type") == "tool_use"
        }
    if previous:
        raise RequestRefused(
            400,
            "invalid_request_error",
            f"messages.{len(messages) - 1}: `tool_use` ids were found without `tool_result` "
            f"blocks immediately after: {', '.join(sorted(previous))}. Each `tool_use` block "
            "must have a corresponding `tool_result` block in the next message.",
        )


# --- shared -------------------------------------------------------------------------------


def _subschemas(
    schema: object, context: tuple[str, ...]
) -> Iterator[tuple[tuple[str, ...], dict[str, Any]]]:
    """Every (sub)schema with the path to it, the root first."""
    if not isinstance(schema, dict):
        return
    yield context, schema
    properties = schema.get("properties")
    if isinstance(properties, dict):
        for key, sub in properties.items():
            yield from _subschemas(sub, (*context, "properties", key))
    if "items" in schema:
        yield from _subschemas(schema["items"], (*context, "items"))
    for keyword in ("anyOf", "allOf", "oneOf"):
        variants = schema.get(keyword)
        for n, sub in enumerate(variants if isinstance(variants, list) else []):
            yield from _subschemas(sub, (*context, keyword, str(n)))
    for keyword in ("$defs", "definitions"):
        defs = schema.get(keyword)
        for name, sub in (defs if isinstance(defs, dict) else {}).items():
            yield from _subschemas(sub, (*context, keyword, name))
