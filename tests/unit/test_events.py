"""Every event payload and the webhook body are built from the models NestJS's types come from,
and name the request and the rerun they belong to."""

from __future__ import annotations

import json
import uuid
from collections.abc import Sequence
from typing import Any

import msgpack
import pytest
from pydantic import ValidationError

from vamu_tasks.agent.schemas import (
    PROPOSAL,
    AgentResult,
    ProposeCreateEventProposal,
    ProposeMessageProposal,
    ProposeRsvpProposal,
)
from vamu_tasks.agent.service import READY_EVENT as AGENT_READY
from vamu_tasks.agent.service import STEP_EVENT, run_agent
from vamu_tasks.agent.service import parse_request as agent_request
from vamu_tasks.agent.tools import TOOLS, ToolContext
from vamu_tasks.chatbot.service import READY_EVENT as CHAT_READY
from vamu_tasks.chatbot.service import parse_request as chat_request
from vamu_tasks.chatbot.service import reply_to_message
from vamu_tasks.context.static import StaticEventsClient, StaticUserContextClient
from vamu_tasks.domain import (
    AgentStep,
    AssistantTurn,
    Feature,
    JobRecord,
    NewJob,
    Notification,
    ToolCall,
    event_id_for,
)
from vamu_tasks.events import (
    EVENTS,
    WEBHOOK_EVENTS,
    AiJobFailedEvent,
    InspirationReadyEvent,
    WebhookBody,
)
from vamu_tasks.inspiration.service import READY_EVENT as INSPIRATION_READY
from vamu_tasks.jobs import (
    FAILED_EVENT,
    FINISHED_EVENTS,
    failed_notification,
    failure_notifications,
    ready_notification,
)
from vamu_tasks.llm.spend import SpendMeter
from vamu_tasks.notify.chunks import RedisChunkSink
from vamu_tasks.notify.transports import webhook_body
from vamu_tasks.testing.memory import InMemoryChatStore, InMemoryJobStore, ScriptedLLM

USER = "u-ada"
ORIGINAL = uuid.UUID("0b7f3c1e-4a5d-4e6f-8a9b-0c1d2e3f4a5b")
# (requestId in the job's data, rerun_of of its row): a plain job, one NestJS named, a rerun.
CORRELATIONS = [(None, None), ("req-42", None), (f"rerun-{ORIGINAL}-1", ORIGINAL)]


def new_job(
    store: InMemoryJobStore,
    feature: Feature,
    data: dict[str, Any],
    request_id: str | None,
    rerun_of: uuid.UUID | None,
) -> JobRecord:
    request = {"userId": USER, **data}
    if request_id is not None:
        request["requestId"] = request_id
    job, _ = store.create_job(NewJob(feature, USER, request, "bullmq", rerun_of=rerun_of))
    return store.start_attempt(job.id)


class RecordingRedis:
    """Enough of redis-py for `RedisChunkSink`: the stream entries and the published emits."""

    def __init__(self) -> None:
        self.streamed: list[dict[str, str]] = []
        self.emitted: list[tuple[str, dict[str, Any]]] = []

    def pipeline(self, transaction: bool = True) -> RecordingRedis:
        return self

    def xadd(self, key: str, fields: dict[str, str], **_: Any) -> None:
        self.streamed.append(fields)

    def expire(self, key: str, seconds: int) -> None:
        pass

    def execute(self) -> list[Any]:
        return []

    def publish(self, channel: str, message: bytes) -> int:
        event, data = msgpack.unpackb(message)[1]["data"]
        self.emitted.append((event, data))
        return 1


class RecordedSteps:
    """An in-memory `AgentStepStore` that keeps the notifications committed with each step."""

    def __init__(self) -> None:
        self.committed: list[AgentStep] = []
        self.notes: list[Notification] = []

    def steps(self, job_id: uuid.UUID) -> list[AgentStep]:
        return [s for s in self.committed if s.job_id == job_id]

    def add_step(self, step: AgentStep, notifications: Sequence[Notification]) -> list[uuid.UUID]:
        self.committed.append(step)
        self.notes.extend(notifications)
        return [note.id for note in notifications]


def inspiration_events(request_id: str | None, rerun_of: uuid.UUID | None) -> list[Any]:
    store = InMemoryJobStore()
    job = new_job(store, "inspiration", {}, request_id, rerun_of)
    return [ready_notification(job, INSPIRATION_READY), failed_notification(job, "timeout")]


def chat_reply(request_id: str | None, rerun_of: uuid.UUID | None) -> tuple[RecordingRedis, Any]:
    """A reply on its second attempt, streamed through `RedisChunkSink`."""
    store = InMemoryJobStore()
    data = {"conversationId": f"c-{uuid.uuid4().hex[:8]}", "message": "Any jazz tonight?"}
    job = new_job(store, "chatbot", data, request_id, rerun_of)
    job = store.start_attempt(job.id)
    redis = RecordingRedis()
    outcome = reply_to_message(
        job,
        chat_request(job.request),
        chats=InMemoryChatStore(store),
        context=StaticUserContextClient(),
        llm=ScriptedLLM(["Ezra Collective play the Roundhouse at nine."]),
        sink=RedisChunkSink(redis),  # type: ignore[arg-type]
        meter=SpendMeter(),
    )
    return redis, outcome


def chat_events(request_id: str | None, rerun_of: uuid.UUID | None) -> list[Any]:
    """chat-restart, the chunks, then chat-reply-ready."""
    redis, outcome = chat_reply(request_id, rerun_of)
    assert [event for event, _ in redis.emitted][:2] == ["chat-restart", "chat-chunk"]
    return [*redis.emitted, (outcome.ready_event, outcome.ready_data)]


def agent_events(request_id: str | None, rerun_of: uuid.UUID | None) -> list[Any]:
    """A run with one proposal (model, tool, model), then the same run failing."""
    store = InMemoryJobStore()
    job = new_job(store, "agent", {"goal": "jazz this weekend"}, request_id, rerun_of)
    llm = ScriptedLLM()
    rsvp = ToolCall("call-1", "propose_rsvp", '{"eventId": "evt-ldn-winter-jazz"}')
    llm.push_turns(AssistantTurn("", (rsvp,)), "I proposed an RSVP.")
    steps = RecordedSteps()
    outcome = run_agent(
        job,
        agent_request(job.request),
        steps=steps,
        llm=llm,
        tools=ToolContext(USER, StaticEventsClient(), StaticUserContextClient()),
        meter=SpendMeter(),
        dispatch=lambda ids: None,
    )
    assert outcome.ready_data is not None
    return [
        *steps.notes,
        (outcome.ready_event, outcome.ready_data),
        *failure_notifications(job, "cancelled", "cancelled"),
    ]


def sent(events: list[Any]) -> list[tuple[str, dict[str, Any]]]:
    return [(e.event, dict(e.data)) if isinstance(e, Notification) else e for e in events]


BUILDERS = [inspiration_events, chat_events, agent_events]


@pytest.mark.parametrize("build", BUILDERS)
@pytest.mark.parametrize(("request_id", "rerun_of"), CORRELATIONS)
def test_every_payload_is_its_events_model_with_the_jobs_request_id_and_rerun(
    build: Any, request_id: str | None, rerun_of: uuid.UUID | None
) -> None:
    payloads = sent(build(request_id, rerun_of))

    assert payloads
    for event, payload in payloads:
        model = EVENTS[event].model_validate(payload)
        assert model.model_dump(mode="json", exclude_none=True) == payload
        assert payload.get("requestId") == request_id, event
        assert payload.get("rerunOf") == (str(rerun_of) if rerun_of else None), event
        # Absent rather than null: nothing the app receives is null.
        assert None not in payload.values(), event


def test_every_event_the_code_sends_has_a_model() -> None:
    sent_by_code = {
        INSPIRATION_READY,
        FAILED_EVENT,
        CHAT_READY,
        AGENT_READY,
        STEP_EVENT,
        "chat-chunk",
        "chat-restart",
        *FINISHED_EVENTS.values(),
    }

    assert set(EVENTS) == sent_by_code
    assert all(
        event in EVENTS for build in BUILDERS for event, _ in sent(build(None, None))
    )


def test_the_webhook_carries_every_event_but_the_chat_chunks() -> None:
    assert set(WEBHOOK_EVENTS) == set(EVENTS) - {"chat-chunk", "chat-restart"}


def test_payloads_without_correlation_are_the_json_they_were() -> None:
    store = InMemoryJobStore()
    job = new_job(store, "inspiration", {}, None, None)

    assert ready_notification(job, INSPIRATION_READY).data == {
        "jobId": str(job.id),
        "feature": "inspiration",
        "status": "succeeded",
    }
    assert failed_notification(job, "timeout").data == {
        "jobId": str(job.id),
        "feature": "inspiration",
        "errorKind": "timeout",
    }


def test_the_replay_stream_entries_are_the_events_as_strings() -> None:
    redis, _ = chat_reply("req-42", ORIGINAL)

    assert len(redis.streamed) == len(redis.emitted)
    for entry, (event, payload) in zip(redis.streamed, redis.emitted, strict=True):
        assert entry == {"event": event, **{key: str(value) for key, value in payload.items()}}
        assert entry["requestId"] == "req-42" and entry["rerunOf"] == str(ORIGINAL)


def test_the_closed_sets_are_checked_when_a_payload_is_built() -> None:
    job_id = uuid.uuid4()

    with pytest.raises(ValidationError):
        AiJobFailedEvent(jobId=job_id, feature="inspiration", errorKind="exploded")
    with pytest.raises(ValidationError):
        InspirationReadyEvent(jobId=job_id, feature="chatbot", status="succeeded")
    with pytest.raises(ValidationError):
        InspirationReadyEvent(jobId=job_id, feature="inspiration", status="succeeded", extra=1)


@pytest.mark.parametrize(("request_id", "rerun_of"), CORRELATIONS)
def test_the_webhook_body_is_id_event_user_id_and_the_payload_as_stored(
    request_id: str | None, rerun_of: uuid.UUID | None
) -> None:
    store = InMemoryJobStore()
    job = new_job(store, "inspiration", {}, request_id, rerun_of)
    note = ready_notification(job, INSPIRATION_READY)

    body = webhook_body(note)

    assert json.loads(body) == {
        "id": str(note.id),
        "event": "inspiration-ready",
        "userId": USER,
        "data": dict(note.data),
    }
    assert WebhookBody.model_validate_json(body).data == note.data


def test_the_webhook_body_is_compact_json_in_the_order_id_event_user_id_data() -> None:
    job_id = uuid.uuid4()
    data = {"jobId": str(job_id), "feature": "inspiration", "status": "succeeded"}
    note = Notification(
        event_id_for(job_id, INSPIRATION_READY), INSPIRATION_READY, USER, job_id, data
    )

    assert webhook_body(note) == (
        f'{{"id":"{note.id}","event":"inspiration-ready","userId":"u-ada",'
        f'"data":{{"jobId":"{job_id}","feature":"inspiration","status":"succeeded"}}}}'
    ).encode()


def test_there_is_one_proposal_kind_per_propose_tool_with_that_tools_arguments() -> None:
    kinds = [ProposeRsvpProposal, ProposeCreateEventProposal, ProposeMessageProposal]
    by_action = {kind.model_fields["action"].annotation.__args__[0]: kind for kind in kinds}
    tools = {t.name.removeprefix("propose_"): t for t in TOOLS.values() if t.is_proposal}

    assert set(by_action) == set(tools)
    for action, kind in by_action.items():
        assert kind.model_fields["arguments"].annotation is tools[action].args


def test_a_proposal_is_read_by_its_action_and_written_back_as_the_same_json() -> None:
    recorded = {
        "action": "create_event",
        "arguments": {"title": "Jazz night", "startsAt": "2026-11-27T20:00:00Z"},
    }

    proposal = PROPOSAL.validate_python(recorded)
    result = AgentResult(answer="Done.", steps=3, proposals=[proposal])

    assert isinstance(proposal, ProposeCreateEventProposal)
    assert result.model_dump(mode="json", exclude_none=True) == {
        "answer": "Done.",
        "steps": 3,
        "proposals": [recorded],
    }
    with pytest.raises(ValidationError):
        PROPOSAL.validate_python({"action": "rsvp", "arguments": {"title": "no event id"}})
