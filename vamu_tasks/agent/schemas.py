"""The `agent.run` job's input and result, as NestJS sends and reads them."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, Field

from vamu_tasks.domain import JobRequest, JobText

Bound = Literal["max_steps", "max_tokens", "max_seconds"]


class AgentRequest(JobRequest):
    """Data of the BullMQ job `agent.run` (camelCase on the wire)."""

    user_id: JobText = Field(min_length=1, max_length=128)
    goal: JobText = Field(min_length=1, max_length=2000)
    request_id: JobText | None = Field(default=None, max_length=255)
    traceparent: JobText | None = Field(default=None, max_length=128)


class Proposal(BaseModel):
    """A state-changing action the agent suggests; the app asks the user before doing it."""

    action: str
    arguments: dict[str, Any]


class AgentResult(BaseModel):
    """The `result` stored on the job row: `{"answer", "steps", "proposals"?, "boundHit"?}`."""

    answer: str
    steps: int
    proposals: list[Proposal] = Field(default_factory=list)
    boundHit: Bound | None = None
