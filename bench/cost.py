#!/usr/bin/env python3
"""The cost scenario: what 1,000 jobs cost per feature, with and without the prompt cache.

    .venv/bin/python bench/cost.py           # 1,000 jobs on each vendor (~1 min)
    .venv/bin/python bench/cost.py --quick   # 100 jobs, for CI

A mix of jobs with the product's own prompts and realistic inputs runs through the use cases,
the real adapters and the official SDKs against the fake LLM, whose prompt caches behave like
the vendors' (vamu_tasks/testing/fake_llm/caching.py): 40 % "Inspire me" for 100 active users
(profile, 8 interests, 10 recent events), 40 % chat turns in conversations of 6 turns (messages
of ordinary length, replies of a few sentences), 20 % agent runs of 3 steps (search, read an
event, answer). Each job runs through `run_job`, so its tokens and cost land on its row; the
figures are added up from the rows:

- dollars per 1,000 jobs as run (the cache reads and writes at their prices);
- dollars per 1,000 jobs uncached (the same tokens, all at the full input price);
- input cost as run / input cost uncached (the goal: at most 40 % for chat and agent);
- the share of calls whose prompt reaches the vendor's cache minimum, and the hit rate (cache
  reads / input tokens);
- the batch row: 1,000 (100) "Inspire me" jobs through the batch tier (`cost_batch.py`),
  against the synchronous inspiration cost (the goal: at most 50 %), every job committed and
  notified once.

The fake's answers are the same on both runs; only the vendor differs. Token counts are the
fake's (about four characters a token), so the dollars are an estimate at list prices; the
ratios are what the cache changes. Writes bench/results/<timestamp>-cost.json and prints a
Markdown table.
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import uuid
from collections import defaultdict
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

from pydantic import SecretStr

from vamu_tasks.agent.service import parse_request as agent_request
from vamu_tasks.agent.service import run_agent
from vamu_tasks.agent.tools import ToolContext
from vamu_tasks.chatbot.service import parse_request as chat_request
from vamu_tasks.chatbot.service import reply_to_message
from vamu_tasks.context.static import StaticEventsClient, StaticUserContextClient
from vamu_tasks.domain import AgentStep, FeatureResult, JobFilter, JobRecord, NewJob, Notification
from vamu_tasks.inspiration.service import READY_EVENT, generate_ideas
from vamu_tasks.inspiration.service import parse_request as inspiration_request
from vamu_tasks.jobs import run_job
from vamu_tasks.llm.anthropic import AnthropicProvider
from vamu_tasks.llm.openai import OpenAIProvider
from vamu_tasks.llm.pricing import cost_usd, price_for
from vamu_tasks.llm.spend import SpendMeter
from vamu_tasks.ports import LLMProvider
from vamu_tasks.testing.answers import ideas, ideas_asked
from vamu_tasks.testing.fake_llm import Behaviour, FakeLLMServer, RecordedRequest, Text, Turn
from vamu_tasks.testing.fake_llm import ToolCall as FakeToolCall
from vamu_tasks.testing.fake_llm.caching import (
    ANTHROPIC_MINIMUM,
    OPENAI_MINIMUM,
    tokens,
)
from vamu_tasks.testing.memory import InMemoryChatStore, InMemoryJobStore, RecordingChunkSink

sys.path.insert(0, str(Path(__file__).resolve().parent))
from cost_batch import run_batch_tier

RESULTS = Path(__file__).resolve().parent / "results"
MODELS = {"openai": "gpt-5-mini", "anthropic": "claude-sonnet-4-6"}
KEY = "sk-bench-cost"
INTERESTS = ["jazz", "street food", "tech meetups", "river walks", "salsa", "board games",
             "photography", "craft beer", "climbing", "poetry slams", "markets", "cinema"]
CATEGORIES = ["music", "food", "tech", "outdoors", "dance", "games", "arts", "film"]
CITIES = ["London", "Manchester", "Lisbon", "Berlin", "São Paulo"]


def active_user(n: int) -> dict[str, Any]:
    """A user as the NestJS API returns an active one: a profile and 10 recent events."""
    rng = random.Random(n)
    start = datetime(2026, 11, 1, 19, tzinfo=UTC)
    return {
        "userId": f"u-{n:03}",
        "displayName": f"Member {n:03} {rng.choice(['Okafor', 'Silva', 'Meyer', 'Costa'])}",
        "locale": "en-GB",
        "timezone": "Europe/London",
        "city": rng.choice(CITIES),
        "location": {"lat": 51.5 + rng.random() / 10, "lng": -0.1 + rng.random() / 10},
        "interests": rng.sample(INTERESTS, 8),
        "recentEvents": [
            {
                "id": f"evt-{n:03}-{k}",
                "title": f"{rng.choice(['Late', 'Sunday', 'Open', 'Pop-up'])} "
                f"{rng.choice(INTERESTS).title()} {rng.choice(['Night', 'Session', 'Social'])}",
                "category": rng.choice(CATEGORIES),
                "startsAt": (start - timedelta(days=3 * k)).isoformat(),
            }
            for k in range(10)
        ],
    }


def city_events() -> list[dict[str, Any]]:
    """Events as the API's search returns them, with descriptions of a few sentences."""
    rng = random.Random(7)
    return [
        {
            "id": f"evt-city-{k}",
            "title": f"{rng.choice(INTERESTS).title()} {rng.choice(['Night', 'Social', 'Jam'])}",
            "category": rng.choice(CATEGORIES),
            "startsAt": (datetime(2026, 12, 5, 19, tzinfo=UTC) + timedelta(days=k)).isoformat(),
            "venue": f"{rng.choice(['The Lantern', 'Dock 9', 'Hall 3'])}, {rng.choice(CITIES)}",
            "city": "London",
            "lat": 51.5,
            "lng": -0.1,
            "priceCents": rng.choice([0, 800, 1500]),
            "description": "A friendly evening for newcomers and regulars alike. " * 4,
        }
        for k in range(40)
    ]


CHAT_TURNS = [
    "Hi! I'm free this Friday evening. Anything good near me that isn't too expensive?",
    "The jazz one sounds great. Is it the kind of place I can go alone and meet people?",
    "Nice. What time should I get there, and is there somewhere to eat nearby first?",
    "Could you also find something for Sunday afternoon, ideally outdoors if it's dry?",
    "Perfect. Which of these would be easiest to get to by public transport from Camden?",
    "Thanks! Can you sum up the plan for the weekend in a few lines I can send a friend?",
]
REPLY = (
    "Here are a few options that fit: a relaxed jazz night at The Lantern from 8pm (free "
    "entry before 9), a street food social at Dock 9, and a small board games evening with "
    "a welcoming crowd. All three are easy to join on your own. Want details on any of them?"
)


def respond(request: RecordedRequest) -> Behaviour:
    """Realistic answers, and input tokens counted from the prompt as the vendor would."""
    body = request.body
    prompt = tokens([body.get("system"), body.get("instructions"), body.get("tools"),
                     body.get("messages"), body.get("input")])
    if "format" in json.dumps(body.get("text") or body.get("output_config") or {}):
        return Text.json(ideas(ideas_asked(request)), input_tokens=prompt, output_tokens=350)
    if body.get("tools"):
        results = json.dumps(body).count("function_call_output") + json.dumps(body).count(
            '"tool_result"'
        )
        if results == 0:
            call = FakeToolCall("search_events", {"q": "jazz", "limit": 5})
            return Turn((call,), text="Let me look.", input_tokens=prompt, output_tokens=40)
        if results == 1:
            call = FakeToolCall("get_event", {"eventId": "evt-city-3"})
            return Turn((call,), input_tokens=prompt, output_tokens=30)
        return Text(REPLY, input_tokens=prompt, output_tokens=120)
    return Text(REPLY, input_tokens=prompt, output_tokens=120)


class Steps:
    """An in-memory agent step store: the audit trail, as the database keeps it."""

    def __init__(self) -> None:
        self._steps: dict[uuid.UUID, list[AgentStep]] = defaultdict(list)

    def steps(self, job_id: uuid.UUID) -> list[AgentStep]:
        return list(self._steps[job_id])

    def add_step(self, step: AgentStep, notifications: list[Notification]) -> list[uuid.UUID]:
        if all(s.step != step.step for s in self._steps[step.job_id]):
            self._steps[step.job_id].append(step)
        return []


def provider_for(vendor: str, server: FakeLLMServer) -> LLMProvider:
    if vendor == "openai":
        return OpenAIProvider(api_key=SecretStr(KEY), model=MODELS[vendor],
                              base_url=server.openai_base_url, max_retries=0)
    return AnthropicProvider(api_key=SecretStr(KEY), model=MODELS[vendor],
                             base_url=server.anthropic_base_url, max_retries=0)


def run_vendor(vendor: str, jobs: int) -> dict[str, Any]:
    users = {u["userId"]: u for u in (active_user(n) for n in range(100))}
    context = StaticUserContextClient(users)
    events = StaticEventsClient(city_events())
    store = InMemoryJobStore()
    chats = InMemoryChatStore(store)
    steps = Steps()
    sink = RecordingChunkSink()
    with FakeLLMServer(api_key=KEY, responder=respond) as server:
        llm = provider_for(vendor, server)

        def handler_for(feature: str, data: dict[str, Any]):
            def handle(job: JobRecord, meter: SpendMeter) -> FeatureResult:
                if feature == "inspiration":
                    result = generate_ideas(inspiration_request(data), context=context, llm=llm,
                                            meter=meter)
                    return FeatureResult(result.model_dump(mode="json"), READY_EVENT)
                if feature == "chatbot":
                    return reply_to_message(job, chat_request(data), chats=chats,
                                            context=context, llm=llm, sink=sink, meter=meter)
                tools = ToolContext(data["userId"], events, context)
                return run_agent(job, agent_request(data), steps=steps, llm=llm, tools=tools,
                                 meter=meter, dispatch=lambda ids: None)

            return handle

        plan = []
        user_ids = sorted(users)
        for n in range(jobs * 4 // 10):
            plan.append(("inspiration", {"userId": user_ids[n % 100], "count": 3}))
        for c in range(jobs * 4 // 10 // 6):
            conversation = f"c-{vendor}-{c}"
            for turn in CHAT_TURNS:
                plan.append(("chatbot", {"userId": user_ids[c % 100],
                                         "conversationId": conversation, "message": turn}))
        for n in range(jobs - len(plan)):
            plan.append(("agent", {"userId": user_ids[n % 100],
                                   "goal": "Find me a jazz night this weekend and tell me why."}))
        for feature, data in plan:
            job, _ = store.create_job(NewJob(feature, data["userId"], data, "cli"))  # type: ignore[arg-type]
            outcome = run_job(store, job.id, handler_for(feature, data))
            assert outcome.status == "succeeded", (feature, outcome)
        requests = server.requests
        llm.close()  # type: ignore[attr-defined]
    summary = summarise(vendor, store, requests)
    inspiration = summary["features"]["inspiration"]
    # As many batched "Inspire me" jobs as the run has jobs: the goal is per 1,000 jobs.
    batch = run_batch_tier(vendor, MODELS[vendor], KEY, users, jobs, respond)
    batch["vs_sync"] = round(batch["usd_per_1000_jobs"] / inspiration["usd_per_1000_jobs"], 3)
    summary["batch_inspiration"] = batch
    return summary


def summarise(vendor: str, store: InMemoryJobStore, requests: list[RecordedRequest]) -> dict:
    model = MODELS[vendor]
    price = price_for(model)
    assert price is not None
    minimum = OPENAI_MINIMUM if vendor == "openai" else ANTHROPIC_MINIMUM
    by_feature: dict[str, dict[str, Any]] = {}
    for job in store.list_jobs(JobFilter(limit=1_000_000)):
        line = by_feature.setdefault(job.feature, defaultdict(int))
        line["jobs"] += 1
        line["input"] += job.input_tokens or 0
        line["output"] += job.output_tokens or 0
        line["cache_read"] += job.cache_read_tokens or 0
        line["cache_write"] += job.cache_write_tokens or 0
        line["cost"] += job.cost_usd or Decimal(0)
    calls = defaultdict(lambda: [0, 0])
    for request in requests:
        body = request.body
        feature = ("inspiration" if "Give exactly" in json.dumps(body)
                   else "agent" if body.get("tools") else "chatbot")
        prompt = tokens([body.get("tools"), body.get("system"), body.get("instructions"),
                         body.get("messages"), body.get("input")])
        calls[feature][0] += 1
        calls[feature][1] += prompt >= minimum
    out = {}
    for feature, line in by_feature.items():
        uncached_usage_cost = cost_usd(model, _usage(line["input"], line["output"]))
        assert uncached_usage_cost is not None
        plain = line["input"] - line["cache_read"] - line["cache_write"]
        write = price.cache_write if price.cache_write is not None else price.input
        input_cost = (plain * price.input + line["cache_read"] * price.cache_read
                      + line["cache_write"] * write) / Decimal(1_000_000)
        uncached_input = line["input"] * price.input / Decimal(1_000_000)
        per_1000 = Decimal(1000) / line["jobs"]
        out[feature] = {
            "jobs": line["jobs"],
            "calls": calls[feature][0],
            "usd_per_1000_jobs": float((line["cost"] * per_1000).quantize(Decimal("0.0001"))),
            "usd_per_1000_jobs_uncached": float(
                (uncached_usage_cost * per_1000).quantize(Decimal("0.0001"))
            ),
            "input_cost_ratio": float((input_cost / uncached_input).quantize(Decimal("0.001")))
            if uncached_input else None,
            "calls_over_cache_minimum": round(calls[feature][1] / calls[feature][0], 3),
            "hit_rate": round(line["cache_read"] / line["input"], 3) if line["input"] else 0.0,
            "input_tokens": line["input"],
            "cache_read_tokens": line["cache_read"],
            "cache_write_tokens": line["cache_write"],
            "output_tokens": line["output"],
        }
    return {"vendor": vendor, "model": model, "features": out}


def _usage(inp: int, out: int) -> Any:
    from vamu_tasks.domain import Usage

    return Usage(inp, out)


def table(results: list[dict[str, Any]]) -> str:
    lines = [
        "| vendor (model) | feature | jobs | calls | $ / 1,000 jobs | $ / 1,000 jobs uncached "
        "| input cost vs uncached | calls over the cache minimum | hit rate |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for run in results:
        for feature in ("inspiration", "chatbot", "agent"):
            f = run["features"][feature]
            lines.append(
                f"| {run['vendor']} ({run['model']}) | {feature} | {f['jobs']} | {f['calls']} "
                f"| {f['usd_per_1000_jobs']:.4f} | {f['usd_per_1000_jobs_uncached']:.4f} "
                f"| {f['input_cost_ratio']:.1%} | {f['calls_over_cache_minimum']:.0%} "
                f"| {f['hit_rate']:.0%} |"
            )
    lines += [
        "",
        "| vendor (model) | inspiration | jobs | $ / 1,000 jobs | vs synchronous "
        "| committed | notified once |",
        "|---|---|---:|---:|---:|---:|---:|",
    ]
    for run in results:
        sync, b = run["features"]["inspiration"], run["batch_inspiration"]
        lines.append(
            f"| {run['vendor']} ({run['model']}) | synchronous | {sync['jobs']} "
            f"| {sync['usd_per_1000_jobs']:.4f} | 100 % | {sync['jobs']} | not counted |"
        )
        lines.append(
            f"| {run['vendor']} ({run['model']}) | batch tier | {b['jobs']} "
            f"| {b['usd_per_1000_jobs']:.4f} | {b['vs_sync']:.1%} | {b['committed']} "
            f"| {b['notified_once']} |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="100 jobs a vendor, for CI")
    args = parser.parse_args(argv)
    jobs = 100 if args.quick else 1000
    results = [run_vendor(vendor, jobs) for vendor in ("openai", "anthropic")]
    RESULTS.mkdir(exist_ok=True)
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    path = RESULTS / f"{stamp}-cost{'-quick' if args.quick else ''}.json"
    path.write_text(json.dumps({"jobs_per_vendor": jobs, "runs": results}, indent=2))
    print(table(results))
    for run in results:
        ratio = run["batch_inspiration"]["vs_sync"]
        verdict = "met" if ratio <= 0.5 else "NOT met"
        print(f"[bench] {run['vendor']}: batch-tier inspiration at {ratio:.1%} of synchronous "
              f"(goal <= 50 %): {verdict}")
    print(f"[bench] cost results: {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
