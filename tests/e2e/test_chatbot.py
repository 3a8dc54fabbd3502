"""Chat replies streamed to a real Socket.IO client, stored once, replayable from Redis."""

from __future__ import annotations

import time
import uuid

import pytest
import redis
import sqlalchemy as sa

from tests.conftest import Stack
from tests.support.socketio import SocketIOListener
from tests.support.worker import wait_for_job
from vamu_tasks.notify.chunks import replay_chunks
from vamu_tasks.testing.fake_llm import DropStream, Error, StreamError, Text, Truncated

pytestmark = pytest.mark.e2e

LONG_REPLY = " ".join(f"word{i}" for i in range(1300))  # about 2,000 tokens


@pytest.fixture
def s(stack: Stack, fake_llm, fake_api) -> Stack:
    return stack


def chat(s: Stack, message: str, *, user: str = "u-ada", conversation: str | None = None,
         provider: str | None = None) -> tuple[uuid.UUID, str]:
    conversation = conversation or f"c-{uuid.uuid4().hex[:10]}"
    data = {"userId": user, "conversationId": conversation, "message": message}
    if provider is None:
        return s.submit(data, feature="chatbot"), conversation
    from vamu_tasks.domain import NewJob
    from vamu_tasks.submit import validate_request

    job, _ = s.store.create_job(NewJob("chatbot", user, validate_request("chatbot", data), "cli"))
    s.app.send_task("vamu.chatbot.reply", kwargs={"ref": {"job_id": str(job.id),
                                                          "provider": provider}},
                    queue="chatbot")
    return job.id, conversation


def messages(s: Stack, conversation: str) -> list[tuple[str, str, int]]:
    engine = sa.create_engine(s.env["VAMU_DATABASE_URL"])
    with engine.connect() as conn:
        rows = conn.execute(sa.text(
            "SELECT role, content, seq FROM chat_messages WHERE conversation_id = :c ORDER BY seq"
        ), {"c": conversation}).all()
    engine.dispose()
    return [tuple(r) for r in rows]


def chunks_of(room: SocketIOListener, job_id: uuid.UUID, attempt: int | None = None) -> list:
    return [e["data"] for e in room.events if e["event"] == "chat-chunk"
            and e["data"]["jobId"] == str(job_id)
            and (attempt is None or e["data"]["attempt"] == attempt)]


@pytest.mark.parametrize("provider", ["openai", "anthropic"])
def test_a_long_reply_reaches_the_room_in_tens_of_ordered_chunks_then_reply_ready(
    s: Stack, provider: str
):
    s.llm.push(Text(LONG_REPLY, chunk_size=8))
    with SocketIOListener(s.app_redis_url, ["u-ada"], key=s.socketio_key) as room:
        job_id, conversation = chat(s, "Plan my Saturday", provider=provider)
        job = wait_for_job(s.store, job_id)
        ready = room.wait_for("chat-reply-ready", user="u-ada")

        assert job.status == "succeeded" and job.provider == provider
        chunks = chunks_of(room, job_id)
        assert [c["seq"] for c in chunks] == list(range(len(chunks)))
        assert "".join(c["delta"] for c in chunks) == LONG_REPLY
        assert 5 <= len(chunks) <= 80, f"{len(chunks)} chunk events for ~1000 deltas"
        assert {c["conversationId"] for c in chunks} == {conversation}
        # The reply is committed before chat-reply-ready is sent.
        assert job.result == {"reply": LONG_REPLY, "messageId": ready["data"]["messageId"],
                              "finishReason": "stop"}
        assert ready["data"] == {"jobId": str(job_id), "conversationId": conversation,
                                 "messageId": job.result["messageId"], "finishReason": "stop"}
    assert messages(s, conversation) == [("user", "Plan my Saturday", 1),
                                         ("assistant", LONG_REPLY, 2)]


def test_a_client_that_reconnects_replays_the_chunks_from_the_redis_stream(s: Stack):
    s.llm.push(Text("a reply worth replaying, piece by piece " * 20, chunk_size=5))
    job_id, _ = chat(s, "hello")
    job = wait_for_job(s.store, job_id)
    client = redis.Redis.from_url(s.app_redis_url)
    try:
        everything = replay_chunks(client, job_id)
        rest = replay_chunks(client, job_id, after_seq=1)
        ttl = client.ttl(f"vamu:chat:{job_id}")
    finally:
        client.close()

    assert "".join(c["delta"] for c in everything) == job.result["reply"]
    assert [c["seq"] for c in rest] == [c["seq"] for c in everything][2:]
    assert 0 < ttl <= 3600


@pytest.mark.parametrize(
    ("provider", "broken"),
    [
        ("openai", DropStream("a partial reply that breaks", after_chunks=2)),
        ("anthropic", DropStream("a partial reply that breaks", after_chunks=2)),
        ("anthropic", StreamError(after_chunks=2, error_type="overloaded_error")),
        ("openai", Truncated("cut off before the end", after_chunks=2)),
        ("anthropic", Truncated("cut off before the end", after_chunks=2)),
    ],
    ids=["openai-drop", "anthropic-drop", "anthropic-error-event", "openai-truncated",
         "anthropic-truncated"],
)
def test_a_broken_stream_is_retried_announced_and_never_stored_as_the_reply(
    s: Stack, provider: str, broken
):
    s.llm.push(broken, Text("the complete answer", chunk_size=4))
    with SocketIOListener(s.app_redis_url, ["u-bruno"], key=s.socketio_key) as room:
        job_id, conversation = chat(s, "again?", user="u-bruno", provider=provider)
        job = wait_for_job(s.store, job_id)
        restart = room.wait_for("chat-restart", user="u-bruno")
        room.wait_for("chat-reply-ready", user="u-bruno")

        assert (job.status, job.attempts) == ("succeeded", 2)
        assert job.result["reply"] == "the complete answer"
        assert restart["data"] == {"jobId": str(job_id), "conversationId": conversation,
                                   "attempt": 2}
        first, second = chunks_of(room, job_id, 1), chunks_of(room, job_id, 2)
        assert first and "".join(c["delta"] for c in second) == "the complete answer"
        assert [c["seq"] for c in second] == list(range(len(second)))
    assert [m[0] for m in messages(s, conversation)] == ["user", "assistant"]
    assert messages(s, conversation)[1][1] == "the complete answer"


def test_a_stream_that_keeps_breaking_fails_the_job_and_stores_no_reply(s: Stack):
    s.llm.set_responder(lambda request: DropStream("never finishes", after_chunks=1))
    with SocketIOListener(s.app_redis_url, ["u-dev"], key=s.socketio_key) as room:
        job_id, conversation = chat(s, "hi", user="u-dev")
        job = wait_for_job(s.store, job_id, timeout=60)
        failed = room.wait_for("ai-job-failed", user="u-dev")

    assert (job.status, job.error_kind) == ("failed", "provider_error")
    assert failed["data"] == {"jobId": str(job_id), "feature": "chatbot",
                              "errorKind": "provider_error"}
    assert [m[0] for m in messages(s, conversation)] == ["user"]


def test_double_texting_is_answered_in_order_without_interleaving(s: Stack):
    s.llm.latency = 0.6
    conversation = f"c-{uuid.uuid4().hex[:10]}"
    s.llm.push(Text("first answer"), Text("second answer"))
    first, _ = chat(s, "first message", conversation=conversation)
    second, _ = chat(s, "second message", conversation=conversation)

    one, two = wait_for_job(s.store, first), wait_for_job(s.store, second)

    assert one.result["reply"] == "first answer" and two.result["reply"] == "second answer"
    assert two.started_at >= one.finished_at
    assert messages(s, conversation) == [
        ("user", "first message", 1), ("assistant", "first answer", 2),
        ("user", "second message", 3), ("assistant", "second answer", 4),
    ]
    second_request = s.llm.requests[1].body["input"]
    assert [m["content"] for m in second_request] == [
        "first message", "first answer", "second message"]


def test_a_redelivered_chat_task_calls_no_llm_and_stores_nothing_twice(s: Stack):
    s.llm.push(Text("only once"))
    job_id, conversation = chat(s, "once please")
    wait_for_job(s.store, job_id)
    calls = len(s.llm.requests)

    from vamu_tasks.features import FEATURES

    task_id = s.sender.send(FEATURES["chatbot"], job_id)
    deadline = time.monotonic() + 15
    while f"{task_id}] succeeded" not in s.worker.log_text():
        assert time.monotonic() < deadline
        time.sleep(0.1)

    assert len(s.llm.requests) == calls
    assert messages(s, conversation) == [("user", "once please", 1),
                                         ("assistant", "only once", 2)]


def test_a_conversation_longer_than_the_model_allows_fails_as_context_length(s: Stack):
    s.llm.push(Error(400, error_type="context_length_exceeded", message="too long"))

    job_id, _ = chat(s, "x" * 4000)

    job = wait_for_job(s.store, job_id)
    assert (job.status, job.error_kind, job.attempts) == ("failed", "context_length", 1)


def test_someone_elses_conversation_is_refused_as_invalid_job(s: Stack):
    s.llm.push(Text("hello ada"))
    job_id, conversation = chat(s, "hi", user="u-ada")
    wait_for_job(s.store, job_id)

    intruder, _ = chat(s, "let me in", user="u-bruno", conversation=conversation)

    job = wait_for_job(s.store, intruder)
    assert (job.status, job.error_kind) == ("failed", "invalid_job")
    assert "belongs to another user" in job.error_message
