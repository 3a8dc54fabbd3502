"""`OfflineProvider`: deterministic answers without a network, for the demo and key-less setups."""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Iterator, Mapping
from typing import Any

from vamu_tasks.domain import (
    AssistantTurn,
    LLMRequest,
    LLMResult,
    Message,
    StreamEvent,
    TextDelta,
    ToolCall,
    ToolResult,
    ToolsRequest,
    ToolTurnResult,
    Usage,
)

_WORDS = (
    "riverside",
    "rooftop",
    "candlelit",
    "open-air",
    "neighbourhood",
    "late-night",
    "sunrise",
    "acoustic",
    "pop-up",
    "community",
    "hidden",
    "weekend",
)
_EXACTLY = re.compile(r"\bexactly (\d+)\b")
_KINDS = ("meetup", "session", "walk", "night", "workshop", "tasting", "jam", "market")
_STOP = frozenset(
    "a an and the of for to in on with at by from is are be this that user users their event "
    "events ideas idea json give suggest return exactly".split()
)


class OfflineProvider:
    """Answers from a hash of the prompt: the same request always gets the same answer.

    With an output schema it builds an instance of the schema from words of the prompt, so the
    rest of the pipeline (validation, storage, notification) runs as it would with a real model.
    """

    name = "offline"
    model = "offline"

    def complete(self, request: LLMRequest) -> LLMResult:
        prompt = "\n".join([request.system, *(m.content for m in request.messages)])
        seed = int.from_bytes(hashlib.sha256(prompt.encode()).digest()[:8], "big")
        words = _prompt_words(request.messages[-1].content if request.messages else prompt)
        if request.output_schema is not None:
            # Arrays are as long as the prompt asks ("exactly 3"): schema bounds do not reach
            # every vendor, so the prompt carries the count for them all.
            asked = _EXACTLY.search(prompt)
            count = int(asked.group(1)) if asked else None
            value = _Instance(seed, words, count).build(request.output_schema.schema)
            text = json.dumps(value)
        else:
            last = request.messages[-1].content if request.messages else ""
            text = f"(offline model) You said: {last[:200]}"
        usage = Usage(input_tokens=max(1, len(prompt) // 4), output_tokens=max(1, len(text) // 4))
        return LLMResult(
            text=text, provider=self.name, model=self.model, usage=usage, finish_reason="stop"
        )

    def stream(self, request: LLMRequest) -> Iterator[StreamEvent]:
        return _offline_stream(self.complete(request))

    def complete_with_tools(self, request: ToolsRequest) -> ToolTurnResult:
        """First searches events for a word of the goal, then answers from what it found."""
        results = [item for item in request.items if isinstance(item, ToolResult)]
        goal = next((i.content for i in request.items if isinstance(i, Message)), "")
        names = {tool.name for tool in request.tools}
        if not results and "search_events" in names:
            topic = _prompt_words(goal)[0]
            call = ToolCall("offline-call-1", "search_events", json.dumps({"q": topic, "limit": 3}))
            turn = AssistantTurn("", (call,))
        else:
            turn = AssistantTurn(_summarise(results[-1].content if results else ""))
        text = turn.text + "".join(c.arguments for c in turn.tool_calls)
        usage = Usage(input_tokens=max(1, len(goal) // 4 + 50), output_tokens=len(text) // 4 + 1)
        return ToolTurnResult(turn, self.name, self.model, usage, "stop")


def _summarise(tool_output: str) -> str:
    try:
        found = json.loads(tool_output)
    except ValueError:
        found = None
    events = found.get("events", []) if isinstance(found, dict) else []
    titles = [str(e.get("title")) for e in events if isinstance(e, dict)][:3]
    if not titles:
        return "(offline model) I found no matching events; try a broader goal."
    return "(offline model) Events that fit your goal: " + "; ".join(titles) + "."


def _offline_stream(result: LLMResult, size: int = 12) -> Iterator[StreamEvent]:
    for start in range(0, len(result.text), size):
        yield TextDelta(result.text[start : start + size])
    yield result


def _prompt_words(text: str) -> list[str]:
    """Topic words, preferring string values of JSON data in the prompt (interests, titles)."""
    values: list[str] = []
    for line in text.splitlines():
        try:
            _collect_strings(json.loads(line), values)
        except ValueError:
            continue
    words: list[str] = []
    for raw in " ".join(values or [text]).replace(",", " ").replace(".", " ").split():
        word = raw.strip("\"'()[]{}:-").lower()
        if word.isalpha() and len(word) > 3 and word not in _STOP and word not in words:
            words.append(word)
    return words or ["local"]


def _collect_strings(value: Any, into: list[str]) -> None:
    if isinstance(value, str) and not value[:4].isdigit():
        into.append(value)
    elif isinstance(value, list):
        for item in value:
            _collect_strings(item, into)
    elif isinstance(value, dict):
        for key, item in value.items():
            if key in {"interests", "city", "title", "category"} or isinstance(item, list):
                _collect_strings(item, into)


class _Instance:
    def __init__(self, seed: int, words: list[str], count: int | None = None) -> None:
        self._seed = seed
        self._words = words
        self._count = count
        self._n = 0

    def _pick(self, options: tuple[str, ...] | list[str]) -> str:
        self._n += 1
        return options[(self._seed // (self._n * 7 + 1) + self._n) % len(options)]

    def build(self, schema: Mapping[str, Any], name: str = "") -> Any:
        if "anyOf" in schema:
            return self.build(schema["anyOf"][0], name)
        kind = schema.get("type")
        if kind == "object":
            props: Mapping[str, Any] = schema.get("properties", {})
            return {key: self.build(sub, key) for key, sub in props.items()}
        if kind == "array":
            count = self._count or int(schema.get("minItems", 3))
            return [self.build(schema.get("items", {}), name) for _ in range(count)]
        if "enum" in schema:
            return self._pick(list(schema["enum"]))
        if kind == "integer":
            return self._seed % 10
        if kind == "number":
            return float(self._seed % 100) / 10
        if kind == "boolean":
            return bool(self._seed % 2)
        if kind == "null":
            return None
        return self._string(name)

    def _string(self, name: str) -> str:
        topic = self._pick(self._words)
        if name == "title":
            return f"{self._pick(_WORDS).capitalize()} {topic} {self._pick(_KINDS)}"
        if name == "description":
            return (
                f"A {self._pick(_KINDS)} for people into {topic}, {self._pick(_WORDS)} "
                "and small enough to meet people."
            )
        if name == "category":
            return topic
        if name == "when":
            return self._pick(("Friday evening", "Saturday morning", "Sunday afternoon"))
        if name == "where":
            return f"{self._pick(_WORDS).capitalize()} spot near you"
        return f"{self._pick(_WORDS)} {topic}"
