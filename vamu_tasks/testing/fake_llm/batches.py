"""What the two vendors' batch APIs share: how a batched request is answered, and the control.

A batch stays in progress until a test moves it on (`FakeLLMServer.complete_batches` and
`expire_batches`, or `POST /_fake/batches/complete` and `/_fake/batches/expire`). Each request
is then answered by the same script and responder as a synchronous request to its endpoint, after
the same rules (`rules.py`), and reports the same usage; pricing it at half is the caller's job.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, TypeAlias


@dataclass(frozen=True)
class Answered:
    """One batched request's answer: its HTTP status and the JSON body the endpoint would send."""

    status: int
    body: dict[str, Any]

    @property
    def ok(self) -> bool:
        return 200 <= self.status < 300


# (endpoint path, request body, batch id) -> the answer, as `FakeLLMServer` gives it.
Answerer: TypeAlias = Callable[[str, dict[str, Any], str], Answered]


class BatchControlError(ValueError):
    """A control request the fake cannot carry out (an unknown batch, one already ended)."""


def jsonl(lines: Iterable[object]) -> bytes:
    return b"".join(json.dumps(line).encode() + b"\n" for line in lines)


def now() -> datetime:
    return datetime.now(UTC)


def check_custom_ids(wanted: Iterable[str] | None, known: Iterable[str]) -> None:
    """Refuse a control request naming requests the batch does not have."""
    missing = sorted(set(wanted or ()) - set(known))
    if missing:
        raise BatchControlError(f"no request with custom_id {', '.join(missing)} in this batch")
