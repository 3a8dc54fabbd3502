"""The `chatbot.reply` job's input and result, as NestJS sends and reads them."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field

from vamu_tasks.domain import FinishReason, JobRequest, JobText


class ChatRequest(JobRequest):
    """Data of the BullMQ job `chatbot.reply` (camelCase on the wire)."""

    user_id: JobText = Field(min_length=1, max_length=128)
    conversation_id: JobText = Field(min_length=1, max_length=128)
    message: JobText = Field(min_length=1, max_length=4000)
    request_id: JobText | None = Field(default=None, max_length=255)
    traceparent: JobText | None = Field(default=None, max_length=128)


class ChatReplyResult(BaseModel):
    """The `result` stored on the job row: `{"reply", "messageId", "finishReason"}`."""

    model_config = ConfigDict(extra="forbid")

    reply: str
    messageId: str
    # "length": the output token limit cut the reply (stored and shown, but not complete).
    # Rows stored before the field existed have none: read that as "stop".
    finishReason: FinishReason = "stop"
