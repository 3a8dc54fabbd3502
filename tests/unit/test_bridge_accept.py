"""The bridge's accept with the per-user quota on: each new job counted once, a redelivery never
refused and never counted, without looking every job up first."""

from __future__ import annotations

import uuid
from collections import Counter
from typing import Any

import pytest

from vamu_tasks.bridge.contract import QuotaExceededForUser
from vamu_tasks.bridge.service import accept_job
from vamu_tasks.domain import JobRecord
from vamu_tasks.features import FeatureSpec
from vamu_tasks.testing.memory import InMemoryJobStore


class CountingQuota:
    """RedisHourlyQuota's behaviour, in memory."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.counts: Counter[str] = Counter()

    def take(self, user_id: str) -> bool:
        if self.limit <= 0:
            return True
        if self.counts[user_id] >= self.limit:
            return False
        self.counts[user_id] += 1
        return True

    def give_back(self, user_id: str) -> None:
        if self.limit > 0:
            self.counts[user_id] -= 1


class LookupCountingStore(InMemoryJobStore):
    def __init__(self) -> None:
        super().__init__()
        self.lookups = 0

    def find_job(self, source: str, source_ref: str) -> JobRecord | None:
        self.lookups += 1
        return super().find_job(source, source_ref)


class Sender:
    def send(self, spec: FeatureSpec, job_id: uuid.UUID, headers: Any = None, **_: Any) -> str:
        return f"celery-{job_id}"


def accept(store: InMemoryJobStore, quota: CountingQuota, bullmq_id: str, user: str = "u-ada"):
    return accept_job(
        store,
        Sender(),
        quota,
        name="inspiration.generate",
        data={"userId": user, "count": 3},
        queue="vamu-ai",
        bullmq_job_id=bullmq_id,
    )


def test_each_new_job_is_counted_once_and_a_redelivery_gives_its_count_back() -> None:
    store, quota = LookupCountingStore(), CountingQuota(limit=5)

    first = accept(store, quota, "1")
    again = accept(store, quota, "1")
    accept(store, quota, "2")

    assert (first.created, again.created, again.job_id) == (True, False, first.job_id)
    assert quota.counts["u-ada"] == 2
    assert len(store.jobs) == 2


def test_new_jobs_under_the_quota_are_accepted_without_a_lookup() -> None:
    store, quota = LookupCountingStore(), CountingQuota(limit=5)

    for n in range(5):
        accept(store, quota, str(n))

    assert store.lookups == 0


def test_a_redelivery_at_the_limit_is_accepted_and_counts_nothing() -> None:
    store, quota = LookupCountingStore(), CountingQuota(limit=2)
    first = accept(store, quota, "1")
    accept(store, quota, "2")

    again = accept(store, quota, "1")

    assert (again.created, again.job_id) == (False, first.job_id)
    assert quota.counts["u-ada"] == 2


def test_a_new_job_over_the_limit_is_refused_creates_no_row_and_counts_nothing() -> None:
    store, quota = LookupCountingStore(), CountingQuota(limit=2)
    accept(store, quota, "1")
    accept(store, quota, "2")

    with pytest.raises(QuotaExceededForUser) as caught:
        accept(store, quota, "3")

    assert "already started 2 jobs this hour" in caught.value.failed_reason
    assert len(store.jobs) == 2
    assert quota.counts["u-ada"] == 2
    # Other users have their own count.
    assert accept(store, quota, "4", user="u-bruno").created
