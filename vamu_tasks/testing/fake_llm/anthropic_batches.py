"""Anthropic's Message Batches API, as anthropic-python's `client.messages.batches` uses it.

Pages: docs.claude.com/en/docs/build-with-claude/batch-processing (statuses, result types, expiry
after 24 hours, results kept 29 days) and /en/api/creating-message-batches, retrieving-,
canceling-message-batches and retrieving-message-batch-results (the objects). The request list
is checked when the batch is created; each request's `params` are checked, as the guide says,
only when it is processed, so a body that breaks a rule (`rules.py`) ends as an `errored` result
with the refusal the Messages API would send.

`request_counts` tally only `processing` until the whole batch ends, as the reference says.
"""

from __future__ import annotations

import re
import threading
from collections.abc import Collection
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from vamu_tasks.testing.fake_llm.batches import (
    Answered,
    Answerer,
    BatchControlError,
    check_custom_ids,
    jsonl,
    now,
)
from vamu_tasks.testing.fake_llm.wire import RequestRefused, new_id

_CUSTOM_ID = re.compile(r"^[a-zA-Z0-9_-]{1,64}$")
_RESULTS = ("succeeded", "errored", "canceled", "expired")


def rfc3339(moment: datetime | None) -> str | None:
    return None if moment is None else moment.isoformat().replace("+00:00", "Z")


@dataclass
class _Request:
    custom_id: str
    params: dict[str, Any]
    result: dict[str, Any] | None = None


@dataclass
class MessageBatch:
    id: str
    requests: list[_Request]
    created_at: datetime = field(default_factory=now)
    processing_status: str = "in_progress"
    ended_at: datetime | None = None
    cancel_initiated_at: datetime | None = None

    def object(self, base_url: str) -> dict[str, Any]:
        ended = self.processing_status == "ended"
        counts = dict.fromkeys(("processing", *_RESULTS), 0)
        for request in self.requests:
            counts[request.result["type"] if ended and request.result else "processing"] += 1
        return {
            "id": self.id,
            "type": "message_batch",
            "processing_status": self.processing_status,
            "request_counts": counts,
            "ended_at": rfc3339(self.ended_at),
            "created_at": rfc3339(self.created_at),
            "expires_at": rfc3339(self.created_at + timedelta(hours=24)),
            "archived_at": None,
            "cancel_initiated_at": rfc3339(self.cancel_initiated_at),
            "results_url": f"{base_url}/v1/messages/batches/{self.id}/results" if ended else None,
        }


class AnthropicBatches:
    """The Message Batches of one fake server; safe across handler threads."""

    def __init__(self) -> None:
        self._lock = threading.RLock()
        self._batches: dict[str, MessageBatch] = {}

    def clear(self) -> None:
        with self._lock:
            self._batches.clear()

    def create(self, body: object, base_url: str) -> dict[str, Any]:
        """POST /v1/messages/batches."""
        batch = MessageBatch(new_id("msgbatch_01", 22), _requests(body))
        with self._lock:
            self._batches[batch.id] = batch
            return batch.object(base_url)

    def retrieve(self, batch_id: str, base_url: str) -> dict[str, Any]:
        with self._lock:
            return self._batch(batch_id).object(base_url)

    def cancel(self, batch_id: str, base_url: str) -> dict[str, Any]:
        """POST /v1/messages/batches/{id}/cancel: `canceling` until the test completes it."""
        with self._lock:
            batch = self._batch(batch_id)
            if batch.processing_status == "ended":  # status and wording not confirmed
                raise RequestRefused(
                    400,
                    "invalid_request_error",
                    f"Message Batch {batch_id} has already ended and cannot be canceled.",
                )
            if batch.processing_status == "in_progress":
                batch.processing_status = "canceling"
                batch.cancel_initiated_at = now()
            return batch.object(base_url)

    def results(self, batch_id: str) -> bytes:
        """GET /v1/messages/batches/{id}/results: one JSON line a request, once ended."""
        with self._lock:
            batch = self._batch(batch_id)
            if batch.processing_status != "ended":  # status and wording not confirmed
                raise RequestRefused(
                    400,
                    "invalid_request_error",
                    f"Message Batch {batch_id} has not ended yet; its results are not available "
                    f"until its processing_status is 'ended'.",
                )
            return jsonl({"custom_id": r.custom_id, "result": r.result} for r in batch.requests)

    def _batch(self, batch_id: str) -> MessageBatch:
        found = self._batches.get(batch_id)
        if found is None:  # the status is the API's; the wording is not confirmed
            raise RequestRefused(404, "not_found_error", f"Message Batch not found: {batch_id}")
        return found

    def complete(
        self,
        answer: Answerer,
        batch_id: str | None = None,
        custom_ids: Collection[str] | None = None,
    ) -> list[str]:
        """Answer the unprocessed requests (all, or `custom_ids`) of the batches in progress; a
        batch ends once all are answered. A `canceling` batch ends with the rest `canceled`."""
        with self._lock:
            batches = self._targets(batch_id, ("in_progress", "canceling"))
            for batch in batches:
                check_custom_ids(custom_ids, (r.custom_id for r in batch.requests))
                if batch.processing_status == "canceling":
                    self._end(batch, "canceled")
                    continue
                for request in batch.requests:
                    if request.result is None and (
                        custom_ids is None or request.custom_id in custom_ids
                    ):
                        request.result = _result(answer("/v1/messages", request.params, batch.id))
                if all(request.result is not None for request in batch.requests):
                    self._end(batch, None)
            return [batch.id for batch in batches]

    def custom_ids(self) -> dict[str, list[str]]:
        """Each batch's requests, by custom_id in request order (for tests: what was sent)."""
        with self._lock:
            return {b.id: [r.custom_id for r in b.requests] for b in self._batches.values()}

    def expire(self, batch_id: str | None = None) -> list[str]:
        """24 hours pass: the batch ends and its unprocessed requests are `expired`."""
        with self._lock:
            batches = self._targets(batch_id, ("in_progress", "canceling"))
            for batch in batches:
                self._end(batch, "expired")
            return [batch.id for batch in batches]

    def _targets(self, batch_id: str | None, states: tuple[str, ...]) -> list[MessageBatch]:
        if batch_id is None:
            return [b for b in self._batches.values() if b.processing_status in states]
        batch = self._batches.get(batch_id)
        if batch is None:
            raise BatchControlError(f"no message batch {batch_id}")
        if batch.processing_status not in states:
            raise BatchControlError(f"message batch {batch_id} is {batch.processing_status}")
        return [batch]

    @staticmethod
    def _end(batch: MessageBatch, unprocessed: str | None) -> None:
        for request in batch.requests:
            if request.result is None and unprocessed is not None:
                request.result = {"type": unprocessed}
        batch.processing_status = "ended"
        batch.ended_at = now()


def _result(answered: Answered) -> dict[str, Any]:
    if answered.ok:
        return {"type": "succeeded", "message": answered.body}
    # The error is the Messages API's own error body: {"type": "error", "error": {...}}.
    return {"type": "errored", "error": answered.body}


def _refuse(message: str) -> RequestRefused:
    return RequestRefused(400, "invalid_request_error", message)


def _requests(body: object) -> list[_Request]:
    """The create request's list, or its refusal.

    The API validates the list as pydantic does: the custom_id length refusal is recorded from
    the live API (anthropic-sdk-python#984); the others are worded the same way, not confirmed.
    """
    items = body.get("requests") if isinstance(body, dict) else None
    if not isinstance(body, dict) or "requests" not in body:
        raise _refuse("requests: Field required")
    if not isinstance(items, list):
        raise _refuse("requests: Input should be a valid list")
    if not items:
        raise _refuse("requests: List should have at least 1 item after validation, not 0")
    requests: list[_Request] = []
    seen: set[str] = set()
    for index, item in enumerate(items):
        where = f"requests.{index}"
        if not isinstance(item, dict):
            raise _refuse(f"{where}: Input should be a valid dictionary")
        for name in ("custom_id", "params"):
            if name not in item:
                raise _refuse(f"{where}.{name}: Field required")
        custom_id = _custom_id(where, item["custom_id"])
        if custom_id in seen:  # not confirmed
            raise _refuse(
                f"{where}.custom_id: Duplicate custom_id '{custom_id}'. Each request in a "
                "Message Batch must have a unique custom_id."
            )
        if not isinstance(item["params"], dict):
            raise _refuse(f"{where}.params: Input should be a valid dictionary")
        seen.add(custom_id)
        requests.append(_Request(custom_id, item["params"]))
    return requests


def _custom_id(where: str, value: object) -> str:
    """docs.claude.com/en/api/creating-message-batches: 1 to 64 of [a-zA-Z0-9_-]."""
    if not isinstance(value, str):
        raise _refuse(f"{where}.custom_id: Input should be a valid string")
    if not value:
        raise _refuse(f"{where}.custom_id: String should have at least 1 character")
    if len(value) > 64:
        raise _refuse(f"{where}.custom_id: String should have at most 64 characters")
    if not _CUSTOM_ID.match(value):
        raise _refuse(f"{where}.custom_id: String should match pattern '{_CUSTOM_ID.pattern}'")
    return value
