"""The life of one job row around a feature's use case: start, run, commit the outcome once.

This is the part every feature shares and that knows nothing of Celery: the task layer calls
`run_job` and decides what a `TransientError` means (retry, fallback, or give up via `fail_job`).
"""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import Callable, Mapping
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass, field
from typing import Any, Literal

from vamu_tasks.domain import FeatureResult, JobRecord, Notification, Spend, event_id_for
from vamu_tasks.errors import ErrorKind, JobCancelled, JobTimedOut, PermanentError, TransientError
from vamu_tasks.events import AgentFinishedEvent, AiJobFailedEvent, InspirationReadyEvent
from vamu_tasks.leases import LeaseKeeper
from vamu_tasks.llm.spend import SpendMeter
from vamu_tasks.ports import JobStore

log = logging.getLogger(__name__)

FAILED_EVENT = "ai-job-failed"
# How stale a cancellation may be when a running job notices it (see cancel_checkpoint).
CANCEL_CHECK_EVERY_S = 0.5

Handler = Callable[[JobRecord, SpendMeter], FeatureResult]


@dataclass(frozen=True)
class JobOutcome:
    """What a task run ended with; `notifications` are the ids still to be delivered, and
    `committed` those of them this run wrote itself, in hand (sent without reading them back)."""

    job_id: uuid.UUID
    status: str
    error_kind: str | None = None
    notifications: list[uuid.UUID] = field(default_factory=list)
    record: JobRecord | None = None
    committed: list[Notification] = field(default_factory=list)


class AttemptFailed(Exception):
    """A transient failure of one attempt, with the spend that attempt already incurred."""

    def __init__(self, error: TransientError, spend: Spend, attempts: int) -> None:
        super().__init__(str(error))
        self.error = error
        self.spend = spend
        self.attempts = attempts


def ready_notification(
    job: JobRecord, event: str, data: Mapping[str, Any] | None = None
) -> Notification:
    """The event a finished job sends; without `data`, inspiration-ready's payload."""
    if data is None:
        data = InspirationReadyEvent.of(job, feature="inspiration", status="succeeded").payload()
    return Notification(event_id_for(job.id, event), event, job.user_id, job.id, data)


def failed_notification(job: JobRecord, error_kind: ErrorKind) -> Notification:
    data = AiJobFailedEvent.of(job, feature=job.feature, errorKind=error_kind).payload()
    return Notification(event_id_for(job.id, FAILED_EVENT), FAILED_EVENT, job.user_id, job.id, data)


def run_job(
    store: JobStore, job_id: uuid.UUID, handler: Handler, leases: LeaseKeeper | None = None
) -> JobOutcome:
    """Run one attempt of a job; idempotent for jobs that already ended.

    Permanent errors end the job as failed. Transient ones leave it running and are raised as
    `AttemptFailed` for the caller to retry. With `leases`, the job is held under this
    process's lease while it runs, and `LeaseHeld` is raised if another live worker has it.
    """
    if leases is None:
        job = store.start_attempt(job_id)
        held: AbstractContextManager[None] = nullcontext()
    else:
        owner = leases.new_owner()
        job = store.start_attempt(job_id, owner, leases.lease_s)
        held = leases.hold(job_id, owner)
    if job.is_terminal:
        log.info("job %s already %s; nothing to do", job.id, job.status)
        return _outcome(store, job)
    meter = SpendMeter()
    try:
        with held:
            output = handler(job, meter)
    except TransientError as exc:
        raise AttemptFailed(exc, meter.spend, job.attempts) from exc
    except PermanentError as exc:
        return fail_job(store, job, exc.error_kind, exc.message, meter.spend)
    except Exception as exc:
        # A bug, not a condition: retrying would repeat it, so the job fails as internal.
        log.exception("job %s crashed in its use case", job.id)
        return fail_job(store, job, "internal", f"{type(exc).__name__}: {exc}"[:500], meter.spend)
    notes = [ready_notification(job, output.ready_event, output.ready_data)] if job.notify else []
    done = store.succeed(job.id, output.result, meter.spend, notes)
    return _outcome(store, done, notes, "succeeded")


# Features whose contract also promises a "finished" event when they fail.
FINISHED_EVENTS = {"agent": "agent-finished"}


def fail_job(
    store: JobStore,
    job: JobRecord,
    error_kind: ErrorKind,
    message: str,
    spend: Spend | None = None,
) -> JobOutcome:
    notes = failure_notifications(job, error_kind, "failed")
    done = store.fail(job.id, error_kind, message, spend or Spend(), notes)
    return _outcome(store, done, notes, "failed")


def failure_notifications(
    job: JobRecord, error_kind: ErrorKind, status: Literal["failed", "cancelled"]
) -> list[Notification]:
    if not job.notify:
        return []
    notes = [failed_notification(job, error_kind)]
    if job.feature in FINISHED_EVENTS:
        finished = AgentFinishedEvent.of(job, status=status).payload()
        notes.append(ready_notification(job, FINISHED_EVENTS[job.feature], finished))
    return notes


def cancel_job(store: JobStore, job_id: uuid.UUID, reason: str) -> JobOutcome | None:
    """End a queued or running job as cancelled and tell the app; None if it already ended.

    A worker running it notices at its next checkpoint (`cancel_checkpoint`) and stops; its
    late result can no longer be committed, since only open jobs can end.
    """
    job = store.get_job(job_id)
    if job is None or job.is_terminal:
        return None
    notes = failure_notifications(job, "cancelled", "cancelled")
    done = store.cancel(job_id, reason, notes)
    if done.status != "cancelled":
        return None
    return _outcome(store, done, notes, "cancelled")


def cancel_checkpoint(
    store: JobStore,
    job_id: uuid.UUID,
    every_s: float = CANCEL_CHECK_EVERY_S,
    time_limit_s: float | None = None,
) -> Callable[[], None]:
    """A check a use case calls between LLM calls, tool steps and stream chunks.

    It reads the row at most every `every_s`, counting from now (the attempt has just read it
    to start): a streamed reply would otherwise cost a query per chunk. With `time_limit_s`, an
    attempt that has run longer stops there as `timeout`: Celery's threads pool does not
    enforce its own time limits.
    """
    started = last = time.monotonic()

    def check() -> None:
        nonlocal last
        now = time.monotonic()
        if time_limit_s is not None and now - started > time_limit_s:
            raise JobTimedOut(
                f"Job {job_id} ran {now - started:.0f}s in this attempt, past "
                f"VAMU_TASK_SOFT_TIME_LIMIT_S ({time_limit_s:g}s); stopped at a checkpoint."
            )
        if now - last < every_s:
            return
        last = now
        job = store.get_job(job_id)
        if job is not None and job.status == "cancelled":
            raise JobCancelled(f"Job {job_id} was cancelled while it ran.")

    return check


def _outcome(
    store: JobStore,
    job: JobRecord,
    notes: list[Notification] | None = None,
    committed_as: str | None = None,
) -> JobOutcome:
    if notes is not None and job.status == committed_as:
        # This call wrote the outbox rows with the commit: their ids are the pending ones.
        return JobOutcome(
            job.id, job.status, job.error_kind, [note.id for note in notes], job, list(notes)
        )
    pending = store.pending_notifications(job.id) if job.is_terminal else []
    return JobOutcome(job.id, job.status, job.error_kind, pending, job)
