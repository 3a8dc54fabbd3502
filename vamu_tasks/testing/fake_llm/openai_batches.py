"""OpenAI's Files and Batch APIs, as a batch of Responses or Chat Completions requests uses them.

Pages: platform.openai.com/docs/guides/batch (input and output files, statuses, expiry) and
/docs/api-reference/batch and /files (the objects); what the APIs refuse is in
`openai_batch_rules`. An error recorded from the live API says so; "not confirmed" marks wording
written in the API's style without such a record.

The input file is validated when the batch is created: the create answer says `validating`, as
the API's always does, and the next read shows `in_progress`, or `failed` with `errors`. Each
request is answered when the test completes the batch; a body that breaks one of the synchronous
endpoint's rules (`rules.py`) gets that endpoint's refusal as its own per-request error, in the
error file with the other non-2xx answers (as the live API files them).
"""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Collection
from dataclasses import dataclass, field
from typing import Any

from vamu_tasks.testing.fake_llm import openai_batch_rules as batch_rules
from vamu_tasks.testing.fake_llm.batches import (
    Answerer,
    BatchControlError,
    check_custom_ids,
    jsonl,
)
from vamu_tasks.testing.fake_llm.wire import RequestRefused, new_id

DAY = 86_400
# The guide's error-file lines for requests that never ran. `batch_expired` is the guide's;
# `batch_cancelled` is a code the guide lists, with wording not confirmed.
EXPIRED = (
    "batch_expired",
    "This request could not be executed before the completion window expired.",
)
CANCELLED = ("batch_cancelled", "This request was not executed because the batch was cancelled.")
_TIMES = ("in_progress", "finalizing", "completed", "failed", "expired", "cancelling", "cancelled")


@dataclass(frozen=True)
class StoredFile:
    id: str
    filename: str
    purpose: str
    content: bytes
    created_at: int
    expires_at: int | None

    def object(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "object": "file",
            "bytes": len(self.content),
            "created_at": self.created_at,
            "expires_at": self.expires_at,
            "filename": self.filename,
            "purpose": self.purpose,
            "status": "processed",
            "status_details": None,
        }


@dataclass
class _Line:
    """One request of the input file, and its line in the output or error file once known."""

    custom_id: str
    body: dict[str, Any]
    status: int | None = None
    output: dict[str, Any] | None = None

    @property
    def ok(self) -> bool:
        return self.status is not None and 200 <= self.status < 300


@dataclass
class OpenAIBatch:
    id: str
    endpoint: str
    input_file_id: str
    metadata: dict[str, str] | None
    created_at: int
    status: str = "validating"
    lines: list[_Line] = field(default_factory=list)
    errors: list[dict[str, Any]] = field(default_factory=list)
    model: str | None = None
    times: dict[str, int] = field(default_factory=dict)
    output_file_id: str | None = None
    error_file_id: str | None = None

    def object(self, *, as_created: bool = False) -> dict[str, Any]:
        """The Batch object; `as_created` is the create answer, before validation shows."""
        done = [line for line in self.lines if line.output is not None]
        completed = sum(line.ok for line in done)
        counts = {"total": len(self.lines), "completed": completed, "failed": len(done) - completed}
        if as_created:
            counts = {"total": 0, "completed": 0, "failed": 0}
        times = {} if as_created else self.times
        errors = self.errors and not as_created
        return {
            "id": self.id,
            "object": "batch",
            "endpoint": self.endpoint,
            "errors": {"object": "list", "data": self.errors} if errors else None,
            "input_file_id": self.input_file_id,
            "completion_window": "24h",
            "status": "validating" if as_created else self.status,
            "output_file_id": self.output_file_id,
            "error_file_id": self.error_file_id,
            "created_at": self.created_at,
            "expires_at": self.created_at + DAY,
            **{f"{name}_at": times.get(name) for name in _TIMES},
            "request_counts": counts,
            "metadata": self.metadata,
            "model": None if as_created else self.model,
            "usage": _usage(self.endpoint, self.lines),
        }


class OpenAIBatches:
    """The files and batches of one fake server; safe across handler threads."""

    def __init__(self) -> None:
        self._lock = threading.RLock()
        self._files: dict[str, StoredFile] = {}
        self._batches: dict[str, OpenAIBatch] = {}

    def clear(self) -> None:
        with self._lock:
            self._files.clear()
            self._batches.clear()

    # --- Files ----------------------------------------------------------------------------

    def upload(self, fields: dict[str, str], upload: tuple[str, bytes] | None) -> dict[str, Any]:
        """POST /v1/files (multipart): `purpose`, `file`, optional `expires_after[seconds]`."""
        purpose, filename, content = batch_rules.check_upload(fields.get("purpose"), upload)
        created = int(time.time())
        # /docs/api-reference/files/create: batch files expire after 30 days by default.
        default = 30 * DAY if purpose == "batch" else 0
        seconds = int(fields.get("expires_after[seconds]") or default)
        expires = created + seconds if seconds else None
        stored = StoredFile(new_id("file-", 22), filename, purpose, content, created, expires)
        with self._lock:
            self._files[stored.id] = stored
        return stored.object()

    def file(self, file_id: str) -> dict[str, Any]:
        return self._file(file_id).object()

    def content(self, file_id: str) -> bytes:
        return self._file(file_id).content

    def _file(self, file_id: str) -> StoredFile:
        with self._lock:
            found = self._files.get(file_id)
        if found is None:
            # As the live API answers (openai-dotnet's tests record it): 404, param `id`.
            raise RequestRefused(
                404, "invalid_request_error", f"No such File object: {file_id}", "id"
            )
        return found

    # --- Batches --------------------------------------------------------------------------

    def create(self, body: object) -> dict[str, Any]:
        """POST /v1/batches."""
        endpoint, file_id, metadata = batch_rules.check_create(body)
        with self._lock:
            stored = self._files.get(file_id)
            if stored is not None and stored.purpose != "batch":  # not confirmed
                raise RequestRefused(
                    400,
                    "invalid_request_error",
                    f"Invalid 'input_file_id': '{file_id}'. The file's purpose must be 'batch'.",
                    "input_file_id",
                )
            batch = OpenAIBatch(
                "batch_" + uuid.uuid4().hex, endpoint, file_id, metadata, int(time.time())
            )
            _validate(batch, stored)
            self._batches[batch.id] = batch
            return batch.object(as_created=True)

    def retrieve(self, batch_id: str) -> dict[str, Any]:
        with self._lock:
            return self._batch(batch_id).object()

    def cancel(self, batch_id: str) -> dict[str, Any]:
        """POST /v1/batches/{id}/cancel: `cancelling` until the test completes the batch."""
        with self._lock:
            batch = self._batch(batch_id)
            if batch.status in ("completed", "failed", "expired"):
                # Recorded from the live API: 409, and a cancelled batch may be cancelled again.
                raise RequestRefused(
                    409,
                    "invalid_request_error",
                    f"Cannot cancel a batch with status '{batch.status}'.",
                )
            if batch.status != "cancelled":
                batch.status = "cancelling"
                batch.times.setdefault("cancelling", int(time.time()))
            return batch.object()

    def _batch(self, batch_id: str) -> OpenAIBatch:
        found = self._batches.get(batch_id)
        if found is None:  # 404 recorded from the live API; the wording is not confirmed
            raise RequestRefused(
                404, "invalid_request_error", f"No batch found with id '{batch_id}'."
            )
        return found

    # --- control --------------------------------------------------------------------------

    def complete(
        self,
        answer: Answerer,
        batch_id: str | None = None,
        custom_ids: Collection[str] | None = None,
        *,
        finalizing: bool = False,
    ) -> list[str]:
        """Answer the pending requests (all, or `custom_ids`) of the batches in progress.

        A batch whose every request is answered goes to `finalizing` and, unless `finalizing`
        holds it there, to `completed` with its output and error files. A `cancelling` batch
        ends `cancelled`; a `finalizing` one ends `completed`.
        """
        with self._lock:
            batches = self._targets(batch_id, ("in_progress", "finalizing", "cancelling"))
            for batch in batches:
                check_custom_ids(custom_ids, (line.custom_id for line in batch.lines))
                if batch.status == "cancelling":
                    self._end(batch, "cancelled", CANCELLED)
                elif batch.status == "finalizing":
                    self._end(batch, "completed", None)
                else:
                    self._progress(batch, answer, custom_ids, finalizing=finalizing)
            return [batch.id for batch in batches]

    def custom_ids(self) -> dict[str, list[str]]:
        """Each batch's requests, by custom_id in file order (for tests: what was sent)."""
        with self._lock:
            return {b.id: [line.custom_id for line in b.lines] for b in self._batches.values()}

    def expire(self, batch_id: str | None = None) -> list[str]:
        """The 24-hour window closes: answered requests keep their lines, the rest expire."""
        with self._lock:
            batches = self._targets(batch_id, ("in_progress", "finalizing"))
            for batch in batches:
                self._end(batch, "expired", EXPIRED)
            return [batch.id for batch in batches]

    def _targets(self, batch_id: str | None, states: tuple[str, ...]) -> list[OpenAIBatch]:
        if batch_id is None:
            return [b for b in self._batches.values() if b.status in states]
        batch = self._batches.get(batch_id)
        if batch is None:
            raise BatchControlError(f"no batch {batch_id}")
        if batch.status not in states:
            raise BatchControlError(f"batch {batch_id} is {batch.status}")
        return [batch]

    def _progress(
        self,
        batch: OpenAIBatch,
        answer: Answerer,
        custom_ids: Collection[str] | None,
        *,
        finalizing: bool,
    ) -> None:
        for line in batch.lines:
            if line.output is None and (custom_ids is None or line.custom_id in custom_ids):
                answered = answer(batch.endpoint, line.body, batch.id)
                line.status = answered.status
                response = {
                    "status_code": answered.status,
                    "request_id": uuid.uuid4().hex,
                    "body": answered.body,
                }
                line.output = _output_line(line.custom_id, response=response)
        if all(line.output is not None for line in batch.lines):
            batch.status = "finalizing"
            batch.times["finalizing"] = int(time.time())
            if not finalizing:
                self._end(batch, "completed", None)

    def _end(self, batch: OpenAIBatch, status: str, unrun: tuple[str, str] | None) -> None:
        """The batch ends: requests that never ran go to the error file, the files are written."""
        for line in batch.lines:
            if line.output is None and unrun is not None:
                line.output = _output_line(
                    line.custom_id, error={"code": unrun[0], "message": unrun[1]}
                )
        batch.status = status
        batch.times[status] = int(time.time())
        good = [line.output for line in batch.lines if line.ok]
        bad = [line.output for line in batch.lines if line.output is not None and not line.ok]
        if good:
            batch.output_file_id = self._write(f"batch_{batch.id}_output.jsonl", good)
        if bad:
            batch.error_file_id = self._write(f"batch_{batch.id}_error.jsonl", bad)

    def _write(self, filename: str, lines: list[Any]) -> str:
        created = int(time.time())
        stored = StoredFile(
            new_id("file-", 22), filename, "batch_output", jsonl(lines), created, created + 30 * DAY
        )
        self._files[stored.id] = stored
        return stored.id


def _output_line(
    custom_id: str,
    *,
    response: dict[str, Any] | None = None,
    error: dict[str, str] | None = None,
) -> dict[str, Any]:
    """A line of the output or error file (the guide's "Batch request output" object)."""
    return {
        "id": new_id("batch_req_", 24),
        "custom_id": custom_id,
        "response": response,
        "error": error,
    }


def _validate(batch: OpenAIBatch, stored: StoredFile | None) -> None:
    """The validating step (`openai_batch_rules`): `in_progress`, or `failed` with `errors`."""
    if stored is None:
        batch.errors = [batch_rules.missing_file(batch.input_file_id)]
    else:
        requests, batch.errors = batch_rules.check_input(batch.endpoint, stored.content)
        batch.lines = [_Line(custom_id, body) for custom_id, body in requests]
    stamp = int(time.time())
    if batch.errors or not batch.lines:
        batch.lines = []
        batch.status = "failed"
        batch.times["failed"] = stamp
    else:
        batch.status = "in_progress"
        batch.times["in_progress"] = stamp
        batch.model = str(batch.lines[0].body["model"])


def _usage(endpoint: str, lines: list[_Line]) -> dict[str, Any]:
    """The batch's `usage`: the sum over its answered requests (input tokens count the cached)."""
    total = [0, 0, 0, 0]
    for line in lines:
        if line.ok and line.output is not None:
            usage = line.output["response"]["body"].get("usage") or {}
            if endpoint == "/v1/chat/completions":
                names = ("prompt_tokens", "completion_tokens")
                details = ("prompt_tokens_details", "completion_tokens_details")
            else:
                names = ("input_tokens", "output_tokens")
                details = ("input_tokens_details", "output_tokens_details")
            total[0] += usage.get(names[0], 0)
            total[1] += usage.get(names[1], 0)
            total[2] += (usage.get(details[0]) or {}).get("cached_tokens", 0)
            total[3] += (usage.get(details[1]) or {}).get("reasoning_tokens", 0)
    return {
        "input_tokens": total[0],
        "input_tokens_details": {"cached_tokens": total[2]},
        "output_tokens": total[1],
        "output_tokens_details": {"reasoning_tokens": total[3]},
        "total_tokens": total[0] + total[1],
    }
