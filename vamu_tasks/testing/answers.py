"""Answers the fake LLM gives to "Inspire me" requests, shaped by what each request asked for.

Shared by the tests, the fault suite and the benchmark.
"""

from __future__ import annotations

from typing import Any

from vamu_tasks.inspiration.prompts import requested_count
from vamu_tasks.testing.fake_llm import Behaviour, RecordedRequest, Text, default_responder
from vamu_tasks.testing.fake_llm.behaviours import content_text


def requested_schema(request: RecordedRequest) -> dict[str, Any] | None:
    body = request.body
    if request.api == "openai.responses":
        fmt = body.get("text", {}).get("format", {})
    else:
        fmt = body.get("output_config", {}).get("format", {})
    schema = fmt.get("schema") if isinstance(fmt, dict) else None
    return schema if isinstance(schema, dict) else None


def ideas(count: int, prefix: str = "Idea") -> dict[str, Any]:
    return {
        "ideas": [
            {
                "title": f"{prefix} {i + 1}",
                "description": f"Description of {prefix.lower()} {i + 1}.",
                "category": "music",
                "when": "Friday evening" if i % 2 == 0 else None,
                "where": None,
            }
            for i in range(count)
        ]
    }


def ideas_responder(request: RecordedRequest) -> Behaviour:
    """Valid ideas for a structured-output request, the fake's default answer otherwise."""
    schema = requested_schema(request)
    if schema is None:
        return default_responder(request)
    count = ideas_asked(request)
    return Text.json(ideas(count), input_tokens=400, output_tokens=120, cached_tokens=100)


def ideas_asked(request: RecordedRequest) -> int:
    """The count the request's prompt asks for (its first user message; a repair comes later)."""
    items = request.body.get("messages", request.body.get("input"))
    for item in items if isinstance(items, list) else []:
        count = (
            requested_count(content_text(item.get("content"))) if isinstance(item, dict) else None
        )
        if count is not None:
            return count
    raise ValueError("not an 'Inspire me' request: no 'Give exactly N event ideas.' line")
