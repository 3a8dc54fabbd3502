"""Every feature on both vendors, in its own mode, through a real worker and the strict fake.

The fake LLM refuses what the vendors refuse (vamu_tasks/testing/fake_llm/rules.py), so a job
that succeeds here sent bodies both APIs accept: inspiration's structured output (plain), the
chat reply (streamed), the agent's parallel tool calls and their results (plain). Each feature
also falls back in both directions: OpenAI to Anthropic on the session's worker, Anthropic to
OpenAI on a worker of this module's own.
"""

from __future__ import annotations

import dataclasses
import json
import uuid
from collections.abc import Iterator
from typing import Any

import pytest

from tests.conftest import Stack
from tests.support.services import REDIS_BROKER_DB, delete_keys, free_port
from tests.support.socketio import SocketIOListener
from tests.support.worker import WorkerProcess, sender_app, wait_for_job
from vamu_tasks.domain import Feature
from vamu_tasks.sender import CelerySender
from vamu_tasks.testing.answers import ideas_responder, requested_schema
from vamu_tasks.testing.fake_llm import (
    Behaviour,
    Error,
    MaxTokens,
    RecordedRequest,
    StreamError,
    Text,
    ToolCall,
    Turn,
)

pytestmark = pytest.mark.e2e

API = {"openai": "openai.responses", "anthropic": "anthropic.messages"}
REPLY = "Try the winter jazz night on Friday."
ANSWER = "Winter Jazz Standards on Friday fits your evenings."


def has_tool_results(request: RecordedRequest) -> bool:
    body = request.body
    if request.api == "openai.responses":
        return any(i.get("type") == "function_call_output" for i in body.get("input", []))
    return any(
        block.get("type") == "tool_result"
        for message in body.get("messages", [])
        if isinstance(message["content"], list)
        for block in message["content"]
    )


def responder(failing: str | None):
    """Valid answers for each feature; the `failing` vendor answers 503 to everything."""

    def respond(request: RecordedRequest) -> Behaviour:
        if failing is not None and request.api == API[failing]:
            return Error(503, "The server is overloaded.")
        if requested_schema(request) is not None:
            return ideas_responder(request)
        if request.body.get("tools"):
            if has_tool_results(request):
                return Text(ANSWER)
            # Claude writes a sentence before its tool calls; both vendors call tools in
            # parallel: the agent must answer both, in order, in its next request.
            calls = (ToolCall("search_events", {"q": "jazz", "limit": 3}),
                     ToolCall("get_my_context", {}))
            return Turn(calls, text="Let me look at events and your profile.")
        return Text(REPLY)

    return respond


@pytest.fixture(scope="module")
def anthropic_first(stack: Stack, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    """A second worker, Anthropic first and OpenAI as its fallback, on broker keys of its own."""
    prefix = f"vamu-test-{uuid.uuid4().hex[:8]}:"
    env = {**stack.env, "VAMU_LLM_PROVIDER": "anthropic", "VAMU_LLM_FALLBACK": "openai",
           "VAMU_BROKER_KEY_PREFIX": prefix, "VAMU_METRICS_PORT": str(free_port())}
    log = tmp_path_factory.mktemp("anthropic-first") / "worker.log"
    app = sender_app(env)
    with WorkerProcess(env, queues="inspiration,chatbot,agent,notify", log_path=log,
                       name="anthropic-first") as worker:
        yield dataclasses.replace(stack, env=env, sender=CelerySender(app), app=app,
                                  worker=worker)
    app.close()
    delete_keys(REDIS_BROKER_DB, f"{prefix}*")


@pytest.fixture(params=["openai", "anthropic"])
def primary(request: pytest.FixtureRequest, stack: Stack, fake_llm, fake_api) -> Stack:
    """The stack whose worker tries `request.param` first."""
    if request.param == "openai":
        return stack
    return request.getfixturevalue("anthropic_first")


def data_for(feature: Feature) -> dict[str, Any]:
    if feature == "inspiration":
        return {"userId": "u-ada", "count": 3}
    if feature == "chatbot":
        return {"userId": "u-ada", "conversationId": f"c-{uuid.uuid4().hex[:8]}",
                "message": "Anything good on this week?"}
    return {"userId": "u-ada", "goal": "find me a jazz night this weekend"}


def check_result(feature: Feature, result: Any) -> None:
    if feature == "inspiration":
        assert [idea["title"] for idea in result["ideas"]] == ["Idea 1", "Idea 2", "Idea 3"]
    elif feature == "chatbot":
        assert (result["reply"], result["finishReason"]) == (REPLY, "stop")
    else:
        assert result["answer"] == ANSWER
        # Two model calls, and both tool calls of the first answered: 2 + 2 steps.
        assert result["steps"] == 4


FEATURES: list[Feature] = ["inspiration", "chatbot", "agent"]


@pytest.mark.parametrize("feature", FEATURES)
def test_each_feature_succeeds_on_each_vendor_in_its_own_mode(primary: Stack, feature: Feature):
    provider = primary.env["VAMU_LLM_PROVIDER"]
    primary.llm.set_responder(responder(failing=None))

    job = wait_for_job(primary.store, primary.submit(data_for(feature), feature))

    assert (job.status, job.error_kind) == ("succeeded", None), job.error_message
    assert (job.provider, job.attempts) == (provider, 1)
    check_result(feature, job.result)
    requests = primary.llm.requests
    assert {r.api for r in requests} == {API[provider]}
    # Chat streams; inspiration and the agent do not.
    assert {r.stream for r in requests} == {feature == "chatbot"}


@pytest.mark.parametrize("feature", FEATURES)
def test_each_feature_falls_back_to_the_other_vendor_when_the_first_stays_down(
    primary: Stack, feature: Feature
):
    first = primary.env["VAMU_LLM_PROVIDER"]
    second = primary.env["VAMU_LLM_FALLBACK"]
    primary.llm.set_responder(responder(failing=first))

    job = wait_for_job(primary.store, primary.submit(data_for(feature), feature))

    assert (job.status, job.error_kind) == ("succeeded", None), job.error_message
    assert job.provider == second
    check_result(feature, job.result)
    apis = [r.api for r in primary.llm.requests]
    # Three tries on the first vendor (VAMU_JOB_MAX_RETRIES=2), then the second.
    assert apis[:3] == [API[first]] * 3
    assert set(apis[3:]) == {API[second]}


def agent_steps(s: Stack, job_id: uuid.UUID) -> list[tuple[str, dict[str, Any]]]:
    import sqlalchemy as sa

    engine = sa.create_engine(s.env["VAMU_DATABASE_URL"])
    with engine.connect() as conn:
        rows = conn.execute(
            sa.text("SELECT kind, data FROM agent_steps WHERE job_id = :j ORDER BY step"),
            {"j": job_id},
        ).all()
    engine.dispose()
    return [(r[0], r[1] if isinstance(r[1], dict) else json.loads(r[1])) for r in rows]


def test_the_agent_answers_parallel_tool_calls_in_order_and_keeps_the_text_before_them(
    primary: Stack,
):
    primary.llm.set_responder(responder(failing=None))

    job_id = primary.submit(data_for("agent"), "agent")
    job = wait_for_job(primary.store, job_id)

    assert job.status == "succeeded", job.error_message
    steps = agent_steps(primary, job_id)
    assert [(kind, data.get("tool")) for kind, data in steps] == [
        ("model", None), ("tool", "search_events"), ("tool", "get_my_context"), ("model", None)]
    first_call = steps[0][1]
    assert first_call["text"] == "Let me look at events and your profile."
    assert [c["name"] for c in first_call["calls"]] == ["search_events", "get_my_context"]
    assert [data["callId"] for _, data in steps[1:3]] == [c["id"] for c in first_call["calls"]]
    assert not any(data["isError"] for kind, data in steps if kind == "tool")


def test_a_chat_reply_cut_by_the_token_limit_is_stored_and_marked_length(primary: Stack):
    primary.llm.push(MaxTokens("Friday: the winter jazz night, then dinner at"))
    data = data_for("chatbot")
    with SocketIOListener(primary.app_redis_url, ["u-ada"], key=primary.socketio_key) as room:
        job_id = primary.submit(data, "chatbot")
        job = wait_for_job(primary.store, job_id)
        ready = room.wait_for("chat-reply-ready", user="u-ada",
                              predicate=lambda e: e["data"]["jobId"] == str(job_id))

    assert (job.status, job.attempts) == ("succeeded", 1), job.error_message
    assert job.result is not None
    assert job.result["reply"] == "Friday: the winter jazz night, then dinner at"
    assert job.result["finishReason"] == ready["data"]["finishReason"] == "length"
    [request] = primary.llm.requests
    assert request.stream


def test_an_inspiration_answer_cut_twice_by_the_token_limit_fails_as_schema_invalid(
    primary: Stack,
):
    primary.llm.push(MaxTokens('{"ideas": [{"title": "Jazz'), MaxTokens('{"ideas": ['))

    job = wait_for_job(primary.store, primary.submit(data_for("inspiration"), "inspiration"))

    assert (job.status, job.error_kind, job.attempts) == ("failed", "schema_invalid", 1)
    assert "cut off at the output token limit" in (job.error_message or "")
    assert len(primary.llm.requests) == 2


@pytest.mark.parametrize("kind", ["rate_limit", "server"])
def test_a_failure_inside_a_chat_stream_is_retried_like_the_same_failure_outside_one(
    primary: Stack, kind: str
):
    vendor = primary.env["VAMU_LLM_PROVIDER"]
    error_type = {
        ("openai", "rate_limit"): "rate_limit_exceeded",
        ("openai", "server"): "server_error",
        ("anthropic", "rate_limit"): "rate_limit_error",
        ("anthropic", "server"): "overloaded_error",
    }[(vendor, kind)]
    primary.llm.push(StreamError(after_chunks=2, error_type=error_type, message="try later"),
                     Text(REPLY))

    job = wait_for_job(primary.store, primary.submit(data_for("chatbot"), "chatbot"))

    assert (job.status, job.attempts, job.provider) == ("succeeded", 2, vendor)
    assert job.result is not None and job.result["reply"] == REPLY
