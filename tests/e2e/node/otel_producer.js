// Adds one job the way a NestJS app with OpenTelemetry does: an OpenTelemetry tracer provider
// with the W3C propagator, a BullMQ `Queue` with `telemetry: new BullMQOtel(...)` (bullmq-otel,
// which writes the trace context into the job's `opts.telemetry.metadata`), driven through
// `@vamu/ai-jobs`, optionally with its `traceparent` option (which puts it into the job data).
//
// Input (stdin, JSON): {redis, prefix, queue, name, data, telemetry, traceparent?, timeoutMs}.
// Output (stdout): one JSON line {requestId, returnvalue, spans: [{name, traceId, spanId,
// parentSpanId}]}: the bridge's answer, and the spans of this (the NestJS) side.
'use strict';
const path = require('node:path');
const { pathToFileURL } = require('node:url');
const { trace, propagation } = require('@opentelemetry/api');
const { W3CTraceContextPropagator } = require('@opentelemetry/core');
const {
  BasicTracerProvider, InMemorySpanExporter, SimpleSpanProcessor,
} = require('@opentelemetry/sdk-trace-base');
const { Queue, QueueEvents } = require('bullmq');
const { BullMQOtel } = require('bullmq-otel');
const IORedis = require('ioredis');

const CLIENT = path.resolve(__dirname, '../../../clients/node/dist/index.js');

async function readStdin() {
  const chunks = [];
  for await (const chunk of process.stdin) chunks.push(chunk);
  return JSON.parse(Buffer.concat(chunks).toString('utf8'));
}

async function main() {
  const { VamuAiJobs } = await import(pathToFileURL(CLIENT).href);
  const spec = await readStdin();
  const exporter = new InMemorySpanExporter();
  const provider = new BasicTracerProvider({ spanProcessors: [new SimpleSpanProcessor(exporter)] });
  trace.setGlobalTracerProvider(provider);
  propagation.setGlobalPropagator(new W3CTraceContextPropagator());

  const prefix = spec.prefix || 'bull';
  const connection = new IORedis(spec.redis, { maxRetriesPerRequest: null });
  const queue = new Queue(spec.queue, {
    connection, prefix,
    telemetry: spec.telemetry ? new BullMQOtel({ tracerName: 'nestjs-app' }) : undefined,
  });
  const eventsConnection = new IORedis(spec.redis, { maxRetriesPerRequest: null });
  const events = new QueueEvents(spec.queue, { connection: eventsConnection, prefix });
  await events.waitUntilReady();
  const client = new VamuAiJobs(queue, { queueEvents: events });

  const options = spec.traceparent ? { traceparent: spec.traceparent } : {};
  const enqueued = await client.enqueue(spec.name, spec.data, options);
  const returnvalue = await client.accepted(enqueued, { timeoutMs: spec.timeoutMs || 20000 });
  const spans = exporter.getFinishedSpans().map((s) => ({
    name: s.name,
    traceId: s.spanContext().traceId,
    spanId: s.spanContext().spanId,
    parentSpanId: s.parentSpanContext ? s.parentSpanContext.spanId : null,
  }));
  console.log(JSON.stringify({ requestId: enqueued.requestId, returnvalue, spans }));
  await events.close();
  await queue.close();
  await eventsConnection.quit();
  await connection.quit();
  await provider.shutdown();
}

main().catch((err) => {
  console.error(err && err.stack || err);
  process.exit(1);
});
