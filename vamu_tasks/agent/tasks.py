"""The Celery entry point of the agent: decode the message, run the bounded tool loop."""

from __future__ import annotations

from typing import Any

from celery import Task, shared_task

from vamu_tasks.agent.service import AgentBounds, parse_request, run_agent
from vamu_tasks.agent.tools import ToolContext
from vamu_tasks.bootstrap import Container
from vamu_tasks.domain import FeatureResult, JobRecord
from vamu_tasks.jobs import Handler, cancel_checkpoint
from vamu_tasks.llm.spend import SpendMeter
from vamu_tasks.task_runner import JobRef, TaskOutcome, dispatch_notifications, execute


def handler_for(task: Task[Any, Any]) -> Any:
    def make_handler(container: Container, ref: JobRef) -> Handler:
        settings = container.settings

        def handle(job: JobRecord, meter: SpendMeter) -> FeatureResult:
            request = parse_request(job.request)
            return run_agent(
                job,
                request,
                steps=container.agent_steps,
                llm=container.llm(ref.provider, ref.model),
                tools=ToolContext(request.user_id, container.events, container.context),
                meter=meter,
                # Each step's agent-step event goes out as soon as the step is committed.
                dispatch=lambda ids: dispatch_notifications(task.app, ids),
                bounds=AgentBounds(
                    settings.agent_max_steps, settings.agent_max_tokens, settings.agent_max_seconds
                ),
                secrets=settings.secret_values(),
                max_output_tokens=settings.llm_max_output_tokens,
                max_tool_chars=settings.agent_max_tool_result_chars,
                checkpoint=cancel_checkpoint(
                    container.store, job.id, time_limit_s=container.settings.task_soft_time_limit_s
                ),
            )

        return handle

    return make_handler


# max_retries=None: the retry budget is RetryPolicy's (task_runner), not Celery's default of 3.
@shared_task(bind=True, name="vamu.agent.run", pydantic=True, max_retries=None)
def run(self: Task[Any, Any], ref: JobRef) -> TaskOutcome:
    return execute(self, ref, handler_for(self))
