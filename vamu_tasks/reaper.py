"""The reaper: hands out again the jobs nobody will run otherwise.

- a running job whose lease ran out (its worker died);
- a retry whose countdown passed long ago (its delayed message was lost);
- a queued job whose first message the broker no longer holds (taken by a worker or a Redis that
  died before recording it as unacknowledged), found by asking the broker;
- a queued job that never started for `stale_queued_s`, where the broker cannot be asked.

A copy of a job that does run finds it running or ended and does nothing, so a re-send is safe.
"""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import Callable

from vamu_tasks.features import FEATURES, FeatureSpec
from vamu_tasks.ports import BrokerInventory, JobStore
from vamu_tasks.settings import Settings

log = logging.getLogger(__name__)

Found = list[tuple[uuid.UUID, str]]


def reap(store: JobStore, settings: Settings, inventory: BrokerInventory | None) -> Found:
    """(job id, feature) of every job to send again, each claimed so the next pass skips it."""
    found = store.reap(grace_s=settings.job_lease_s, stale_queued_s=settings.stale_queued_s)
    if inventory is not None:
        found += lost_messages(
            store,
            inventory,
            older_than_s=settings.lost_message_after_s,
            hold_s=settings.stale_queued_s,
        )
    return found


def lost_messages(
    store: JobStore,
    inventory: BrokerInventory,
    *,
    older_than_s: float,
    hold_s: float,
    recheck_s: float = 0.5,
    sleep: Callable[[float], None] = time.sleep,
) -> Found:
    """Queued jobs, never started, whose task message is in neither its queue nor the broker's
    unacknowledged set, looked at twice."""
    candidates = store.unstarted_jobs(older_than_s)
    if not candidates:
        return []
    queues = {FEATURES[feature].queue for _, feature in candidates}  # type: ignore[index]
    held = inventory.task_ids(queues)
    if held is None:
        return []
    missing = {job_id for job_id, _ in candidates if str(job_id) not in held}
    if not missing:
        return []
    # A message a worker has just popped is in neither place until its bookkeeping lands a
    # moment later: only one still missing on a second look is lost.
    sleep(recheck_s)
    held = inventory.task_ids(queues)
    if held is None:
        return []
    return store.claim_unstarted([i for i in missing if str(i) not in held], hold_s)


def resend_orphans(
    store: JobStore,
    settings: Settings,
    inventory: BrokerInventory | None,
    send: Callable[[FeatureSpec, uuid.UUID], object],
) -> int:
    """One reaper pass: find the jobs nobody will run and send each again; how many.

    Safe to run twice at once (two leaders for a moment, a manual `vamu.jobs.reap`): each job is
    claimed in the same transaction that finds it (`FOR UPDATE SKIP LOCKED`), so only one pass
    sends it, and a copy that does arrive twice finds the job running or ended.
    """
    found = reap(store, settings, inventory)
    for job_id, feature in found:
        send(FEATURES[feature], job_id)  # type: ignore[index]
    if found:
        log.warning("reaper re-sent %d orphaned or overdue job(s)", len(found))
    return len(found)
