"""The tracer provider: on only when the standard `OTEL_*` variables ask for an exporter.

The rule (docs/operations.md, "Traces"): traces are on when `OTEL_EXPORTER_OTLP_ENDPOINT`,
`OTEL_EXPORTER_OTLP_TRACES_ENDPOINT` or `OTEL_TRACES_EXPORTER` is set, unless
`OTEL_SDK_DISABLED=true` or `OTEL_TRACES_EXPORTER=none`. `OTEL_SERVICE_NAME` alone turns
nothing on. Off, no provider, exporter or instrumentation is installed at all.
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from typing import TYPE_CHECKING

from opentelemetry import context as otel_context
from opentelemetry import propagate, trace

from vamu_tasks.errors import InternalError

if TYPE_CHECKING:
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SpanExporter

log = logging.getLogger(__name__)

TRACER_NAME = "vamu_tasks"
# The standard switch of the GenAI instrumentations: message content is never recorded
# unless it says so.
CAPTURE_CONTENT_VARIABLE = "OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT"
_CAPTURE_ON = frozenset({"true", "span_only", "span_and_event"})

_lock = threading.Lock()
_provider: TracerProvider | None = None
_capture_content = False


class TracesMisconfigured(InternalError):
    default_message = "The OTEL_* variables ask for traces this process cannot send."


def _value(environ: Mapping[str, str], name: str) -> str:
    return (environ.get(name) or "").strip()


def wanted(environ: Mapping[str, str] = os.environ) -> bool:
    """Whether the environment asks for traces (see the module's docstring for the rule)."""
    if _value(environ, "OTEL_SDK_DISABLED").lower() == "true":
        return False
    exporter = _value(environ, "OTEL_TRACES_EXPORTER").lower()
    if exporter == "none":
        return False
    return bool(
        exporter
        or _value(environ, "OTEL_EXPORTER_OTLP_ENDPOINT")
        or _value(environ, "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT")
    )


def capture_content_wanted(environ: Mapping[str, str] = os.environ) -> bool:
    return _value(environ, CAPTURE_CONTENT_VARIABLE).lower() in _CAPTURE_ON


def build_exporter(environ: Mapping[str, str] = os.environ) -> SpanExporter:
    """OTLP over HTTP with protobuf (the SDK reads the endpoint, headers, timeout and
    compression from the environment), or `console` for a laptop."""
    exporter = _value(environ, "OTEL_TRACES_EXPORTER").lower() or "otlp"
    if exporter == "console":
        from opentelemetry.sdk.trace.export import ConsoleSpanExporter

        return ConsoleSpanExporter()
    if exporter != "otlp":
        raise TracesMisconfigured(
            f"OTEL_TRACES_EXPORTER={exporter} is not supported: use otlp (OTLP over HTTP with "
            "protobuf), console, or none."
        )
    protocol = (
        _value(environ, "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL")
        or _value(environ, "OTEL_EXPORTER_OTLP_PROTOCOL")
        or "http/protobuf"
    )
    if protocol != "http/protobuf":
        raise TracesMisconfigured(
            f"OTEL_EXPORTER_OTLP_PROTOCOL={protocol} is not supported: vamu-tasks sends OTLP "
            "over HTTP with protobuf (http/protobuf, the default); point "
            "OTEL_EXPORTER_OTLP_ENDPOINT at the collector's HTTP port (4318)."
        )
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

    return OTLPSpanExporter()


@contextmanager
def detached() -> Iterator[None]:
    """Run outside the current trace: a job or a notification the reaper or the sweeper sends
    again starts a trace of its own (theirs is not recorded). Without traces it changes nothing."""
    token = otel_context.attach(otel_context.Context())
    try:
        yield
    finally:
        otel_context.detach(token)


def start(service_name: str, environ: Mapping[str, str] = os.environ) -> bool:
    """Install this process's tracer provider if the environment asks for traces.

    `service_name` is the default for `service.name`; `OTEL_SERVICE_NAME` and
    `OTEL_RESOURCE_ATTRIBUTES` win. Also instruments Celery, so task messages carry the trace
    from producer to consumer. Returns whether traces are on. Raises `TracesMisconfigured`.
    """
    global _provider, _capture_content
    with _lock:
        if _provider is not None:
            return True
        if not wanted(environ):
            return False
        from opentelemetry.instrumentation.celery import CeleryInstrumentor
        from opentelemetry.sdk.resources import Resource
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.export import BatchSpanProcessor

        exporter = build_exporter(environ)
        defaults = {}
        if not _value(environ, "OTEL_SERVICE_NAME") and "service.name=" not in _value(
            environ, "OTEL_RESOURCE_ATTRIBUTES"
        ):
            defaults["service.name"] = service_name
        from opentelemetry.sdk.trace.sampling import _get_from_env_or_default

        from vamu_tasks.otel.sampling import SkipHousekeeping

        # OTEL_TRACES_SAMPLER as the SDK reads it (parent-based, always on, by default).
        sampler = SkipHousekeeping(_get_from_env_or_default())
        provider = TracerProvider(resource=Resource.create(defaults), sampler=sampler)
        # Batches leave from a thread of their own; after a fork the SDK restarts it.
        provider.add_span_processor(BatchSpanProcessor(exporter))
        trace.set_tracer_provider(provider)
        # The instrumentation ends a publish span only for a task registered in this process
        # (the bridge sends by name): import every task module first.
        from vamu_tasks.app import app

        app.loader.import_default_modules()
        CeleryInstrumentor().instrument(tracer_provider=provider)  # type: ignore[no-untyped-call]
        _provider = provider
        _capture_content = capture_content_wanted(environ)
        log.info("traces on: exporting spans (%s)", type(exporter).__name__)
        return True


def enabled() -> bool:
    return _provider is not None


def capture_content() -> bool:
    """Whether LLM spans may carry the prompts and answers (opted in by the standard variable)."""
    return _capture_content


def tracer() -> trace.Tracer:
    return trace.get_tracer(TRACER_NAME)


def outgoing_headers() -> dict[str, str]:
    """The current trace context as HTTP headers (`traceparent`, `tracestate`)."""
    carrier: dict[str, str] = {}
    propagate.inject(carrier)
    return carrier


def shutdown() -> None:
    """Send the spans still buffered and stop exporting (at the end of the process)."""
    global _provider
    with _lock:
        provider, _provider = _provider, None
    if provider is not None:
        provider.shutdown()
