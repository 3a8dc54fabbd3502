"""Accepting a job: validate, create the row once, then send its task."""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field

import pytest

from vamu_tasks.domain import Spend
from vamu_tasks.errors import InvalidJob
from vamu_tasks.features import FEATURES, FeatureSpec
from vamu_tasks.submit import submit_job
from vamu_tasks.testing.memory import InMemoryJobStore


@dataclass
class RecordingSender:
    sent: list[tuple[str, uuid.UUID, Mapping[str, str] | None]] = field(default_factory=list)

    def send(
        self, spec: FeatureSpec, job_id: uuid.UUID, headers: Mapping[str, str] | None = None
    ) -> str:
        self.sent.append((spec.task_name, job_id, headers))
        return f"task-{len(self.sent)}"


@pytest.fixture
def store() -> InMemoryJobStore:
    return InMemoryJobStore()


@pytest.fixture
def sender() -> RecordingSender:
    return RecordingSender()


@pytest.mark.parametrize(
    ("data", "fields"),
    [
        ({}, ["userId: Field required"]),
        ({"userId": "u-ada", "count": 11}, ["count: "]),
        ({"userId": "u-ada", "count": 0, "hint": "x" * 501}, ["count: ", "hint: "]),
        ({"userId": "u-ada", "colour": "red"}, ["colour: Extra inputs are not permitted"]),
        # PostgreSQL cannot store U+0000 in text or jsonb.
        ({"userId": "u-\u0000ada", "hint": "a\u0000b"}, ["userId: ", "hint: ", "NUL"]),
    ],
)
def test_invalid_data_is_refused_with_its_field_errors_and_nothing_is_created_or_sent(
    store: InMemoryJobStore, sender: RecordingSender, data: dict[str, object], fields: list[str]
) -> None:
    with pytest.raises(InvalidJob) as caught:
        submit_job(store, sender, "inspiration", data, source="bullmq", source_ref="b-1")

    assert caught.value.error_kind == "invalid_job"
    for expected in fields:
        assert expected in caught.value.message
    assert store.jobs == []
    assert sender.sent == []


def test_a_valid_job_is_stored_queued_with_its_camel_case_request_and_sent_once(
    store: InMemoryJobStore, sender: RecordingSender
) -> None:
    headers = {"traceparent": "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"}

    job, task_id = submit_job(
        store,
        sender,
        "inspiration",
        {"userId": "u-ada", "hint": "jazz", "requestId": "r-1"},
        source="bullmq",
        source_ref="b-1",
        headers=headers,
    )

    assert task_id == "task-1"
    assert sender.sent == [("vamu.inspiration.generate", job.id, headers)]
    [row] = store.jobs
    assert row == job
    assert (row.status, row.feature, row.user_id, row.source, row.source_ref) == (
        "queued",
        "inspiration",
        "u-ada",
        "bullmq",
        "b-1",
    )
    assert row.request == {"userId": "u-ada", "count": 3, "hint": "jazz", "requestId": "r-1"}


def test_snake_case_input_is_stored_in_camel_case(
    store: InMemoryJobStore, sender: RecordingSender
) -> None:
    job, _ = submit_job(
        store, sender, "inspiration", {"user_id": "u-dev", "count": 2}, source="cli"
    )

    assert job.request == {"userId": "u-dev", "count": 2}


def test_the_same_source_ref_twice_makes_one_row(
    store: InMemoryJobStore, sender: RecordingSender
) -> None:
    first, _ = submit_job(
        store, sender, "inspiration", {"userId": "u-ada"}, source="bullmq", source_ref="b-7"
    )
    second, _ = submit_job(
        store, sender, "inspiration", {"userId": "u-ada"}, source="bullmq", source_ref="b-7"
    )

    assert second.id == first.id
    assert len(store.jobs) == 1


def test_jobs_without_a_source_ref_are_never_merged(
    store: InMemoryJobStore, sender: RecordingSender
) -> None:
    submit_job(store, sender, "inspiration", {"userId": "u-ada"}, source="cli")
    submit_job(store, sender, "inspiration", {"userId": "u-ada"}, source="cli")

    assert len(store.jobs) == 2
    assert len(sender.sent) == 2


def test_a_second_submit_of_a_job_still_queued_sends_it_again(
    store: InMemoryJobStore, sender: RecordingSender
) -> None:
    first, _ = submit_job(
        store, sender, "inspiration", {"userId": "u-ada"}, source="bullmq", source_ref="b-2"
    )

    _, task_id = submit_job(
        store, sender, "inspiration", {"userId": "u-ada"}, source="bullmq", source_ref="b-2"
    )

    assert task_id == "task-2"
    assert [job_id for _, job_id, _ in sender.sent] == [first.id, first.id]


@pytest.mark.parametrize("status", ["running", "succeeded", "failed"])
def test_a_second_submit_of_a_job_already_started_or_ended_sends_nothing(
    store: InMemoryJobStore, sender: RecordingSender, status: str
) -> None:
    first, _ = submit_job(
        store, sender, "inspiration", {"userId": "u-ada"}, source="bullmq", source_ref="b-3"
    )
    store.start_attempt(first.id)
    if status == "succeeded":
        store.succeed(first.id, {"ideas": []}, Spend(), [])
    elif status == "failed":
        store.fail(first.id, "timeout", "too slow", Spend(), [])

    job, task_id = submit_job(
        store, sender, "inspiration", {"userId": "u-ada"}, source="bullmq", source_ref="b-3"
    )

    assert (job.id, job.status, task_id) == (first.id, status, None)
    assert len(sender.sent) == 1


def test_inspiration_jobs_use_the_contracts_bullmq_job_name() -> None:
    spec = FEATURES["inspiration"]

    assert (spec.job_name, spec.task_name, spec.queue) == (
        "inspiration.generate",
        "vamu.inspiration.generate",
        "inspiration",
    )
