"""Celery entry points of the notify queue: deliver one notification, sweep the outbox."""

from __future__ import annotations

import logging
import uuid
from typing import Any

from celery import Task, shared_task
from celery.exceptions import MaxRetriesExceededError
from pydantic import BaseModel

from vamu_tasks.bootstrap import get_container
from vamu_tasks.features import DELIVER_TASK, NOTIFY_QUEUE, REAP_TASK, SWEEP_TASK
from vamu_tasks.metrics import NOTIFICATIONS
from vamu_tasks.notify.service import deliver as deliver_notification
from vamu_tasks.otel import provider as otel
from vamu_tasks.retry_policy import RetryPolicy
from vamu_tasks.task_runner import event_kwargs

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


@shared_task(bind=True, name=SWEEP_TASK)
def sweep_outbox(self: Task[Any, Any]) -> int:
    """Re-send notifications whose job committed but whose delivery never happened."""
    container = get_container()
    given_up = container.store.give_up_notifications(container.settings.outbox_give_up_after_s)
    if given_up:
        NOTIFICATIONS.labels("any", "given_up").inc(given_up)
        log.error(
            "gave up %d notification(s) undelivered for %gs; see notification_outbox.last_error",
            given_up,
            container.settings.outbox_give_up_after_s,
        )
    ids = container.store.claim_stale_notifications(container.settings.outbox_stale_after_s)
    with otel.detached():
        for event_id in ids:
            self.app.send_task(DELIVER_TASK, kwargs=event_kwargs(event_id), queue=NOTIFY_QUEUE)
    if ids:
        log.info("outbox sweep re-sent %d notification(s)", len(ids))
    return len(ids)


@shared_task(bind=True, name=REAP_TASK)
def reap_jobs(self: Task[Any, Any]) -> int:
    """Hand out again the jobs whose worker died (lease ran out) and overdue retries."""
    from vamu_tasks.features import FEATURES
    from vamu_tasks.reaper import reap
    from vamu_tasks.sender import CelerySender

    container = get_container()
    found = reap(container.store, container.settings, container.broker_inventory)
    sender = CelerySender(self.app)
    with otel.detached():
        for job_id, feature in found:
            sender.send(FEATURES[feature], job_id)  # type: ignore[index]
    if found:
        log.warning("reaper re-sent %d orphaned or overdue job(s)", len(found))
    return len(found)
