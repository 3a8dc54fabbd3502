"""The `agent.run` job's input and result, as NestJS sends and reads them."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter

from vamu_tasks.agent.tools import ProposeCreateEventArgs, ProposeMessageArgs, ProposeRsvpArgs
from vamu_tasks.domain import JobRequest, JobText

Bound = Literal["max_steps", "max_tokens", "max_seconds"]


class AgentRequest(JobRequest):
    """Data of the BullMQ job `agent.run` (camelCase on the wire)."""

    user_id: JobText = Field(min_length=1, max_length=128)
    goal: JobText = Field(min_length=1, max_length=2000)
    request_id: JobText | None = Field(default=None, max_length=255)
    traceparent: JobText | None = Field(default=None, max_length=128)


# A proposal is a state-changing action the agent suggests; the app asks the user before doing
# it. One kind per `propose_*` tool (agent/tools.py), named by `action` (the tool's name
# without `propose_`), with that tool's arguments.


class ProposeRsvpProposal(BaseModel):
    """`propose_rsvp`: RSVP to an event."""

    model_config = ConfigDict(extra="forbid")

    action: Literal["rsvp"]
    arguments: ProposeRsvpArgs


class ProposeCreateEventProposal(BaseModel):
    """`propose_create_event`: create an event."""

    model_config = ConfigDict(extra="forbid")

    action: Literal["create_event"]
    arguments: ProposeCreateEventArgs


class ProposeMessageProposal(BaseModel):
    """`propose_message`: send a message to another user."""

    model_config = ConfigDict(extra="forbid")

    action: Literal["message"]
    arguments: ProposeMessageArgs


Proposal = Annotated[
    ProposeRsvpProposal | ProposeCreateEventProposal | ProposeMessageProposal,
    Field(discriminator="action"),
]
PROPOSAL: TypeAdapter[Proposal] = TypeAdapter(Proposal)


def parse_proposal(data: Mapping[str, Any]) -> Proposal:
    """A proposal as a tool step recorded it (`{action, arguments}`)."""
    return PROPOSAL.validate_python(data)


class AgentResult(BaseModel):
    """The `result` stored on the job row: `{"answer", "steps", "proposals", "boundHit"?}`."""

    model_config = ConfigDict(extra="forbid")

    answer: str
    steps: int
    proposals: list[Proposal]  # always present, [] when there are none
    boundHit: Bound | None = None
