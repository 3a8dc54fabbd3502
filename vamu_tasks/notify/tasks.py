"""Celery entry points of the notify queue: deliver one notification, sweep the outbox."""

from __future__ import annotations

import logging
import uuid
from typing import Any

from celery import Task, shared_task
from celery.exceptions import MaxRetriesExceededError
from pydantic import BaseModel

from vamu_tasks.bootstrap import get_container
from vamu_tasks.features import DELIVER_TASK, REAP_TASK, SWEEP_TASK
from vamu_tasks.notify.service import deliver as deliver_notification
from vamu_tasks.retry_policy import RetryPolicy

log = logging.getLogger(__name__)


class EventRef(BaseModel):
    event_id: uuid.UUID


@shared_task(bind=True, name=DELIVER_TASK, pydantic=True)
def deliver(self: Task[Any, Any], ref: EventRef) -> list[str]:
    event_id = ref.event_id
    container = get_container()
    settings = container.settings
    policy = RetryPolicy(settings.notify_max_retries, 1.0, settings.retry_backoff_max_s)
    retries = self.request.retries
    countdown = policy.backoff(retries)
    report = deliver_notification(
        container.store,
        container.transports,
        event_id,
        retry_in_s=countdown + settings.outbox_stale_after_s,
    )
    if report.complete:
        return list(report.delivered)
    try:
        raise self.retry(countdown=countdown, max_retries=settings.notify_max_retries)
    except MaxRetriesExceededError:
        log.error(
            "notification %s still undelivered (%s); left to the outbox sweeper",
            event_id,
            report.failed,
        )
        return list(report.delivered)


# The two housekeeping passes as tasks, for running one by hand (`app.send_task(...)`) and for
# messages an older version's beat left in the queue; the notify worker holding the
# housekeeping lease runs the same functions in process (vamu_tasks/housekeeping.py).
@shared_task(bind=True, name=SWEEP_TASK)
def sweep_outbox(self: Task[Any, Any]) -> int:
    """Re-send notifications whose job committed but whose delivery never happened."""
    from vamu_tasks.housekeeping import sweep_outbox as sweep

    return sweep(get_container())


@shared_task(bind=True, name=REAP_TASK)
def reap_jobs(self: Task[Any, Any]) -> int:
    """Hand out again the jobs whose worker died (lease ran out) and overdue retries."""
    from vamu_tasks.housekeeping import reap_jobs as reap

    return reap(get_container())
