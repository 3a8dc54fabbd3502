"""Translating an agent conversation to and from each vendor's tool-calling wire format."""

from __future__ import annotations

import json
from typing import Any

from vamu_tasks.domain import AgentItem, AssistantTurn, Message, ToolCall, ToolResult, ToolSpec


def _arguments(raw: str) -> dict[str, Any]:
    try:
        value = json.loads(raw)
    except ValueError:
        return {}
    return value if isinstance(value, dict) else {}


def openai_tools(tools: tuple[ToolSpec, ...]) -> list[dict[str, Any]]:
    return [
        {
            "type": "function",
            "name": t.name,
            "description": t.description,
            "parameters": dict(t.parameters),
            "strict": False,
        }
        for t in tools
    ]


def openai_input(items: tuple[AgentItem, ...]) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    for item in items:
        if isinstance(item, Message):
            out.append({"role": item.role, "content": item.content})
        elif isinstance(item, AssistantTurn):
            if item.text:
                out.append({"role": "assistant", "content": item.text})
            out.extend(
                {
                    "type": "function_call",
                    "call_id": c.call_id,
                    "name": c.name,
                    "arguments": c.arguments,
                }
                for c in item.tool_calls
            )
        else:
            out.append(
                {"type": "function_call_output", "call_id": item.call_id, "output": item.content}
            )
    return out


def openai_turn(response: Any) -> AssistantTurn:
    calls = tuple(
        ToolCall(item.call_id, item.name, item.arguments)
        for item in response.output or []
        if getattr(item, "type", None) == "function_call"
    )
    return AssistantTurn(response.output_text or "", calls)


def anthropic_tools(tools: tuple[ToolSpec, ...]) -> list[dict[str, Any]]:
    return [
        {"name": t.name, "description": t.description, "input_schema": dict(t.parameters)}
        for t in tools
    ]


def anthropic_messages(items: tuple[AgentItem, ...]) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    for item in items:
        if isinstance(item, Message):
            block: list[dict[str, Any]] = [{"type": "text", "text": item.content}]
            _append(out, item.role, block)
        elif isinstance(item, AssistantTurn):
            blocks: list[dict[str, Any]] = []
            if item.text:
                blocks.append({"type": "text", "text": item.text})
            blocks.extend(
                {
                    "type": "tool_use",
                    "id": c.call_id,
                    "name": c.name,
                    "input": _arguments(c.arguments),
                }
                for c in item.tool_calls
            )
            _append(out, "assistant", blocks)
        else:
            _append(
                out,
                "user",
                [
                    {
                        "type": "tool_result",
                        "tool_use_id": item.call_id,
                        "content": item.content,
                        "is_error": item.is_error,
                    }
                ],
            )
    return out


def _append(out: list[dict[str, Any]], role: str, blocks: list[dict[str, Any]]) -> None:
    # Messages must alternate roles: tool results and a following user text share one turn.
    if out and out[-1]["role"] == role:
        out[-1]["content"].extend(blocks)
    else:
        out.append({"role": role, "content": blocks})


def anthropic_turn(message: Any) -> AssistantTurn:
    text = "".join(b.text for b in message.content if b.type == "text")
    calls = tuple(
        ToolCall(b.id, b.name, json.dumps(b.input)) for b in message.content if b.type == "tool_use"
    )
    return AssistantTurn(text, calls)


__all__ = [
    "ToolResult",
    "anthropic_messages",
    "anthropic_tools",
    "anthropic_turn",
    "openai_input",
    "openai_tools",
    "openai_turn",
]
