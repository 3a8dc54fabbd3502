"""`run_job`: one attempt of a job around its use case, committed once, with its notification."""

from __future__ import annotations

import time
import uuid
from decimal import Decimal

import pytest

from vamu_tasks.domain import FeatureResult, JobRecord, LLMResult, NewJob, Usage, event_id_for
from vamu_tasks.errors import JobCancelled, ProviderTimeout, RateLimited, UserNotFound
from vamu_tasks.jobs import (
    FAILED_EVENT,
    AttemptFailed,
    cancel_checkpoint,
    cancel_job,
    failed_notification,
    ready_notification,
    run_job,
)
from vamu_tasks.llm.spend import SpendMeter
from vamu_tasks.testing.memory import InMemoryJobStore

READY = "inspiration-ready"
IDEAS = {"ideas": [{"title": "Jazz night", "description": "Live jazz.", "category": "music"}]}
CALL = LLMResult("{}", "openai", "gpt-5-mini", Usage(input_tokens=1000, output_tokens=200), "end")
CALL_COST = Decimal("0.000650")  # 1000 x $0.25/M + 200 x $2.00/M


def new_job(store: InMemoryJobStore, job_id: uuid.UUID | None = None) -> JobRecord:
    job = NewJob("inspiration", "u-ada", {"userId": "u-ada"}, "cli", id=job_id or uuid.uuid4())
    record, _ = store.create_job(job)
    return record


def succeeding(job: JobRecord, meter: SpendMeter) -> FeatureResult:
    meter.record(CALL)
    return FeatureResult(IDEAS, READY)


class CountingHandler:
    def __init__(self) -> None:
        self.calls = 0

    def __call__(self, job: JobRecord, meter: SpendMeter) -> FeatureResult:
        self.calls += 1
        return succeeding(job, meter)


def raising(error: Exception, *, calls: int = 1):
    def handler(job: JobRecord, meter: SpendMeter) -> FeatureResult:
        for _ in range(calls):
            meter.record(CALL)
        raise error

    return handler


def notes(store: InMemoryJobStore):
    return [row.notification for row in store.outbox.values()]


def test_a_successful_job_commits_its_result_and_spend() -> None:
    store = InMemoryJobStore()
    job = new_job(store)

    outcome = run_job(store, job.id, succeeding)

    row = store.get_job(job.id)
    assert row is not None
    assert (outcome.status, row.status) == ("succeeded", "succeeded")
    assert row.result == IDEAS
    assert (row.provider, row.model) == ("openai", "gpt-5-mini")
    assert (row.input_tokens, row.output_tokens, row.cost_usd) == (1000, 200, CALL_COST)
    assert row.error_kind is None
    assert row.finished_at is not None


def test_a_successful_job_leaves_exactly_one_ready_notification_for_the_users_room() -> None:
    store = InMemoryJobStore()
    job = new_job(store)

    outcome = run_job(store, job.id, succeeding)

    [note] = notes(store)
    assert note.event == READY
    assert note.user_id == "u-ada"
    assert note.job_id == job.id
    assert note.data == {"jobId": str(job.id), "feature": "inspiration", "status": "succeeded"}
    assert outcome.notifications == [note.id]


def test_a_job_that_already_succeeded_is_not_run_again_and_not_notified_twice() -> None:
    store = InMemoryJobStore()
    job = new_job(store)
    run_job(store, job.id, succeeding)
    [first_note] = notes(store)
    handler = CountingHandler()

    again = run_job(store, job.id, handler)

    row = store.get_job(job.id)
    assert row is not None
    assert handler.calls == 0
    assert again.status == "succeeded"
    assert row.attempts == 1
    assert row.result == IDEAS
    assert notes(store) == [first_note]
    # Still undelivered, so the redelivered task may enqueue its delivery again.
    assert again.notifications == [first_note.id]


def test_a_job_that_already_failed_is_not_run_again() -> None:
    store = InMemoryJobStore()
    job = new_job(store)
    run_job(store, job.id, raising(UserNotFound()))
    handler = CountingHandler()

    again = run_job(store, job.id, handler)

    assert handler.calls == 0
    assert (again.status, again.error_kind) == ("failed", "user_not_found")
    assert len(notes(store)) == 1


def test_a_permanent_error_fails_the_job_with_its_kind_and_one_failed_notification() -> None:
    store = InMemoryJobStore()
    job = new_job(store)

    outcome = run_job(store, job.id, raising(UserNotFound("no user u-ada")))

    row = store.get_job(job.id)
    assert row is not None
    assert (outcome.status, outcome.error_kind) == ("failed", "user_not_found")
    assert (row.status, row.error_kind, row.error_message) == (
        "failed",
        "user_not_found",
        "no user u-ada",
    )
    assert row.result is None
    [note] = notes(store)
    assert note.event == FAILED_EVENT == "ai-job-failed"
    assert note.data == {
        "jobId": str(job.id),
        "feature": "inspiration",
        "errorKind": "user_not_found",
    }
    assert outcome.notifications == [note.id]


def test_a_permanent_error_still_records_what_the_attempt_spent() -> None:
    store = InMemoryJobStore()
    job = new_job(store)

    run_job(store, job.id, raising(UserNotFound(), calls=2))

    row = store.get_job(job.id)
    assert row is not None
    assert (row.input_tokens, row.output_tokens, row.cost_usd) == (2000, 400, 2 * CALL_COST)


def test_a_transient_error_raises_attempt_failed_with_the_spend_and_leaves_the_job_running() -> (
    None
):
    store = InMemoryJobStore()
    job = new_job(store)
    error = RateLimited("429", retry_after=12.0)

    with pytest.raises(AttemptFailed) as caught:
        run_job(store, job.id, raising(error, calls=2))

    assert caught.value.error is error
    assert caught.value.spend.usage.input_tokens == 2000
    assert caught.value.spend.cost_usd == 2 * CALL_COST
    row = store.get_job(job.id)
    assert row is not None
    assert (row.status, row.attempts, row.finished_at) == ("running", 1, None)
    assert notes(store) == []


def test_an_unexpected_exception_fails_the_job_as_internal() -> None:
    store = InMemoryJobStore()
    job = new_job(store)

    outcome = run_job(store, job.id, raising(KeyError("ideas")))

    row = store.get_job(job.id)
    assert row is not None
    assert (outcome.status, outcome.error_kind) == ("failed", "internal")
    assert row.error_message is not None and row.error_message.startswith("KeyError")
    [note] = notes(store)
    assert note.data["errorKind"] == "internal"


def test_notification_ids_are_the_same_for_the_same_job_whoever_computes_them() -> None:
    job_id = uuid.uuid4()
    first, second = InMemoryJobStore(), InMemoryJobStore()
    run_job(first, new_job(first, job_id).id, succeeding)
    run_job(second, new_job(second, job_id).id, succeeding)

    assert list(first.outbox) == list(second.outbox) == [event_id_for(job_id, READY)]


def test_notification_ids_differ_between_events_and_between_jobs() -> None:
    store = InMemoryJobStore()
    job, other = new_job(store), new_job(store)

    assert ready_notification(job, READY).id == ready_notification(job, READY).id
    assert failed_notification(job, "timeout").id == failed_notification(job, "quota").id
    ids = {
        ready_notification(job, READY).id,
        failed_notification(job, "timeout").id,
        ready_notification(other, READY).id,
    }
    assert len(ids) == 3


def test_attempts_count_up_across_redeliveries_until_the_job_succeeds() -> None:
    store = InMemoryJobStore()
    job = new_job(store)

    for _ in range(2):
        with pytest.raises(AttemptFailed):
            run_job(store, job.id, raising(ProviderTimeout()))
    first_start = store.get_job(job.id).started_at  # type: ignore[union-attr]
    run_job(store, job.id, succeeding)

    row = store.get_job(job.id)
    assert row is not None
    assert (row.status, row.attempts) == ("succeeded", 3)
    assert row.started_at == first_start
    assert [n.event for n in notes(store)] == [READY]


def test_a_cancellation_is_noticed_at_the_first_check_after_the_interval() -> None:
    store = InMemoryJobStore()
    job = new_job(store)
    check = cancel_checkpoint(store, job.id, every_s=0.05)
    cancel_job(store, job.id, "operator")

    check()  # within the interval: the row was read a moment ago, no query
    time.sleep(0.06)
    with pytest.raises(JobCancelled):
        check()


def test_an_attempt_past_its_time_limit_stops_at_the_next_checkpoint_as_timeout() -> None:
    # Celery's threads pool ignores task time limits: the checkpoint enforces the soft one.
    store = InMemoryJobStore()
    job = new_job(store)
    check = cancel_checkpoint(store, job.id, time_limit_s=0.05)

    def slow(job: JobRecord, meter: SpendMeter) -> FeatureResult:
        meter.record(CALL)
        check()  # in time
        time.sleep(0.06)
        check()
        return succeeding(job, meter)

    outcome = run_job(store, job.id, slow)

    done = store.get_job(job.id)
    assert (outcome.status, outcome.error_kind) == ("failed", "timeout")
    assert done is not None and "VAMU_TASK_SOFT_TIME_LIMIT_S" in (done.error_message or "")
    assert done.input_tokens == 1000  # what the attempt spent is kept
