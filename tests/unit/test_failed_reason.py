"""Every BullMQ job the bridge fails has a failedReason of one form NestJS can parse:
`<kind>: <message>`, then ` (job <uuid>)` when a job row exists."""

from __future__ import annotations

import asyncio
import re
import uuid
from collections.abc import Mapping
from types import SimpleNamespace
from typing import Any

import pytest
from bullmq import UnrecoverableError
from hypothesis import assume, given
from hypothesis import strategies as st

from vamu_tasks.bridge.contract import (
    FAILED_REASON_KINDS,
    FailedReason,
    SyncJobResult,
    failed_reason,
    parse_failed_reason,
)
from vamu_tasks.bridge.worker import Bridge, BridgeDeps
from vamu_tasks.domain import NewJob, Spend
from vamu_tasks.features import FeatureSpec
from vamu_tasks.settings import Settings
from vamu_tasks.testing.memory import InMemoryJobStore

JOB = uuid.UUID("5b1e0d3a-8c1f-4f3e-9f8a-6d2b7c1e4a90")
SUFFIX = re.compile(r" \(job [0-9a-f-]{36}\)\Z")


def test_a_reason_is_the_kind_the_message_and_the_job_last() -> None:
    assert failed_reason("user_not_found", "No user 'u-x'.", JOB) == (
        f"user_not_found: No user 'u-x'. (job {JOB})"
    )
    assert failed_reason("unknown_job", "'x' is not a job") == "unknown_job: 'x' is not a job"


@pytest.mark.parametrize(
    "message",
    [
        "plain",
        "",
        "with (parentheses) inside",
        "ends with a parenthesis (like this)",
        "line one\nline two\n(job ids in text) and more\n",
        f"quotes another job's suffix (job {uuid.uuid4()})",
        "a: colon, then ): odd brackets ((",
    ],
)
def test_a_message_with_parentheses_and_newlines_comes_back_whole(message: str) -> None:
    reason = failed_reason("provider_error", message, JOB)

    assert parse_failed_reason(reason) == FailedReason("provider_error", message, JOB)


@given(
    kind=st.sampled_from(FAILED_REASON_KINDS),
    message=st.text(),
    job_id=st.none() | st.uuids(),
)
def test_any_reason_parses_back_into_its_parts(
    kind: Any, message: str, job_id: uuid.UUID | None
) -> None:
    # Without a row, a message that itself ends like the suffix cannot be told from one; the
    # bridge never writes such a message for a refusal (they end in its own words).
    assume(job_id is not None or not SUFFIX.search(message))

    assert parse_failed_reason(failed_reason(kind, message, job_id)) == (kind, message, job_id)


@pytest.mark.parametrize(
    "text",
    [
        "job stalled more than allowable limit",  # BullMQ's own
        "exploded: a kind vamu-tasks does not have",
        "invalid_job:no space after the colon",
        "",
    ],
)
def test_text_of_another_form_is_not_parsed(text: str) -> None:
    with pytest.raises(ValueError, match="not a vamu-tasks failedReason"):
        parse_failed_reason(text)


def test_the_kinds_are_the_error_kinds_the_refusals_and_sync_timeout() -> None:
    assert {"invalid_job", "unknown_job", "quota_exceeded", "sync_timeout", "timeout",
            "internal"} <= set(FAILED_REASON_KINDS)
    assert len(FAILED_REASON_KINDS) == len(set(FAILED_REASON_KINDS))


# --- the bridge's processors, on an in-memory store -------------------------------------------


class Quota:
    limit = 0

    def take(self, user_id: str) -> bool:
        return True

    def give_back(self, user_id: str) -> None:
        pass


class Sender:
    """Sends nothing; `then` does to the new row what a worker would (succeed it, fail it)."""

    def __init__(self, store: InMemoryJobStore, then: Any = None) -> None:
        self.store = store
        self.then = then

    def send(self, spec: FeatureSpec, job_id: uuid.UUID, headers: Any = None, **_: Any) -> str:
        if self.then is not None:
            self.then(self.store, job_id)
        return "celery-1"


class DownStore(InMemoryJobStore):
    def create_job(self, job: NewJob) -> Any:
        raise ConnectionError("connection to server at 127.0.0.1:5432 refused\n(is it up?)")


def bullmq_job(data: Mapping[str, Any], name: str = "inspiration.generate") -> Any:
    return SimpleNamespace(id="7", name=name, data=dict(data), queue=SimpleNamespace(name="q"))


def run_sync(store: InMemoryJobStore, job: Any, then: Any = None) -> dict[str, Any]:
    settings = Settings(bridge_sync_timeout_s=0.2)
    bridge = Bridge(settings, BridgeDeps(store, Sender(store, then), Quota(), []))

    async def process() -> dict[str, Any]:
        try:
            return await bridge._process_sync(job, "token")
        finally:
            await bridge.close()

    return asyncio.run(process())


def test_a_sync_job_whose_row_fails_fails_with_the_rows_kind_message_and_job() -> None:
    store = InMemoryJobStore()
    message = "No user 'u-ghost' (NestJS said 404)\nCheck the id."

    def fail(store: InMemoryJobStore, job_id: uuid.UUID) -> None:
        store.fail(job_id, "user_not_found", message, Spend(), [])

    with pytest.raises(UnrecoverableError) as caught:
        run_sync(store, bullmq_job({"userId": "u-ghost"}), then=fail)

    [row] = store.jobs
    assert parse_failed_reason(str(caught.value)) == ("user_not_found", message, row.id)


def test_a_sync_job_that_does_not_end_in_time_fails_as_sync_timeout_naming_its_job() -> None:
    store = InMemoryJobStore()

    with pytest.raises(UnrecoverableError) as caught:
        run_sync(store, bullmq_job({"userId": "u-ada"}))

    [row] = store.jobs
    kind, message, job_id = parse_failed_reason(str(caught.value))
    assert (kind, job_id) == ("sync_timeout", row.id)
    assert message == "did not finish within 0.2s; it goes on, and the app is notified when it ends"


def test_a_sync_job_that_succeeds_returns_its_result() -> None:
    store = InMemoryJobStore()
    ideas = {"ideas": [{"title": "Jazz", "description": "A walk.", "category": "music"}]}

    def succeed(store: InMemoryJobStore, job_id: uuid.UUID) -> None:
        store.succeed(job_id, ideas, Spend(), [])

    value = run_sync(store, bullmq_job({"userId": "u-ada"}), then=succeed)

    [row] = store.jobs
    assert value == {"jobId": str(row.id), "celeryTaskId": "celery-1", "status": "succeeded",
                     "result": ideas}
    SyncJobResult.model_validate(value)


def test_a_refused_job_has_no_row_so_its_reason_names_no_job() -> None:
    store = InMemoryJobStore()

    with pytest.raises(UnrecoverableError) as caught:
        run_sync(store, bullmq_job({"userId": "u-ada"}, name="inspiration.imagine"))

    kind, message, job_id = parse_failed_reason(str(caught.value))
    assert (kind, job_id) == ("unknown_job", None)
    assert message.startswith("'inspiration.imagine' is not a job this bridge runs")
    assert store.jobs == []


def test_a_database_outage_is_retried_by_bullmq_and_still_says_its_kind() -> None:
    with pytest.raises(Exception) as caught:
        run_sync(DownStore(), bullmq_job({"userId": "u-ada"}))

    assert not isinstance(caught.value, UnrecoverableError)  # the job's attempts apply
    kind, message, job_id = parse_failed_reason(str(caught.value))
    assert (kind, job_id) == ("internal", None)
    assert message == (
        "ConnectionError: connection to server at 127.0.0.1:5432 refused\n(is it up?)"
    )
