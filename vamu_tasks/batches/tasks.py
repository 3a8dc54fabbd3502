"""One pass of the batch tier (`service.tick`) in a worker: the housekeeping leader runs
`batch_pass` every VAMU_BATCH_POLL_INTERVAL_S (vamu_tasks/housekeeping.py); the task
`vamu.batches.tick` runs one by hand."""

from __future__ import annotations

import logging
import uuid
from typing import Any

from celery import Celery, Task, shared_task

from vamu_tasks.batches.service import BatchConfig, BatchDeps, run_all_now, tick
from vamu_tasks.bootstrap import Container, get_container
from vamu_tasks.features import BATCH_TASK
from vamu_tasks.metrics import BATCH_JOBS, JOBS_FINISHED, record_usage
from vamu_tasks.task_runner import notify_after_commit

log = logging.getLogger(__name__)


def batch_deps(container: Container, app: Celery) -> BatchDeps | None:
    """What a pass needs, from the process's container; None without a batch-capable provider."""
    api = container.batch_api()
    if api is None or container.batches is None:
        return None
    s = container.settings

    def notify(event_ids: list[uuid.UUID]) -> None:
        notify_after_commit(app, container, event_ids)

    spend = container.spend_budget
    return BatchDeps(
        batches=container.batches,
        jobs=container.store,
        api=api,
        context=container.context,
        sender=container.task_sender(app),
        notify=notify,
        config=BatchConfig(
            max_jobs=s.batch_max_jobs,
            max_wait_s=s.batch_max_wait_s,
            poll_interval_s=s.batch_poll_interval_s,
            sync_margin_s=s.batch_sync_margin_s,
            max_output_tokens=s.llm_max_output_tokens,
            hold_s=s.stale_queued_s,
        ),
        over_budget=spend.over if spend is not None else lambda _user: None,
        charge=spend.charge if spend is not None else lambda _u, _p, _c: None,
    )


def batch_pass(container: Container) -> int:
    """Collect waiting jobs into vendor batches, poll the batches out, settle the ended ones;
    how many jobs it sent, ended or moved (0: nothing, and nothing is logged)."""
    from vamu_tasks.app import app

    deps = batch_deps(container, app)
    if deps is None:
        if container.batches is None:
            return 0
        hold_s = container.settings.stale_queued_s
        return run_all_now(container.batches, container.task_sender(app), hold_s)
    report = tick(deps)
    provider = deps.api.name
    for outcome, count in [
        ("submitted", report.jobs_submitted),
        ("committed", report.committed),
        ("failed", report.failed),
        ("to_sync", report.to_sync),
        ("discarded", report.discarded),
    ]:
        if count:
            BATCH_JOBS.labels(provider, outcome).inc(count)
    for name, model, usage in report.usage:
        record_usage(name, model, usage, batch=True)
    for feature, status, error_kind in report.finished:
        JOBS_FINISHED.labels(feature, status, error_kind).inc()
    if report:
        log.info(
            "batch tier: %d batch(es) sent, %d committed, %d failed, %d to run now, "
            "%d late result(s) discarded",
            len(report.submitted),
            report.committed,
            report.failed,
            report.to_sync,
            report.discarded,
        )
    return report.jobs_submitted + report.committed + report.failed + report.to_sync


@shared_task(bind=True, name=BATCH_TASK)
def batch_tick(self: Task[Any, Any]) -> int:
    """One pass of the batch tier, by hand (`celery -A vamu_tasks call vamu.batches.tick`)."""
    return batch_pass(get_container())
