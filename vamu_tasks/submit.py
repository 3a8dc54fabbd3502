"""Accepting a job: validate its input, create its row once, then send its task (no Celery here)."""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from typing import Any, Protocol

from pydantic import ValidationError

from vamu_tasks.batches.policy import BatchPolicy
from vamu_tasks.domain import Feature, JobRecord, JobSource, NewJob
from vamu_tasks.errors import InvalidJob
from vamu_tasks.features import FEATURES, FeatureSpec
from vamu_tasks.ports import JobStore


class TaskSender(Protocol):
    def send(
        self,
        spec: FeatureSpec,
        job_id: uuid.UUID,
        headers: Mapping[str, str] | None = None,
        *,
        provider: str | None = None,
        model: str | None = None,
    ) -> str:
        """Send the feature's task for this job (optionally on another provider or model)."""
        ...


def validate_request(feature: Feature, data: Mapping[str, Any]) -> dict[str, Any]:
    """The request as stored on the row (camelCase JSON), or `InvalidJob` with field errors."""
    spec = FEATURES[feature]
    try:
        # Keys by their camelCase names only, as the JSON Schema lists them: `user_id` is an
        # unknown key here. (Python code may still build a request by field name.)
        model = spec.request_model.model_validate(data, by_alias=True, by_name=False)
    except ValidationError as exc:
        raise InvalidJob.from_validation_error(exc) from exc
    return model.model_dump(mode="json", by_alias=True, exclude_none=True)


def submit_job(
    store: JobStore,
    sender: TaskSender,
    feature: Feature,
    data: Mapping[str, Any],
    *,
    source: JobSource,
    source_ref: str | None = None,
    rerun_of: uuid.UUID | None = None,
    headers: Mapping[str, str] | None = None,
    batch: BatchPolicy | None = None,
) -> tuple[JobRecord, str | None]:
    """Validate, create the job (once per source_ref) and send its task; the row and task id."""
    request = validate_request(feature, data)
    job, task_id, _ = create_and_send(
        store,
        sender,
        feature,
        request,
        source=source,
        source_ref=source_ref,
        rerun_of=rerun_of,
        headers=headers,
        batch=batch,
    )
    return job, task_id


def create_and_send(
    store: JobStore,
    sender: TaskSender,
    feature: Feature,
    request: Mapping[str, Any],
    *,
    source: JobSource,
    source_ref: str | None = None,
    rerun_of: uuid.UUID | None = None,
    headers: Mapping[str, str] | None = None,
    batch: BatchPolicy | None = None,
) -> tuple[JobRecord, str | None, bool]:
    """Create the row for a validated request and send its task; also say if the row is new.

    A job that already exists and is still queued is sent again: the first sender may have died
    between the insert and the send, and running a queued job twice is harmless. With `batch`,
    a job that can wait (`deliverBy`) is created `batched` and no task is sent: the batch
    collector takes it from there.
    """
    job, created = store.create_job(
        NewJob(
            feature=feature,
            user_id=str(request["userId"]),
            request=request,
            source=source,
            source_ref=source_ref,
            rerun_of=rerun_of,
            deliver_by=batch.deliver_by(feature, request) if batch else None,
        )
    )
    if job.status == "batched":
        return job, None, created
    if not created and job.status != "queued":
        return job, None, False
    return job, sender.send(FEATURES[job.feature], job.id, headers), created
