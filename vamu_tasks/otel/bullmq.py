"""The bridge's span for one BullMQ job, continuing the trace NestJS started.

Two ways a job brings its trace context, tried in this order:

1. `job.opts.telemetry.metadata`, which BullMQ's telemetry add-on (`bullmq-otel`) writes when
   the NestJS queue has `telemetry: new BullMQOtel(...)`: the propagator's carrier
   (`{"traceparent": …, "tracestate": …}`) as JSON text (an object in bullmq-otel 1.x). Redis
   keeps it as the option `tm`, which is what the Python port hands over.
2. A W3C `traceparent` in the job data, which `@vamu/ai-jobs` sets from its `traceparent`
   option.

Neither: the bridge's span starts a new trace.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from typing import Any

from opentelemetry import propagate, trace
from opentelemetry.context import Context
from opentelemetry.trace import Span, SpanKind, Status, StatusCode

from vamu_tasks.otel import provider


def telemetry_carrier(opts: Any) -> dict[str, str] | None:
    """The propagation fields bullmq-otel stored in the job's options, if any."""
    if not isinstance(opts, Mapping):
        return None
    telemetry = opts.get("telemetry")
    metadata = telemetry.get("metadata") if isinstance(telemetry, Mapping) else None
    if metadata is None:
        metadata = opts.get("tm")
    if isinstance(metadata, str):
        try:
            metadata = json.loads(metadata)
        except ValueError:
            return None
    if not isinstance(metadata, Mapping):
        return None
    return {str(key): value for key, value in metadata.items() if isinstance(value, str)}


def parent_context(opts: Any, data: Any) -> Context | None:
    """The trace context the job came with: bullmq-otel's metadata, else `data.traceparent`."""
    carriers = [telemetry_carrier(opts)]
    if isinstance(data, Mapping) and isinstance(data.get("traceparent"), str):
        carriers.append({"traceparent": data["traceparent"]})
    for carrier in carriers:
        if not carrier:
            continue
        context = propagate.extract(carrier)
        if trace.get_current_span(context).get_span_context().is_valid:
            return context
    return None


@contextmanager
def job_span(job: Any, queue: str) -> Iterator[Span]:
    """`process <queue>` (kind CONSUMER) around accepting one job; a no-op span when traces
    are off. A failure marks it with `error.type` and the failedReason BullMQ will show."""
    if not provider.enabled():
        yield trace.INVALID_SPAN
        return
    attributes = {
        "messaging.system": "bullmq",
        "messaging.operation.type": "process",
        "messaging.operation.name": "process",
        "messaging.destination.name": queue,
        "messaging.message.id": str(job.id),
        "bullmq.job.name": str(job.name),
    }
    with provider.tracer().start_as_current_span(
        f"process {queue}",
        context=parent_context(getattr(job, "opts", None), job.data),
        kind=SpanKind.CONSUMER,
        attributes=attributes,
        record_exception=False,
        set_status_on_exception=False,
    ) as current:
        try:
            yield current
        except Exception as exc:
            # The failedReason is written for NestJS to read: safe to show, no user text.
            current.set_attribute("error.type", type(exc).__qualname__)
            current.set_status(Status(StatusCode.ERROR, str(exc)[:500]))
            raise
