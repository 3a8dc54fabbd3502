"""OpenTelemetry traces, off unless the standard `OTEL_*` variables ask for an exporter.

- `provider.py`: the on/off rule, the tracer provider with its OTLP/HTTP exporter, Celery's
  instrumentation, and the flush at exit.
- `genai.py`: `TracedLLM`, one span per LLM call after the GenAI semantic conventions.
- `ports.py`: spans around the NestJS API calls, the job commit and each notification sent.
- `bullmq.py`: the bridge's span for one BullMQ job, continuing the trace NestJS sent.

Nothing here is wired in while traces are off: the composition root adds the wrappers only
when `provider.enabled()`, so the job path runs the same code as without this package.
"""
