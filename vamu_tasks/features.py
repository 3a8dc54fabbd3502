"""What each feature is on the wire: its job name, input and result models, Celery task, queue."""

from __future__ import annotations

from dataclasses import dataclass

from pydantic import BaseModel

from vamu_tasks.agent.schemas import AgentRequest, AgentResult
from vamu_tasks.chatbot.schemas import ChatReplyResult, ChatRequest
from vamu_tasks.domain import Feature
from vamu_tasks.inspiration.schemas import InspirationRequest, InspirationResult


@dataclass(frozen=True)
class FeatureSpec:
    feature: Feature
    job_name: str  # the BullMQ job name NestJS uses
    task_name: str  # the Celery task name (what Flower shows)
    queue: str
    request_model: type[BaseModel]
    result_model: type[BaseModel]  # the shape of `ai_jobs.result` once it succeeded


FEATURES: dict[Feature, FeatureSpec] = {
    "inspiration": FeatureSpec(
        "inspiration",
        "inspiration.generate",
        "vamu.inspiration.generate",
        "inspiration",
        InspirationRequest,
        InspirationResult,
    ),
    "chatbot": FeatureSpec(
        "chatbot", "chatbot.reply", "vamu.chatbot.reply", "chatbot", ChatRequest, ChatReplyResult
    ),
    "agent": FeatureSpec(
        "agent", "agent.run", "vamu.agent.run", "agent", AgentRequest, AgentResult
    ),
}

BY_JOB_NAME: dict[str, FeatureSpec] = {spec.job_name: spec for spec in FEATURES.values()}

NOTIFY_QUEUE = "notify"
DELIVER_TASK = "vamu.notify.deliver"
SWEEP_TASK = "vamu.notify.sweep_outbox"
REAP_TASK = "vamu.jobs.reap"
BATCH_TASK = "vamu.batches.tick"
