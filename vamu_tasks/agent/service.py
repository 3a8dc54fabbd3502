"""The agent use case: a bounded, audited, resumable tool loop toward the user's goal (no Celery).

Every model call and tool call is committed as a step before the loop goes on. A run that is
redelivered rebuilds its conversation from those steps: it never repeats a committed model
call (or its cost) or a committed tool call.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from pydantic import ValidationError

from vamu_tasks.agent import prompts
from vamu_tasks.agent.schemas import AgentRequest, AgentResult, Bound, Proposal, parse_proposal
from vamu_tasks.agent.tools import TOOLS, ToolContext, run_tool
from vamu_tasks.domain import (
    AgentItem,
    AgentStep,
    AssistantTurn,
    FeatureResult,
    JobRecord,
    Message,
    Notification,
    ToolCall,
    ToolResult,
    ToolsRequest,
    event_id_for,
)
from vamu_tasks.errors import InvalidJob
from vamu_tasks.events import AgentFinishedEvent, AgentStepEvent
from vamu_tasks.guard import contains_secret, quotes_instructions
from vamu_tasks.llm.pricing import cost_usd
from vamu_tasks.llm.spend import SpendMeter
from vamu_tasks.ports import AgentStepStore, LLMProvider

READY_EVENT = "agent-finished"
STEP_EVENT = "agent-step"
REDACTED = "I can't share that. Ask me about events instead."


@dataclass(frozen=True)
class AgentBounds:
    max_steps: int = 8  # model calls per run
    max_tokens: int = 20_000  # input + output over the run
    max_seconds: float = 120.0  # wall clock since the run first started


def parse_request(data: Mapping[str, Any]) -> AgentRequest:
    try:
        return AgentRequest.model_validate(data)
    except ValidationError as exc:
        raise InvalidJob.from_validation_error(exc) from exc


@dataclass
class _Run:
    """The conversation so far, rebuilt from committed steps."""

    items: list[AgentItem]
    steps: int = 0
    model_calls: int = 0
    tokens: int = 0
    pending: list[ToolCall] = field(default_factory=list)
    answer: str | None = None
    last_text: str = ""
    proposals: list[Proposal] = field(default_factory=list)


def _rebuild(goal: str, committed: Sequence[AgentStep]) -> _Run:
    run = _Run(items=[Message("user", goal)])
    for step in committed:
        run.steps = step.step
        data = step.data
        if step.kind == "model":
            calls = tuple(ToolCall(c["id"], c["name"], c["arguments"]) for c in data["calls"])
            run.items.append(AssistantTurn(data["text"], calls))
            run.model_calls += 1
            run.tokens += step.input_tokens + step.output_tokens
            run.pending = list(calls)
            run.last_text = data["text"] or run.last_text
            if not calls:
                run.answer = data["text"]
        else:
            run.items.append(
                ToolResult(data["callId"], data["tool"], data["content"], data["isError"])
            )
            run.pending = [c for c in run.pending if c.call_id != data["callId"]]
            if data.get("proposal"):
                run.proposals.append(parse_proposal(data["proposal"]))
    return run


def guard_answer(answer: str, system: str, secrets: Sequence[str]) -> str:
    """Withhold an answer that quotes the system prompt or contains a secret."""
    if contains_secret(answer, secrets) or quotes_instructions(answer, system):
        return REDACTED
    return answer


def run_agent(
    job: JobRecord,
    request: AgentRequest,
    *,
    steps: AgentStepStore,
    llm: LLMProvider,
    tools: ToolContext,
    meter: SpendMeter,
    dispatch: Callable[[list[uuid.UUID]], None],
    bounds: AgentBounds = AgentBounds(),
    secrets: Sequence[str] = (),
    now: Callable[[], datetime] = lambda: datetime.now(UTC),
    max_output_tokens: int = 1024,
    max_tool_chars: int = 4000,
    checkpoint: Callable[[], None] = lambda: None,
) -> FeatureResult:
    system = prompts.system_prompt(now().date().isoformat())
    run = _rebuild(request.goal, steps.steps(job.id))
    if run.steps == 0:
        # Fail an unknown user up front (user_not_found), not as a tool error mid-run.
        tools.users.get_context(request.user_id)
    specs = tuple(tool.spec for tool in TOOLS.values())

    def commit(kind: Any, data: dict[str, Any], **usage: Any) -> None:
        run.steps += 1
        tool = data["tool"] if kind == "tool" else None
        event = AgentStepEvent.of(job, step=run.steps, kind=kind, tool=tool)
        note = Notification(
            event_id_for(job.id, STEP_EVENT, str(run.steps)),
            STEP_EVENT,
            job.user_id,
            job.id,
            event.payload(),
        )
        dispatch(steps.add_step(AgentStep(job.id, run.steps, kind, data, **usage), [note]))

    bound: Bound | None = None
    while run.answer is None:
        for call in list(run.pending):
            checkpoint()
            outcome = run_tool(call, tools, max_chars=max_tool_chars)
            commit(
                "tool",
                {
                    "callId": call.call_id,
                    "tool": call.name,
                    "arguments": call.arguments,
                    "content": outcome.content,
                    "isError": outcome.is_error,
                    "resultSize": len(outcome.content),
                    "proposal": outcome.proposal,
                },
            )
            run.items.append(ToolResult(call.call_id, call.name, outcome.content, outcome.is_error))
            if outcome.proposal:
                run.proposals.append(parse_proposal(outcome.proposal))
            run.pending.remove(call)
        bound = _bound_hit(run, bounds, job, now())
        if bound is not None:
            break
        checkpoint()
        result = llm.complete_with_tools(
            ToolsRequest(
                system,
                tuple(run.items),
                specs,
                max_output_tokens,
                # The tools and instructions are the same for every user (and day): one key
                # for the feature lets every run read them from one cache.
                cache_key="agent",
                user_id=request.user_id,
            )
        )
        meter.record_usage(result.provider, result.model, result.usage)
        turn = result.turn
        commit(
            "model",
            {
                "text": turn.text,
                "provider": result.provider,
                "model": result.model,
                "calls": [
                    {"id": c.call_id, "name": c.name, "arguments": c.arguments}
                    for c in turn.tool_calls
                ],
            },
            input_tokens=result.usage.input_tokens,
            output_tokens=result.usage.output_tokens,
            cost_usd=cost_usd(result.model, result.usage),
        )
        run.items.append(turn)
        run.model_calls += 1
        run.tokens += result.usage.input_tokens + result.usage.output_tokens
        run.last_text = turn.text or run.last_text
        run.pending = list(turn.tool_calls)
        if not turn.tool_calls:
            run.answer = turn.text
    answer = run.answer if run.answer is not None else _partial(run, bound)
    # Proposals carry model-written text to other people (messages, event descriptions).
    proposals = [p for p in run.proposals if not _withheld(p, system, secrets)]
    final = AgentResult(
        answer=guard_answer(answer, system, secrets),
        steps=run.steps,
        proposals=proposals,
        boundHit=bound,
    )
    return FeatureResult(
        final.model_dump(mode="json", exclude_none=True),
        READY_EVENT,
        AgentFinishedEvent.of(job, status="succeeded").payload(),
    )


def _withheld(proposal: Proposal, system: str, secrets: Sequence[str]) -> bool:
    arguments = proposal.arguments.model_dump(mode="json", exclude_none=True)
    return guard_answer(json.dumps(arguments), system, secrets) == REDACTED


def _bound_hit(run: _Run, bounds: AgentBounds, job: JobRecord, now: datetime) -> Bound | None:
    if run.model_calls >= bounds.max_steps:
        return "max_steps"
    if run.tokens >= bounds.max_tokens:
        return "max_tokens"
    started = job.started_at or now
    if (now - started).total_seconds() >= bounds.max_seconds:
        return "max_seconds"
    return None


def _partial(run: _Run, bound: Bound | None) -> str:
    limit = {"max_steps": "step", "max_tokens": "token", "max_seconds": "time"}.get(
        bound or "max_steps", "step"
    )
    found = f" So far: {run.last_text}" if run.last_text else ""
    return f"I reached my {limit} limit before finishing this goal.{found}"
