"""The glue between Celery and `run_job`: retries, fallback, and sending notifications after commit.

Feature `tasks.py` modules stay one-liners that call `execute`.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Callable, Sequence
from typing import Any

from celery import Celery, Task
from celery.exceptions import SoftTimeLimitExceeded
from pydantic import BaseModel

from vamu_tasks import metrics
from vamu_tasks.bootstrap import Container, get_container
from vamu_tasks.domain import FeatureResult, JobRecord, Notification
from vamu_tasks.errors import JobTimedOut, LeaseHeld, StoreUnavailable
from vamu_tasks.features import DELIVER_TASK, NOTIFY_QUEUE
from vamu_tasks.jobs import AttemptFailed, Handler, JobOutcome, fail_job, run_job
from vamu_tasks.llm.spend import SpendMeter
from vamu_tasks.notify.service import deliver as deliver_notification
from vamu_tasks.notify.service import deliver_fresh
from vamu_tasks.retry_policy import RetryPolicy, decide
from vamu_tasks.tracing import current_trace

log = logging.getLogger(__name__)

HandlerFactory = Callable[[Container, "JobRef"], Handler]


class JobRef(BaseModel):
    """A feature task's only argument: which job to run, and on which provider if not the primary.

    Ids only, so the broker, Flower and the logs never carry user text or secrets.
    """

    job_id: uuid.UUID
    provider: str | None = None
    model: str | None = None  # an operator's override for a rerun


class TaskOutcome(BaseModel):
    """The Celery result: ids and states only, never user content."""

    job_id: uuid.UUID
    status: str
    error_kind: str | None = None


def policy_for(container: Container) -> RetryPolicy:
    s = container.settings
    return RetryPolicy(s.job_max_retries, s.retry_backoff_base_s, s.retry_backoff_max_s)


def execute(task: Task[Any, Any], ref: JobRef, make_handler: HandlerFactory) -> TaskOutcome:
    container = get_container()
    handler = _soft_limit_as_timeout(make_handler(container, ref))
    try:
        outcome = run_job(container.store, ref.job_id, handler, container.leases)
    except LeaseHeld as held:
        # A duplicate delivery (redelivered or re-sent) while a live worker runs the job.
        log.info("%s; this delivery ends here", held)
        return TaskOutcome(job_id=ref.job_id, status="running")
    except AttemptFailed as failed:
        outcome = _after_transient(task, container, ref, failed)
    except StoreUnavailable as exc:
        # The database went away before the attempt could start or end: try again later.
        raise task.retry(countdown=policy_for(container).backoff(task.request.retries)) from exc
    send_notifications(task, outcome, container)
    _count_outcome(container, outcome)
    return TaskOutcome(job_id=outcome.job_id, status=outcome.status, error_kind=outcome.error_kind)


def _soft_limit_as_timeout(handler: Handler) -> Handler:
    """Under prefork, Celery raises its soft time limit inside the task: the job fails as
    `timeout`, not as a crash (the threads pool has the checkpoint instead)."""

    def run(job: JobRecord, meter: SpendMeter) -> FeatureResult:
        try:
            return handler(job, meter)
        except Exception as exc:
            # The SDKs wrap whatever interrupts a request (as a connection error).
            if not _caused_by(exc, SoftTimeLimitExceeded):
                raise
            raise JobTimedOut(
                f"Job {job.id} ran past VAMU_TASK_SOFT_TIME_LIMIT_S in this attempt."
            ) from exc

    return run


def _caused_by(exc: BaseException, kind: type[BaseException]) -> bool:
    seen: BaseException | None = exc
    for _ in range(20):  # exception chains are short; a cycle must not hang the worker
        if seen is None:
            return False
        if isinstance(seen, kind):
            return True
        seen = seen.__cause__ or seen.__context__
    return False


def _after_transient(
    task: Task[Any, Any], container: Container, ref: JobRef, failed: AttemptFailed
) -> JobOutcome:
    job_id, provider = ref.job_id, ref.provider
    error = failed.error
    settings = container.settings
    decision = decide(
        policy_for(container),
        # Counted on the row, not by Celery: waiting for an earlier turn is not an attempt.
        retries=failed.attempts - 1,
        error=error,
        current_provider=provider or container.primary_provider,
        fallback=settings.llm_fallback,
        on_fallback=provider is not None and provider == settings.llm_fallback,
    )
    feature = container.store.get_job(job_id)
    feature_name = feature.feature if feature else "unknown"
    if decision.action == "retry":
        metrics.RETRIES.labels(feature_name, error.error_kind).inc()
    elif decision.action == "fallback":
        metrics.FALLBACKS.labels(
            feature_name, provider or container.primary_provider, decision.provider or ""
        ).inc()
    log.warning(
        "job %s attempt failed (%s: %s); %s",
        job_id,
        error.error_kind,
        error.message,
        decision.action,
    )
    if decision.action == "give_up":
        try:
            job = container.store.get_job(job_id)
            assert job is not None
            return fail_job(
                container.store,
                job,
                error.error_kind,
                f"{error.message} (gave up after {failed.attempts - 1} retries)",
                failed.spend,
            )
        except StoreUnavailable:
            # Nothing may vanish: without a database to record the failure, keep retrying.
            decision_countdown = settings.retry_backoff_max_s
            raise task.retry(countdown=decision_countdown) from error
    try:
        container.store.requeue(
            job_id, error.error_kind, error.message, failed.spend, retry_in_s=decision.countdown
        )
    except StoreUnavailable:
        log.warning("job %s: database unavailable, retrying without recording why", job_id)
    switched = decision.provider is not None and decision.provider != provider
    ref = JobRef(
        job_id=job_id, provider=decision.provider or provider, model=None if switched else ref.model
    )
    raise task.retry(
        kwargs={"ref": ref.model_dump(mode="json")}, countdown=decision.countdown
    ) from error


def _count_outcome(container: Container, outcome: JobOutcome) -> None:
    if outcome.status not in ("succeeded", "failed", "cancelled"):
        return
    job = outcome.record or container.store.get_job(outcome.job_id)
    if job is None or job.finished_at is None:
        return
    metrics.JOBS_FINISHED.labels(job.feature, job.status, job.error_kind or "").inc()
    metrics.JOB_SECONDS.labels(job.feature, job.status).observe(
        (job.finished_at - job.created_at).total_seconds()
    )


def event_kwargs(event_id: uuid.UUID) -> dict[str, Any]:
    return {"ref": {"event_id": str(event_id)}}


def send_notifications(task: Task[Any, Any], outcome: JobOutcome, container: Container) -> None:
    notify_after_commit(task.app, container, outcome.notifications, outcome.committed)


def notify_after_commit(
    app: Celery,
    container: Container,
    event_ids: list[uuid.UUID],
    committed: Sequence[Notification] = (),
) -> None:
    """Deliver committed notifications: the local transports from this process, the rest (and
    any failed send) through the notify queue. `committed` are those of them this process has
    just written and still holds: they are sent without being read back."""
    # Without a local transport configured, an inline pass would only lock the row for nothing.
    if container.settings.notify_inline and INLINE_TRANSPORTS & container.transports.keys():
        fresh = {note.id for note in committed}
        older = [event_id for event_id in event_ids if event_id not in fresh]
        event_ids = send_committed(container, committed) + deliver_inline(container, older)
    dispatch_notifications(app, event_ids)


def send_committed(container: Container, committed: Sequence[Notification]) -> list[uuid.UUID]:
    """The inline delivery of notifications just committed, from memory (no read, no row
    lock); the ids still pending somewhere, for the notify queue."""
    if not committed:
        return []
    try:
        return deliver_fresh(
            container.store,
            container.transports,
            committed,
            only=INLINE_TRANSPORTS,
            retry_in_s=container.settings.outbox_stale_after_s,
        )
    except Exception:
        log.warning("job %s: inline delivery failed; queued", committed[0].job_id, exc_info=True)
        return [note.id for note in committed]


# Transports that are a local write (a Redis PUBLISH, a log line) go out from the worker that
# committed the job. A webhook is a call to someone else's server: it keeps its own task, so a
# slow receiver never holds an LLM worker thread.
INLINE_TRANSPORTS = frozenset({"socketio", "log"})


def deliver_inline(container: Container, event_ids: list[uuid.UUID]) -> list[uuid.UUID]:
    """Deliver committed notifications to the inline transports at once; the ones still pending
    somewhere (a webhook, or a failed send) are returned for the notify queue, which delivers
    and retries them with backoff.

    A second Celery task per job cost more CPU than the job's own database work, and a hop of
    latency (docs/performance.md); the outbox row keeps delivery at least once either way.
    """
    left: list[uuid.UUID] = []
    for event_id in event_ids:
        try:
            report = deliver_notification(
                container.store,
                container.transports,
                event_id,
                retry_in_s=container.settings.outbox_stale_after_s,
                only=INLINE_TRANSPORTS,
            )
        except Exception:
            log.warning("notification %s: inline delivery failed; queued", event_id, exc_info=True)
            left.append(event_id)
            continue
        if not report.complete:
            left.append(event_id)
    return left


def dispatch_notifications(app: Celery, event_ids: list[uuid.UUID]) -> None:
    """Enqueue delivery of committed notifications; the outbox sweeper covers a failed send."""
    for event_id in event_ids:
        try:
            app.send_task(
                DELIVER_TASK,
                kwargs=event_kwargs(event_id),
                queue=NOTIFY_QUEUE,
                headers=current_trace(),
            )
        except Exception:
            log.exception("could not enqueue notification %s; the outbox sweeper will", event_id)
