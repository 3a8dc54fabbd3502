"""The bridge's use cases: accept one BullMQ job as a Celery job, and wait for a quick result.

Plain synchronous code with ports; `vamu_tasks/bridge/worker.py` runs it from BullMQ's asyncio
worker in a thread pool.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Protocol

from vamu_tasks.batches.policy import BatchPolicy
from vamu_tasks.bridge.contract import (
    AcceptedJob,
    BudgetExceededForUser,
    InvalidJobData,
    QuotaExceededForUser,
    UnknownJob,
    source_ref,
)
from vamu_tasks.errors import InvalidJob, json_type_name
from vamu_tasks.features import BY_JOB_NAME
from vamu_tasks.ports import JobStore
from vamu_tasks.submit import TaskSender, create_and_send, validate_request

TRACE_KEYS = ("requestId", "traceparent")


class SpendCheck(Protocol):
    def over(self, user_id: str) -> str | None:
        """Why the user's spend budget for today is used up, or None."""
        ...


class Quota(Protocol):
    @property
    def limit(self) -> int: ...

    def take(self, user_id: str) -> bool: ...

    def give_back(self, user_id: str) -> None: ...


@dataclass(frozen=True)
class Accepted:
    job_id: uuid.UUID
    celery_task_id: str | None
    created: bool

    def as_return_value(self) -> dict[str, Any]:
        value = AcceptedJob(jobId=self.job_id, celeryTaskId=self.celery_task_id)
        return value.model_dump(mode="json")


def trace_headers(data: Mapping[str, Any]) -> dict[str, str]:
    """The tracing fields a job carries, as Celery message headers."""
    return {key: str(data[key]) for key in TRACE_KEYS if isinstance(data.get(key), str)}


def accept_job(
    store: JobStore,
    sender: TaskSender,
    quota: Quota,
    *,
    name: str,
    data: Any,
    queue: str,
    bullmq_job_id: str,
    budget: SpendCheck | None = None,
    batch: BatchPolicy | None = None,
) -> Accepted:
    """Validate, count against the user's quota, create the row once, send the Celery task.

    Raises a `Refused` subclass for jobs that can never be accepted; any other exception
    (database, broker) means "try again later" and leaves nothing half-created: the row is
    keyed by its source_ref, so a retry finds it and sends the task if it is still queued.
    """
    spec = BY_JOB_NAME.get(name)
    if spec is None:
        known = ", ".join(sorted(BY_JOB_NAME))
        raise UnknownJob(f"{name!r} is not a job this bridge runs (known: {known})")
    if not isinstance(data, Mapping):
        raise InvalidJobData(f"job data must be a JSON object, got {json_type_name(data)}")
    try:
        request = validate_request(spec.feature, data)
    except InvalidJob as exc:
        raise InvalidJobData(exc.message) from exc
    user_id = str(request["userId"])
    ref = source_ref(queue, bullmq_job_id, request.get("requestId"))
    # A redelivered BullMQ job we already have was let in before: it is never refused and
    # never counted twice. Looking it up first would cost every job a query, so the lookup
    # happens only on the way to a refusal, and a count taken for a job that turns out to
    # exist is given back below.
    over = budget.over(user_id) if budget is not None else None
    if over is not None and store.find_job("bullmq", ref) is None:
        # A user over today's spend budget is refused before any token is spent (and uncounted).
        raise BudgetExceededForUser(over)
    counted = quota.take(user_id)
    if not counted and store.find_job("bullmq", ref) is None:
        raise QuotaExceededForUser(f"user {user_id!r} already started {quota.limit} jobs this hour")
    created = False
    try:
        job, task_id, created = create_and_send(
            store,
            sender,
            spec.feature,
            request,
            source="bullmq",
            source_ref=ref,
            headers=trace_headers(request) | {"vamu_job_ref": ref},
            batch=batch,
        )
    finally:
        # Counted only for a row this call created: a redelivery, or a concurrent twin that won
        # the insert, gives its count back.
        if counted and not created and quota.limit > 0:
            quota.give_back(user_id)
    return Accepted(job.id, task_id, created=created)
