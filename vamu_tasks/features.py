"""What each feature is on the wire: its job name, input model, Celery task and queue."""

from __future__ import annotations

from dataclasses import dataclass

from pydantic import BaseModel

from vamu_tasks.agent.schemas import AgentRequest
from vamu_tasks.chatbot.schemas import ChatRequest
from vamu_tasks.domain import Feature
from vamu_tasks.inspiration.schemas import InspirationRequest


@dataclass(frozen=True)
class FeatureSpec:
    feature: Feature
    job_name: str  # the BullMQ job name NestJS uses
    task_name: str  # the Celery task name (what Flower shows)
    queue: str
    request_model: type[BaseModel]


FEATURES: dict[Feature, FeatureSpec] = {
    "inspiration": FeatureSpec(
        "inspiration",
        "inspiration.generate",
        "vamu.inspiration.generate",
        "inspiration",
        InspirationRequest,
    ),
    "chatbot": FeatureSpec(
        "chatbot", "chatbot.reply", "vamu.chatbot.reply", "chatbot", ChatRequest
    ),
    "agent": FeatureSpec("agent", "agent.run", "vamu.agent.run", "agent", AgentRequest),
}

BY_JOB_NAME: dict[str, FeatureSpec] = {spec.job_name: spec for spec in FEATURES.values()}

NOTIFY_QUEUE = "notify"
DELIVER_TASK = "vamu.notify.deliver"
SWEEP_TASK = "vamu.notify.sweep_outbox"
REAP_TASK = "vamu.jobs.reap"
