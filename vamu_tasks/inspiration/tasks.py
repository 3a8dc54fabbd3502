"""The Celery entry point of "Inspire me": decode the message, run the use case."""

from __future__ import annotations

from typing import Any

from celery import Task, shared_task

from vamu_tasks.bootstrap import Container
from vamu_tasks.domain import FeatureResult, JobRecord
from vamu_tasks.inspiration.service import READY_EVENT, generate_ideas, parse_request
from vamu_tasks.jobs import Handler, cancel_checkpoint
from vamu_tasks.llm.spend import SpendMeter
from vamu_tasks.task_runner import JobRef, TaskOutcome, execute


def make_handler(container: Container, ref: JobRef) -> Handler:
    def handle(job: JobRecord, meter: SpendMeter) -> FeatureResult:
        result = generate_ideas(
            parse_request(job.request),
            context=container.context,
            llm=container.llm(ref.provider, ref.model),
            meter=meter,
            max_output_tokens=container.settings.llm_max_output_tokens,
            checkpoint=cancel_checkpoint(
                container.store, job.id, time_limit_s=container.settings.task_soft_time_limit_s
            ),
        )
        return FeatureResult(result.model_dump(mode="json", exclude_none=True), READY_EVENT)

    return handle


# max_retries=None: the retry budget is RetryPolicy's (task_runner), not Celery's default of 3.
@shared_task(bind=True, name="vamu.inspiration.generate", pydantic=True, max_retries=None)
def generate(self: Task[Any, Any], ref: JobRef) -> TaskOutcome:
    return execute(self, ref, make_handler)
