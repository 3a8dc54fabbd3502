#!/usr/bin/env python3
"""What traces cost when they are off, and what one span costs when they are on.

    .venv/bin/python bench/otel_off.py

Off (no OTEL_* variable): the composition root installs no wrapper, so an LLM call, an API
call, a commit and a notification run exactly the code they ran before traces existed. What
is left per BullMQ job is the bridge's `job_span` (a no-op span when off) and the copy of the
context its thread pool call runs in. This prints, per call, in microseconds (best of 5 rounds
of 100,000):

- `llm call, off`: `Container.llm()`'s provider (no wrapper) answering from a script;
- `llm call, TracedLLM on`: the same call through `TracedLLM` with a real SDK provider whose
  exporter drops the spans (the cost of making a GenAI span, for comparison);
- `bridge per job, off`: `job_span` entered and left, plus `contextvars.copy_context()`;
- `bridge per job, before`: what the same lines cost without them (`trace_context` alone).
"""

from __future__ import annotations

import contextvars
import timeit
from collections.abc import Callable, Sequence
from types import SimpleNamespace

from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor, SpanExporter, SpanExportResult

from vamu_tasks.domain import LLMRequest, LLMResult, Message, Usage
from vamu_tasks.otel import provider
from vamu_tasks.otel.bullmq import job_span
from vamu_tasks.otel.genai import TracedLLM
from vamu_tasks.tracing import trace_context

ROUNDS, NUMBER = 5, 100_000


class Answer:
    name, model = "openai", "gpt-5-mini"
    result = LLMResult("ok", "openai", "gpt-5-mini", Usage(1000, 50, 800, 0), "stop")

    def complete(self, request: LLMRequest) -> LLMResult:
        return self.result


class Drop(SpanExporter):
    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        return SpanExportResult.SUCCESS


def best_us(stmt: Callable[[], object]) -> float:
    return min(timeit.repeat(stmt, number=NUMBER, repeat=ROUNDS)) / NUMBER * 1e6


def main() -> None:
    assert not provider.enabled(), "run without OTEL_* variables"
    request = LLMRequest(system="s", messages=(Message("user", "hi"),))
    bare = Answer()
    sdk = TracerProvider()
    sdk.add_span_processor(SimpleSpanProcessor(Drop()))
    traced = TracedLLM(Answer(), sdk.get_tracer("bench"))
    job = SimpleNamespace(id="1", name="inspiration.generate", data={"userId": "u"}, opts={})
    fields = {"requestId": "r-1", "bullmqJob": "vamu-ai/1"}

    def bridge_before() -> None:
        with trace_context(fields):
            pass

    def bridge_off() -> None:
        with trace_context(fields), job_span(job, "vamu-ai"):
            contextvars.copy_context()

    rows = [
        ("llm call, off", best_us(lambda: bare.complete(request))),
        ("llm call, TracedLLM on", best_us(lambda: traced.complete(request))),
        ("bridge per job, before", best_us(bridge_before)),
        ("bridge per job, off", best_us(bridge_off)),
    ]
    print("| what | µs per call |\n|---|---|")
    for name, value in rows:
        print(f"| {name} | {value:.2f} |")
    print(f"\nadded per BullMQ job with traces off: {rows[3][1] - rows[2][1]:.2f} µs")
    sdk.shutdown()


if __name__ == "__main__":
    main()
