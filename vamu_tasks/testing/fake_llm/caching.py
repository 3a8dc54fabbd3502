"""The vendors' prompt caches, as far as a caller can see them: what a request reads and writes.

Anthropic (docs.claude.com/en/docs/build-with-claude/prompt-caching): the prefix tools → system
→ messages is cached up to each `cache_control` breakpoint, for 5 minutes (or 1 hour with
`ttl: "1h"`), refreshed on each hit; a prefix shorter than the model's minimum (1,024 tokens;
4,096 for Haiku 4.5 and Opus 4.5 and later) is not cached. At each breakpoint the API also
looks back up to 20 blocks for a prefix cached earlier, so a breakpoint on the newest message
finds the previous turn's. A request reads the longest cached prefix it finds and writes the
rest up to its last breakpoint.

OpenAI (platform.openai.com/docs/guides/prompt-caching): automatic for prompts of 1,024 tokens
or more; the longest prefix seen before, in 128-token steps, is read from the cache; requests
reach the same cache when they share `prompt_cache_key`. No cache writes are reported.

The fake counts about four characters a token. A prompt under the minimum is left as the
behaviour scripted it, so short test prompts report what the test said.
"""

from __future__ import annotations

import hashlib
import json
import threading
import time
from dataclasses import replace
from typing import Any

from vamu_tasks.testing.fake_llm.behaviours import Usage

ANTHROPIC_MINIMUM = 1024
# The models whose minimum cacheable prompt is 4,096 tokens.
ANTHROPIC_LONG_MINIMUM = ("claude-haiku-4-5", "claude-opus-4-5", "claude-opus-4-6")
OPENAI_MINIMUM = 1024
OPENAI_STEP = 128
OPENAI_TTL_S = 600.0


def tokens(value: object) -> int:
    return len(json.dumps(value, sort_keys=True, ensure_ascii=False)) // 4


def _digest(scope: str, parts: list[Any]) -> str:
    data = json.dumps([scope, parts], sort_keys=True, ensure_ascii=False).encode()
    return hashlib.sha256(data).hexdigest()


def _strip(block: object) -> object:
    """A block without its `cache_control`, which is not part of the cached content."""
    if isinstance(block, dict):
        return {k: v for k, v in block.items() if k != "cache_control"}
    return block


def _blocks(content: object) -> list[Any]:
    if isinstance(content, str):
        return [{"type": "text", "text": content}]
    return list(content) if isinstance(content, list) else []


LOOKBACK_BLOCKS = 20


def _anthropic_blocks(body: dict[str, Any]) -> list[tuple[list[Any], float | None]]:
    """Each block's prefix (up to and including it), with its breakpoint's TTL, if it has one."""
    out: list[tuple[list[Any], float | None]] = []
    prefix: list[Any] = []
    units: list[tuple[str, object]] = []
    tools = body.get("tools")
    units += [("tool", t) for t in (tools if isinstance(tools, list) else [])]
    units += [("system", b) for b in _blocks(body.get("system"))]
    for message in body.get("messages") or []:
        if isinstance(message, dict):
            units += [(f"msg:{message.get('role')}", b) for b in _blocks(message.get("content"))]
    for kind, block in units:
        prefix.append([kind, _strip(block)])
        control = block.get("cache_control") if isinstance(block, dict) else None
        ttl = None
        if isinstance(control, dict):
            ttl = 3600.0 if control.get("ttl") == "1h" else 300.0
        out.append((list(prefix), ttl))
    return out


class PromptCache:
    """The prefixes each vendor holds, and when they expire; safe across handler threads."""

    def __init__(self, clock: Any = time.monotonic) -> None:
        self._clock = clock
        self._lock = threading.Lock()
        self._expiry: dict[str, float] = {}

    def clear(self) -> None:
        with self._lock:
            self._expiry.clear()

    def _hit(self, key: str, ttl: float, now: float) -> bool:
        live = self._expiry.get(key, 0.0) > now
        if live:
            self._expiry[key] = now + ttl  # a hit refreshes the entry
        return live

    def _write(self, key: str, ttl: float, now: float) -> None:
        if self._expiry.get(key, 0.0) <= now:
            self._expiry[key] = now + ttl

    def anthropic(self, body: dict[str, Any], usage: Usage) -> Usage:
        model = str(body.get("model", ""))
        minimum = 4096 if model.startswith(ANTHROPIC_LONG_MINIMUM) else ANTHROPIC_MINIMUM
        blocks = _anthropic_blocks(body)
        marks = [(i, ttl) for i, (_prefix, ttl) in enumerate(blocks) if ttl is not None]
        if not marks or tokens(blocks[marks[-1][0]][0]) < minimum:
            return usage
        now = self._clock()
        read = 0
        with self._lock:
            for i, ttl in marks:
                # From each breakpoint, back up to 20 blocks, for the longest prefix cached.
                for j in range(i, max(-1, i - LOOKBACK_BLOCKS), -1):
                    prefix = blocks[j][0]
                    if self._hit(_digest(model, prefix), ttl, now):
                        read = max(read, tokens(prefix))
                        break
            for i, ttl in marks:
                if tokens(blocks[i][0]) >= minimum:
                    self._write(_digest(model, blocks[i][0]), ttl, now)
        last, last_ttl = marks[-1]
        written = max(0, tokens(blocks[last][0]) - read)
        written_1h = written if last_ttl > 300 else 0
        total = max(usage.input, tokens(body.get("messages")) + tokens(body.get("system")))
        total = max(total, read + written)
        return replace(
            usage, input=total, cached=read, cache_write=written, cache_write_1h=written_1h
        )

    def openai(self, body: dict[str, Any], usage: Usage) -> Usage:
        head = [body.get("instructions"), body.get("tools")]
        items = body.get("input")
        items = items if isinstance(items, list) else [items]
        prefixes = [head + items[:i] for i in range(len(items) + 1)]
        sizes = [tokens(p) for p in prefixes]
        if not sizes or sizes[-1] < OPENAI_MINIMUM:
            return usage
        scope = f"{body.get('model')}:{body.get('prompt_cache_key')}"
        now = self._clock()
        read = 0
        with self._lock:
            for prefix, n in zip(prefixes, sizes, strict=True):
                if n >= OPENAI_MINIMUM and self._hit(_digest(scope, prefix), OPENAI_TTL_S, now):
                    read = max(read, n - n % OPENAI_STEP)
            for prefix, n in zip(prefixes, sizes, strict=True):
                if n >= OPENAI_MINIMUM:
                    self._write(_digest(scope, prefix), OPENAI_TTL_S, now)
        total = max(usage.input, sizes[-1])
        return replace(usage, input=total, cached=read, cache_write=0, cache_write_1h=0)
