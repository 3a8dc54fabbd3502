"""`CelerySender`: sends a feature's task for a job id, showing only ids to Flower."""

from __future__ import annotations

import uuid
from collections.abc import Mapping

from celery import Celery

from vamu_tasks.features import FeatureSpec


class CelerySender:
    def __init__(self, app: Celery) -> None:
        self._app = app

    def send(
        self,
        spec: FeatureSpec,
        job_id: uuid.UUID,
        headers: Mapping[str, str] | None = None,
        *,
        provider: str | None = None,
        model: str | None = None,
    ) -> str:
        ref: dict[str, str] = {"job_id": str(job_id)}
        if provider:
            ref["provider"] = provider
        if model:
            ref["model"] = model
        result = self._app.send_task(
            spec.task_name,
            kwargs={"ref": ref},
            # The Celery task id is the job id: `vamu-tasks cancel` revokes it by the job's id.
            task_id=str(job_id),
            queue=spec.queue,
            headers=dict(headers or {}),
            # What Flower and the logs show: the job id and the feature, never user text.
            argsrepr="()",
            # The feature first: Flower's task list cuts long kwargs off at a fixed width.
            kwargsrepr=f"{{'feature': '{spec.feature}', 'job_id': '{job_id}'}}",
        )
        return str(result.id)
