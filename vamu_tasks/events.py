"""The payloads of the Socket.IO events and the webhook body, as the app receives them.

Every payload is built as one of these models and sent as
`model_dump(mode="json", exclude_none=True)` (`JobEvent.payload`), and
`vamu-tasks contracts export` publishes the same models as JSON Schema for the TypeScript
types: what is sent and what is published cannot drift apart.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from typing import Annotated, Any, Literal, Self, get_args

from pydantic import BaseModel, ConfigDict, Field, WithJsonSchema
from pydantic.json_schema import SkipJsonSchema

from vamu_tasks.domain import Feature, FinishReason, JobRecord
from vamu_tasks.errors import ErrorKind


class JobEvent(BaseModel):
    """What every event payload carries: the job, and the request and rerun it belongs to."""

    model_config = ConfigDict(extra="forbid")

    jobId: uuid.UUID
    # Left out when None (`exclude_none`), so the schema has no null for them.
    requestId: str | SkipJsonSchema[None] = Field(
        default=None,
        description="The job's requestId, when it had one; a rerun's is rerun-<original>-<n>.",
    )
    rerunOf: uuid.UUID | SkipJsonSchema[None] = Field(
        default=None, description="The job this one reruns (vamu-tasks rerun)."
    )

    @classmethod
    def of(cls, job: JobRecord, **fields: Any) -> Self:
        """This event for `job`, with its requestId and rerunOf when it has them."""
        return cls(
            jobId=job.id, requestId=request_id_of(job.request), rerunOf=job.rerun_of, **fields
        )

    def payload(self) -> dict[str, Any]:
        """The JSON the app receives: fields that are None are left out."""
        return self.model_dump(mode="json", exclude_none=True)


def request_id_of(request: Mapping[str, Any]) -> str | None:
    request_id = request.get("requestId")
    return request_id if isinstance(request_id, str) else None


class InspirationReadyEvent(JobEvent):
    """`inspiration-ready`: the ideas are stored in `ai_jobs.result`."""

    feature: Literal["inspiration"]
    status: Literal["succeeded"]


class AiJobFailedEvent(JobEvent):
    """`ai-job-failed`: the job failed or was cancelled (any feature)."""

    feature: Feature
    errorKind: ErrorKind


class ChatChunkEvent(JobEvent):
    """`chat-chunk`: a piece of a chat reply while it is written (best effort)."""

    conversationId: str
    seq: int = Field(description="From 0 within one attempt.")
    delta: str
    attempt: int = Field(description="The job's attempt number, from 1.")


class ChatRestartEvent(JobEvent):
    """`chat-restart`: this attempt starts the reply over; drop earlier attempts' text."""

    conversationId: str
    attempt: int


class ChatReplyReadyEvent(JobEvent):
    """`chat-reply-ready`: the reply is stored."""

    conversationId: str
    messageId: uuid.UUID
    finishReason: FinishReason


class AgentStepEvent(JobEvent):
    """`agent-step`: one step of an agent run is committed."""

    step: int = Field(description="From 1.")
    kind: Literal["model", "tool"]
    tool: str | SkipJsonSchema[None] = Field(
        default=None, description="Tool steps only: the tool the model asked for."
    )


class AgentFinishedEvent(JobEvent):
    """`agent-finished`: the run ended (`failed` and `cancelled` also send `ai-job-failed`)."""

    status: Literal["succeeded", "failed", "cancelled"]


EVENTS: dict[str, type[BaseModel]] = {
    "inspiration-ready": InspirationReadyEvent,
    "ai-job-failed": AiJobFailedEvent,
    "chat-chunk": ChatChunkEvent,
    "chat-restart": ChatRestartEvent,
    "chat-reply-ready": ChatReplyReadyEvent,
    "agent-step": AgentStepEvent,
    "agent-finished": AgentFinishedEvent,
}

# Every event but the chunks, which go only to Socket.IO and the replay stream.
WebhookEvent = Literal[
    "inspiration-ready", "ai-job-failed", "chat-reply-ready", "agent-step", "agent-finished"
]
WEBHOOK_EVENTS: tuple[str, ...] = get_args(WebhookEvent)

# The payload as the outbox stored it (built by the models above when the job ended; not
# validated again, so a notification stored by an older version still goes out).
_ANY_WEBHOOK_PAYLOAD = WithJsonSchema(
    {"anyOf": [{"$ref": f"#/$defs/{EVENTS[name].__name__}"} for name in WEBHOOK_EVENTS]}
)


class WebhookBody(BaseModel):
    """The body POSTed to `VAMU_WEBHOOK_URL`, signed in `X-Vamu-Signature`."""

    model_config = ConfigDict(extra="forbid")

    id: uuid.UUID = Field(description="The event id, the same on every retry: dedupe by it.")
    event: WebhookEvent
    userId: str
    data: Annotated[dict[str, Any], _ANY_WEBHOOK_PAYLOAD]
