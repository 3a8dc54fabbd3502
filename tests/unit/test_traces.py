"""Traces: the on/off rule, the GenAI span of an LLM call, the spans of the ports, and the
trace context a BullMQ job brings (in-memory exporter; the real processes are in
tests/e2e/test_traces.py)."""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator

import pytest
from opentelemetry import trace
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, StatusCode

from vamu_tasks.domain import (
    AssistantTurn,
    LLMRequest,
    Message,
    Notification,
    OutputSchema,
    ToolCall,
    ToolResult,
    ToolsRequest,
    Usage,
)
from vamu_tasks.errors import RateLimited
from vamu_tasks.otel import provider
from vamu_tasks.otel.bullmq import parent_context, telemetry_carrier
from vamu_tasks.otel.genai import CONTENT_ATTRIBUTES, TracedLLM
from vamu_tasks.otel.ports import TracedTransport
from vamu_tasks.testing.memory import RecordingTransport, ScriptedLLM

TRACE_ID = "4bf92f3577b34da6a3ce929d0e0e4736"
PARENT_ID = "00f067aa0ba902b7"
TRACEPARENT = f"00-{TRACE_ID}-{PARENT_ID}-01"
OTHER_TRACEPARENT = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
SECRET_PROMPT = "my flat is at 12 Secret Street"


class Spans:
    def __init__(self) -> None:
        self.exporter = InMemorySpanExporter()
        self.provider = TracerProvider()
        self.provider.add_span_processor(SimpleSpanProcessor(self.exporter))
        self.tracer = self.provider.get_tracer("test")

    @property
    def finished(self) -> list[ReadableSpan]:
        return list(self.exporter.get_finished_spans())

    def one(self) -> ReadableSpan:
        (span,) = self.finished
        return span


@pytest.fixture
def spans() -> Iterator[Spans]:
    s = Spans()
    yield s
    s.provider.shutdown()


def usage() -> Usage:
    return Usage(input_tokens=1200, output_tokens=80, cache_read_tokens=1000,
                 cache_write_tokens=150)


# --- the on/off rule -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("environ", "on"),
    [
        ({}, False),
        ({"OTEL_SERVICE_NAME": "vamu"}, False),
        ({"OTEL_RESOURCE_ATTRIBUTES": "deployment.environment=prod"}, False),
        ({"OTEL_EXPORTER_OTLP_ENDPOINT": ""}, False),
        ({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:4318"}, True),
        ({"OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "http://c:4318/v1/traces"}, True),
        ({"OTEL_TRACES_EXPORTER": "otlp"}, True),
        ({"OTEL_TRACES_EXPORTER": "console"}, True),
        ({"OTEL_TRACES_EXPORTER": "none", "OTEL_EXPORTER_OTLP_ENDPOINT": "http://c:4318"}, False),
        ({"OTEL_SDK_DISABLED": "true", "OTEL_EXPORTER_OTLP_ENDPOINT": "http://c:4318"}, False),
    ],
)
def test_traces_are_on_only_when_an_exporter_or_an_endpoint_is_set(environ, on):
    assert provider.wanted(environ) is on


def test_a_process_without_otel_variables_installs_no_tracer_provider():
    assert provider.start("vamu-test", environ={}) is False
    assert provider.enabled() is False
    assert not isinstance(trace.get_tracer_provider(), TracerProvider)


def test_grpc_is_refused_with_what_to_set_instead():
    with pytest.raises(provider.TracesMisconfigured, match="http/protobuf"):
        provider.build_exporter({"OTEL_EXPORTER_OTLP_PROTOCOL": "grpc"})


def test_an_unknown_exporter_is_refused_naming_the_ones_that_work():
    with pytest.raises(provider.TracesMisconfigured, match=r"otlp .* console, or none"):
        provider.build_exporter({"OTEL_TRACES_EXPORTER": "zipkin"})


@pytest.mark.parametrize(
    ("value", "capture"),
    [(None, False), ("false", False), ("true", True), ("TRUE", True), ("span_only", True)],
)
def test_message_content_is_captured_only_when_the_standard_variable_opts_in(value, capture):
    environ = {} if value is None else {provider.CAPTURE_CONTENT_VARIABLE: value}
    assert provider.capture_content_wanted(environ) is capture


# --- the LLM span --------------------------------------------------------------------------


def structured_request() -> LLMRequest:
    return LLMRequest(
        system="You suggest events.",
        messages=(Message("user", SECRET_PROMPT),),
        output_schema=OutputSchema("event_ideas", {"type": "object"}),
        max_output_tokens=700,
    )


def test_an_llm_call_is_one_client_span_with_the_genai_attributes_and_no_message_content(spans):
    llm = TracedLLM(ScriptedLLM(['{"ideas": []}'], name="openai", usage=usage()), spans.tracer)

    llm.complete(structured_request())

    span = spans.one()
    assert (span.name, span.kind) == ("chat gpt-5-mini", SpanKind.CLIENT)
    attributes = dict(span.attributes or {})
    assert attributes == {
        "gen_ai.operation.name": "chat",
        "gen_ai.provider.name": "openai",
        "gen_ai.request.model": "gpt-5-mini",
        "gen_ai.request.max_tokens": 700,
        "gen_ai.output.type": "json",
        "gen_ai.response.model": "gpt-5-mini",
        "gen_ai.usage.input_tokens": 1200,
        "gen_ai.usage.output_tokens": 80,
        "gen_ai.usage.cache_read.input_tokens": 1000,
        "gen_ai.usage.cache_creation.input_tokens": 150,
        "gen_ai.response.finish_reasons": ("stop",),
    }
    assert SECRET_PROMPT not in json.dumps(attributes)


def test_with_content_capture_the_span_carries_the_prompt_and_the_answer_as_messages(spans):
    llm = TracedLLM(ScriptedLLM(["Jazz at 8."]), spans.tracer, capture_content=True)

    llm.complete(structured_request())

    attributes = spans.one().attributes or {}
    assert json.loads(str(attributes["gen_ai.system_instructions"])) == [
        {"type": "text", "content": "You suggest events."}
    ]
    assert json.loads(str(attributes["gen_ai.input.messages"])) == [
        {"role": "user", "parts": [{"type": "text", "content": SECRET_PROMPT}]}
    ]
    assert json.loads(str(attributes["gen_ai.output.messages"])) == [
        {"role": "assistant", "parts": [{"type": "text", "content": "Jazz at 8."}],
         "finish_reason": "stop"}
    ]


def test_a_tool_step_records_the_tool_calls_as_message_parts_when_content_is_captured(spans):
    inner = ScriptedLLM()
    inner.push_turns(AssistantTurn("", (ToolCall("c1", "search_events", '{"q":"jazz"}'),)))
    llm = TracedLLM(inner, spans.tracer, capture_content=True)
    items = (Message("user", "jazz?"), AssistantTurn("", (ToolCall("c0", "profile", "{}"),)),
             ToolResult("c0", "profile", '{"city":"Leeds"}'))

    llm.complete_with_tools(ToolsRequest(system="agent", items=items, tools=()))

    attributes = spans.one().attributes or {}
    assert attributes["gen_ai.output.type"] == "text"
    assert [m["role"] for m in json.loads(str(attributes["gen_ai.input.messages"]))] == [
        "user", "assistant", "tool"]
    (output,) = json.loads(str(attributes["gen_ai.output.messages"]))
    assert output["parts"] == [{"type": "tool_call", "id": "c1", "name": "search_events",
                                "arguments": '{"q":"jazz"}'}]


def test_a_streamed_reply_is_one_span_with_the_time_to_its_first_chunk(spans):
    llm = TracedLLM(ScriptedLLM(["Here are three concerts."], usage=usage()), spans.tracer)

    events = list(llm.stream(structured_request()))

    span = spans.one()
    attributes = span.attributes or {}
    assert len(events) > 2
    assert attributes["gen_ai.request.stream"] is True
    assert float(str(attributes["gen_ai.response.time_to_first_chunk"])) >= 0
    assert attributes["gen_ai.usage.output_tokens"] == 80
    assert not set(CONTENT_ATTRIBUTES) & set(attributes)


def test_a_failed_call_is_marked_with_its_error_kind_and_not_its_message(spans):
    llm = TracedLLM(ScriptedLLM([RateLimited(f"slow down ({SECRET_PROMPT})")]), spans.tracer)

    with pytest.raises(RateLimited):
        llm.complete(structured_request())

    span = spans.one()
    assert span.status.status_code is StatusCode.ERROR
    assert (span.attributes or {})["error.type"] == "rate_limited"
    shown = str(span.status.description) + json.dumps(dict(span.attributes or {}))
    assert SECRET_PROMPT not in shown
    assert span.events == ()


# --- the ports -----------------------------------------------------------------------------


def test_a_notification_sent_inside_a_task_span_is_its_child_with_the_event_name(spans):
    transport = TracedTransport(RecordingTransport("socketio"), spans.tracer)
    job_id = uuid.uuid4()
    note = Notification(uuid.uuid4(), "inspiration-ready", "u-ada", job_id, {"jobId": str(job_id)})

    with spans.tracer.start_as_current_span("run/vamu.inspiration.generate") as task:
        transport.send(note)

    sent = next(s for s in spans.finished if s.name == "notify socketio")
    assert sent.kind is SpanKind.PRODUCER
    assert sent.parent is not None and sent.parent.span_id == task.get_span_context().span_id
    assert dict(sent.attributes or {}) == {
        "vamu.notify.transport": "socketio",
        "vamu.notification.event": "inspiration-ready",
        "vamu.notification.id": str(note.id),
        "vamu.job.id": str(job_id),
    }


# --- the trace context a BullMQ job brings -------------------------------------------------


def span_context_of(opts, data):
    context = parent_context(opts, data)
    assert context is not None
    found = trace.get_current_span(context).get_span_context()
    return format(found.trace_id, "032x"), format(found.span_id, "016x")


@pytest.mark.parametrize(
    "opts",
    [
        # bullmq-otel 2.x: the carrier as JSON text, as the Python port hands the option over
        {"tm": json.dumps({"traceparent": TRACEPARENT})},
        # decoded by a port that names it as Node does
        {"telemetry": {"metadata": json.dumps({"traceparent": TRACEPARENT})}},
        # bullmq-otel 1.x: the carrier as an object
        {"tm": {"traceparent": TRACEPARENT}},
    ],
)
def test_the_bridge_continues_the_trace_bullmq_otel_wrote_into_the_job_options(opts):
    assert span_context_of(opts, {"userId": "u-ada"}) == (TRACE_ID, PARENT_ID)


def test_without_telemetry_metadata_the_traceparent_in_the_job_data_is_continued():
    assert span_context_of({"attempts": 1}, {"traceparent": TRACEPARENT}) == (TRACE_ID, PARENT_ID)


def test_bullmq_otel_metadata_wins_over_a_traceparent_in_the_data():
    opts = {"tm": json.dumps({"traceparent": TRACEPARENT})}
    assert span_context_of(opts, {"traceparent": OTHER_TRACEPARENT}) == (TRACE_ID, PARENT_ID)


def test_unreadable_metadata_falls_back_to_the_data_and_garbage_starts_a_new_trace():
    assert span_context_of({"tm": "{not json"}, {"traceparent": TRACEPARENT})[0] == TRACE_ID
    assert telemetry_carrier({"tm": "{not json"}) is None
    assert parent_context({"tm": json.dumps({"traceparent": "00-zz"})}, {"traceparent": 7}) is None
    assert parent_context(None, "not an object") is None


# --- housekeeping --------------------------------------------------------------------------


@pytest.mark.parametrize("task", ["vamu.jobs.reap", "vamu.notify.sweep_outbox"])
def test_beats_housekeeping_makes_no_trace_but_what_it_sends_again_starts_one_of_its_own(task):
    from opentelemetry.sdk.trace.sampling import ALWAYS_ON, ParentBased

    from vamu_tasks.otel.sampling import SkipHousekeeping

    exporter = InMemorySpanExporter()
    sdk = TracerProvider(sampler=SkipHousekeeping(ParentBased(ALWAYS_ON)))
    sdk.add_span_processor(SimpleSpanProcessor(exporter))
    tracer = sdk.get_tracer("test")

    with tracer.start_as_current_span(f"apply_async/{task}"):
        with tracer.start_as_current_span(f"run/{task}"):
            with tracer.start_as_current_span("apply_async/vamu.notify.deliver"):
                pass
            with provider.detached():
                tracer.start_span("apply_async/vamu.notify.deliver").end()

    (resent,) = exporter.get_finished_spans()
    assert resent.name == "apply_async/vamu.notify.deliver"
    assert resent.parent is None
    sdk.shutdown()
