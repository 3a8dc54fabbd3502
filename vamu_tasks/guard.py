"""Checks on what a model wrote before it reaches the user: no instructions, no secrets.

Injected text in a user's profile or a tool result can ask the model to print its instructions;
an answer that quotes them is withheld or sent back, whatever the feature.
"""

from __future__ import annotations

from collections.abc import Sequence

# A system prompt line this long is specific enough that quoting it is no coincidence.
MIN_QUOTED_LINE = 30


def quotes_instructions(text: str, system: str) -> bool:
    lines = (line.strip() for line in system.splitlines())
    return any(line in text for line in lines if len(line) >= MIN_QUOTED_LINE)


def contains_secret(text: str, secrets: Sequence[str]) -> bool:
    return any(secret and secret in text for secret in secrets)
