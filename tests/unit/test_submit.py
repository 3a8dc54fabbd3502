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


def test_snake_case_keys_are_unknown_keys_as_the_json_schema_says(
    store: InMemoryJobStore, sender: RecordingSender
) -> None:
    with pytest.raises(InvalidJob) as caught:
        submit_job(store, sender, "inspiration", {"user_id": "u-dev", "count": 2}, source="cli")

    assert caught.value.message == (
        "userId: Field required; user_id: Extra inputs are not permitted"
    )
    assert store.jobs == []


@pytest.mark.parametrize(
    ("data", "problem"),
    [
        ({"userId": "u-ada", "count": "3"}, "count: expected integer, got string"),
        ({"userId": "u-ada", "count": True}, "count: expected integer, got boolean"),
        ({"userId": "u-ada", "count": 2.5}, "count: expected integer, got number"),
        ({"userId": "u-ada", "count": None}, "count: expected integer, got null"),
        ({"userId": "u-ada", "hint": ["jazz"]}, "hint: expected string, got array"),
        ({"userId": "u-ada", "hint": {"text": "jazz"}}, "hint: expected string, got object"),
        ({"userId": 42}, "userId: expected string, got integer"),
        (["u-ada"], "(data): expected object, got array"),
    ],
)
def test_a_value_of_the_wrong_json_type_is_refused_in_json_terms_not_python_ones(
    store: InMemoryJobStore, sender: RecordingSender, data: object, problem: str
) -> None:
    with pytest.raises(InvalidJob) as caught:
        submit_job(store, sender, "inspiration", data, source="cli")  # type: ignore[arg-type]

    assert caught.value.message == problem
    assert store.jobs == []


def test_a_whole_number_written_with_a_decimal_point_is_an_integer_as_in_json_schema(
    store: InMemoryJobStore, sender: RecordingSender
) -> None:
    job, _ = submit_job(
        store, sender, "inspiration", {"userId": "u-ada", "count": 3.0}, source="cli"
    )

    assert job.request == {"userId": "u-ada", "count": 3}
    assert type(job.request["count"]) is int


@pytest.mark.parametrize("locale", ["en-GB", "pt-BR", "zh-Hant-TW", "es-419", "de", "de-CH-1996"])
def test_a_bcp_47_locale_is_accepted_and_stored_as_sent(
    store: InMemoryJobStore, sender: RecordingSender, locale: str
) -> None:
    job, _ = submit_job(
        store, sender, "inspiration", {"userId": "u-ada", "locale": locale}, source="cli"
    )

    assert job.request["locale"] == locale


@pytest.mark.parametrize(
    "locale", ["not a locale!!", "en_GB", "", "en-", "-GB", "e", "en-GB\n", "en GB", "12"]
)
def test_a_locale_that_is_not_a_bcp_47_tag_is_refused_naming_the_field(
    store: InMemoryJobStore, sender: RecordingSender, locale: str
) -> None:
    with pytest.raises(InvalidJob) as caught:
        submit_job(
            store, sender, "inspiration", {"userId": "u-ada", "locale": locale}, source="cli"
        )

    assert caught.value.message == (
        "locale: expected a BCP 47 language tag, such as en-GB, pt-BR or zh-Hant-TW"
    )
    assert store.jobs == []


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
