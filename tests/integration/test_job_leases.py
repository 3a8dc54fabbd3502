"""Job leases on PostgreSQL: one live runner per job, and orphans that can run again."""

from __future__ import annotations

import time

import pytest

from vamu_tasks.domain import NewJob
from vamu_tasks.errors import LeaseHeld
from vamu_tasks.store.repository import SqlAlchemyJobStore


@pytest.fixture
def store(pg_url):
    store = SqlAlchemyJobStore.from_url(pg_url)
    yield store
    store.close()


def queued(store):
    job, _ = store.create_job(NewJob("inspiration", "u-ada", {"userId": "u-ada"}, "api"))
    return job


def test_a_second_attempt_is_refused_while_the_first_holds_a_live_lease(store):
    job = queued(store)
    store.start_attempt(job.id, "host:1:attempt-a", 5)

    # Another attempt, even in the same process (same host:pid), is a different owner.
    with pytest.raises(LeaseHeld):
        store.start_attempt(job.id, "host:1:attempt-b", 5)


def test_a_renewed_lease_keeps_the_job_from_the_reaper(store):
    job = queued(store)
    store.start_attempt(job.id, "host:1:a", 0.3)
    time.sleep(0.2)
    store.renew_leases([(job.id, "host:1:a")], 5)
    time.sleep(0.2)

    assert job.id not in [job_id for job_id, _ in store.reap(grace_s=1)]


def test_an_orphan_is_reaped_once_and_its_resent_task_can_take_it(store):
    job = queued(store)
    store.start_attempt(job.id, "dead-host:9:a", 0.1)
    time.sleep(0.2)

    reaped = [job_id for job_id, _ in store.reap(grace_s=5)]
    again = [job_id for job_id, _ in store.reap(grace_s=5)]
    restarted = store.start_attempt(job.id, "live-host:2:b", 5)

    assert job.id in reaped and job.id not in again
    assert (restarted.status, restarted.attempts) == ("running", 2)


def test_a_job_queued_too_long_without_starting_is_sent_again_once_per_period(store):
    job = queued(store)
    time.sleep(0.3)

    first = [job_id for job_id, _ in store.reap(grace_s=5, stale_queued_s=0.2)]
    second = [job_id for job_id, _ in store.reap(grace_s=5, stale_queued_s=0.2)]
    fresh = queued(store)
    third = [job_id for job_id, _ in store.reap(grace_s=5, stale_queued_s=0.2)]

    assert job.id in first and job.id not in second
    assert fresh.id not in third


def test_a_renewal_extends_only_the_leases_whose_owner_still_holds_them(store):
    mine, taken = queued(store), queued(store)
    store.start_attempt(mine.id, "host:1:a", 0.3)
    store.start_attempt(taken.id, "host:1:b", 0.3)

    store.renew_leases([(mine.id, "host:1:a"), (taken.id, "host:1:stale-owner")], 5)
    time.sleep(0.4)

    reaped = [job_id for job_id, _ in store.reap(grace_s=1)]
    assert taken.id in reaped and mine.id not in reaped
