"""Each feature once against the real vendors, in the mode production uses: `make test-live`.

For each vendor whose key is in the environment (`OPENAI_API_KEY`, `ANTHROPIC_API_KEY`), the
real adapter, built as production builds it (model from `VAMU_OPENAI_MODEL` /
`VAMU_ANTHROPIC_MODEL`, else the `Settings` default; the vendor's own endpoint), runs:

- inspiration: plain structured output;
- the chatbot: a streamed reply;
- the agent: a tool loop over the bundled sample events;
- a fallback: the other vendor is down, the job goes on on this one.

The use cases get the in-memory stores and bundled sample users the unit tests use, so only the
LLM is real. A vendor without its key is skipped, saying which variable is missing. A full run
spends a few cents of real tokens.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import pytest
from pydantic import SecretStr

from tests.support.services import free_port
from vamu_tasks.agent.service import REDACTED, AgentBounds, run_agent
from vamu_tasks.agent.service import parse_request as agent_request
from vamu_tasks.agent.tools import ToolContext
from vamu_tasks.chatbot.service import parse_request as chat_request
from vamu_tasks.chatbot.service import reply_to_message
from vamu_tasks.context.static import StaticEventsClient, StaticUserContextClient
from vamu_tasks.domain import AgentStep, JobRecord, NewJob, Notification
from vamu_tasks.errors import TransientError
from vamu_tasks.inspiration.service import generate_ideas
from vamu_tasks.inspiration.service import parse_request as inspiration_request
from vamu_tasks.llm.anthropic import AnthropicProvider
from vamu_tasks.llm.openai import OpenAIProvider
from vamu_tasks.llm.spend import SpendMeter
from vamu_tasks.retry_policy import PROVIDER_ERRORS, RetryPolicy, decide
from vamu_tasks.settings import Settings
from vamu_tasks.testing.memory import InMemoryChatStore, InMemoryJobStore, RecordingChunkSink

# Up to 8 real model calls for the agent, each allowed 60 s.
pytestmark = pytest.mark.timeout(600)

USER = "u-ada"  # a bundled sample user: London, likes jazz


@dataclass(frozen=True)
class Vendor:
    name: str
    key_variable: str
    model_variable: str
    model_setting: str


VENDORS = [
    Vendor("openai", "OPENAI_API_KEY", "VAMU_OPENAI_MODEL", "openai_model"),
    Vendor("anthropic", "ANTHROPIC_API_KEY", "VAMU_ANTHROPIC_MODEL", "anthropic_model"),
]


def default(setting: str) -> Any:
    """A setting's default, as production runs it (this machine's `.env` is not read)."""
    return Settings.model_fields[setting].default


def build(
    vendor: Vendor, api_key: str, base_url: str | None = None
) -> OpenAIProvider | AnthropicProvider:
    adapter = OpenAIProvider if vendor.name == "openai" else AnthropicProvider
    return adapter(
        api_key=SecretStr(api_key),
        model=os.environ.get(vendor.model_variable) or default(vendor.model_setting),
        base_url=base_url,
        timeout_s=default("llm_timeout_s"),
        max_retries=default("llm_sdk_max_retries"),
        strict_validation=default("llm_strict_validation"),
    )


@dataclass
class Live:
    vendor: Vendor
    key: str
    llm: OpenAIProvider | AnthropicProvider


@pytest.fixture(params=VENDORS, ids=lambda vendor: vendor.name)
def live(request: pytest.FixtureRequest) -> Iterator[Live]:
    """The real adapter of each vendor in turn; skipped when its key is not set."""
    vendor: Vendor = request.param
    key = os.environ.get(vendor.key_variable)
    if not key:
        pytest.skip(f"{vendor.key_variable} is not set: no live {vendor.name} check")
    llm = build(vendor, key)  # no base_url: the vendor's own endpoint
    yield Live(vendor, key, llm)
    llm.close()


def started(jobs: InMemoryJobStore, feature: Any, data: dict[str, Any]) -> JobRecord:
    """A job on its first attempt, as the task runner hands it to the use case."""
    job, _ = jobs.create_job(NewJob(feature, USER, data, "cli"))
    return jobs.start_attempt(job.id)


class RecordedSteps:
    """An in-memory `AgentStepStore` (testing/memory.py has none): the committed steps, the
    first version of each kept, as `SqlAlchemyAgentStore` keeps them."""

    def __init__(self) -> None:
        self.committed: list[AgentStep] = []

    def steps(self, job_id: uuid.UUID) -> list[AgentStep]:
        return [s for s in self.committed if s.job_id == job_id]

    def add_step(self, step: AgentStep, notifications: Sequence[Notification]) -> list[uuid.UUID]:
        if all((s.job_id, s.step) != (step.job_id, step.step) for s in self.committed):
            self.committed.append(step)
        return [note.id for note in notifications]


def test_inspiration_gives_the_requested_number_of_ideas(live: Live) -> None:
    meter = SpendMeter()

    result = generate_ideas(
        inspiration_request({"userId": USER, "count": 3}),
        context=StaticUserContextClient(),
        llm=live.llm,
        meter=meter,
        max_output_tokens=default("llm_max_output_tokens"),
    )

    assert len(result.ideas) == 3
    assert all(idea.title.strip() and idea.description.strip() for idea in result.ideas)
    assert meter.calls in (1, 2)  # one repair is part of the design
    assert meter.spend.usage.input_tokens > 0 and meter.spend.usage.output_tokens > 0


def test_the_chatbot_streams_its_reply_in_chunks_and_stores_it_once(live: Live) -> None:
    jobs = InMemoryJobStore()
    chats = InMemoryChatStore(jobs)
    sink = RecordingChunkSink()
    conversation = f"c-live-{uuid.uuid4().hex[:12]}"
    message = "Any jazz worth seeing in London this week?"
    job = started(
        jobs, "chatbot", {"userId": USER, "conversationId": conversation, "message": message}
    )
    meter = SpendMeter()

    outcome = reply_to_message(
        job,
        chat_request(job.request),
        chats=chats,
        context=StaticUserContextClient(),
        llm=live.llm,
        sink=sink,
        meter=meter,
        history_budget_tokens=default("chat_history_budget_tokens"),
        max_output_tokens=default("chat_max_output_tokens"),
    )

    reply = outcome.result["reply"]
    assert reply.strip()
    stored = [(m.role, m.content) for m in chats.messages(conversation)]
    assert stored == [("user", message), ("assistant", reply)]
    # The first text goes out at once and the rest after it: a real stream is two chunks or more.
    chunks = sink.chunks
    assert len(chunks) >= 2
    assert [c.seq for c in chunks] == list(range(len(chunks)))
    assert "".join(c.delta for c in chunks) == reply
    assert meter.calls == 1


def test_the_agent_answers_after_at_least_one_tool_call(live: Live) -> None:
    jobs = InMemoryJobStore()
    steps = RecordedSteps()
    goal = "Find a jazz event in London in the events list and tell me its title and date."
    job = started(jobs, "agent", {"userId": USER, "goal": goal})
    meter = SpendMeter()

    outcome = run_agent(
        job,
        agent_request(job.request),
        steps=steps,
        llm=live.llm,
        tools=ToolContext(USER, StaticEventsClient(), StaticUserContextClient()),
        meter=meter,
        dispatch=lambda ids: None,
        bounds=AgentBounds(
            default("agent_max_steps"), default("agent_max_tokens"), default("agent_max_seconds")
        ),
        secrets=[live.key],
        max_output_tokens=default("llm_max_output_tokens"),
        max_tool_chars=default("agent_max_tool_result_chars"),
    )

    result = outcome.result
    tool_steps = [s for s in steps.committed if s.kind == "tool"]
    assert "boundHit" not in result, result
    assert result["answer"].strip() and result["answer"] != REDACTED
    assert "jazz" in result["answer"].lower()
    assert any(not s.data["isError"] for s in tool_steps), [s.data for s in tool_steps]
    assert result["steps"] == len(steps.committed)
    assert meter.calls == sum(1 for s in steps.committed if s.kind == "model")


def test_when_the_other_vendor_is_down_the_job_falls_back_to_this_one(live: Live) -> None:
    other = next(v for v in VENDORS if v != live.vendor)
    # The other vendor behind a port nobody listens on: the connection error of an outage.
    # Nothing leaves the machine, so it needs no real key.
    down = build(other, "not-a-real-key", base_url=f"http://127.0.0.1:{free_port()}")
    request = inspiration_request({"userId": USER, "count": 2})
    try:
        with pytest.raises(PROVIDER_ERRORS) as caught:
            generate_ideas(request, context=StaticUserContextClient(), llm=down, meter=SpendMeter())
    finally:
        down.close()
    assert isinstance(caught.value, TransientError)
    # With the retry budget spent on that error, the task runner switches to the fallback.
    policy = RetryPolicy(max_retries=default("job_max_retries"))
    decision = decide(
        policy,
        retries=policy.max_retries,
        error=caught.value,
        current_provider=other.name,
        fallback=live.vendor.name,
        on_fallback=False,
    )
    assert (decision.action, decision.provider) == ("fallback", live.vendor.name)

    result = generate_ideas(
        request,
        context=StaticUserContextClient(),
        llm=live.llm,
        meter=SpendMeter(),
        max_output_tokens=default("llm_max_output_tokens"),
    )

    assert len(result.ideas) == 2
