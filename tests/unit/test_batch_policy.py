"""Which jobs wait for the batch tier, what `deliverBy` accepts, and what a batch costs."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from tests.unit.test_submit import RecordingSender
from vamu_tasks.batches.policy import BatchPolicy
from vamu_tasks.domain import JobFilter, Usage
from vamu_tasks.errors import InvalidJob
from vamu_tasks.llm.pricing import cost_usd
from vamu_tasks.submit import submit_job
from vamu_tasks.testing.memory import InMemoryJobStore

POLICY = BatchPolicy(sync_margin_s=900)
NOW = datetime(2026, 12, 2, 12, 0, tzinfo=UTC)


def iso(when: datetime) -> str:
    return when.isoformat().replace("+00:00", "Z")


def test_an_inspiration_job_that_can_wait_is_stored_batched_and_no_task_is_sent():
    store, sender = InMemoryJobStore(), RecordingSender()
    later = datetime.now(UTC) + timedelta(hours=6)

    job, task_id = submit_job(
        store, sender, "inspiration", {"userId": "u-ada", "deliverBy": iso(later)},
        source="cli", batch=POLICY,
    )

    assert (job.status, task_id, sender.sent) == ("batched", None, [])
    assert job.deliver_by is not None and abs(job.deliver_by - later) < timedelta(seconds=1)
    assert job.request["deliverBy"] == iso(later)


def test_a_deliver_by_inside_the_margin_runs_now_and_is_kept_on_the_request():
    store, sender = InMemoryJobStore(), RecordingSender()
    soon = iso(datetime.now(UTC) + timedelta(minutes=5))

    job, task_id = submit_job(
        store, sender, "inspiration", {"userId": "u-ada", "deliverBy": soon},
        source="cli", batch=POLICY,
    )

    assert job.status == "queued" and task_id is not None and len(sender.sent) == 1
    assert job.deliver_by is None and job.request["deliverBy"] == soon


def test_without_a_batch_policy_deliver_by_runs_now():
    # The offline provider, or the bridge's sync queue, where a caller waits for the result.
    store, sender = InMemoryJobStore(), RecordingSender()
    later = iso(datetime.now(UTC) + timedelta(hours=6))

    job, _ = submit_job(
        store, sender, "inspiration", {"userId": "u-ada", "deliverBy": later}, source="cli"
    )

    assert job.status == "queued" and len(sender.sent) == 1


def test_only_inspiration_is_ever_batched():
    data = {"userId": "u-ada", "deliverBy": iso(NOW + timedelta(hours=6))}
    assert POLICY.deliver_by("inspiration", data, NOW) == NOW + timedelta(hours=6)
    assert POLICY.deliver_by("chatbot", data, NOW) is None
    assert POLICY.deliver_by("agent", data, NOW) is None
    assert POLICY.deliver_by("inspiration", {"userId": "u-ada"}, NOW) is None


@pytest.mark.parametrize(
    ("value", "problem"),
    [
        ("2026-12-03T08:00:00", "expected a date-time with an offset"),
        ("2026-12-03 08:00:00Z", "expected a date-time with an offset"),
        ("tomorrow", "expected a date-time with an offset"),
        ("2026-02-30T08:00:00Z", "not a date-time: day is out of range for month"),
        (1764748800, "expected string, got integer"),
    ],
)
def test_a_deliver_by_that_is_not_a_date_time_with_an_offset_is_refused_naming_the_field(
    value: object, problem: str
):
    store, sender = InMemoryJobStore(), RecordingSender()
    with pytest.raises(InvalidJob) as refused:
        submit_job(store, sender, "inspiration", {"userId": "u-ada", "deliverBy": value},
                   source="cli", batch=POLICY)
    assert refused.value.message.startswith("deliverBy: ")
    assert problem in refused.value.message
    assert store.list_jobs(JobFilter()) == [] and sender.sent == []


@pytest.mark.parametrize("model", ["gpt-5-mini", "claude-sonnet-4-6", "claude-haiku-4-5"])
def test_a_batched_call_costs_half_the_synchronous_price_cache_reads_and_writes_included(
    model: str,
):
    usage = Usage(10_000, 2_000, cache_read_tokens=4_000, cache_write_tokens=1_000)
    sync = cost_usd(model, usage)
    batch = cost_usd(model, usage, batch=True)
    assert sync is not None and batch is not None and sync > 0
    assert batch == sync / 2
