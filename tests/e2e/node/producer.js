// Adds vamu-tasks jobs the way a NestJS app does with the package `@vamu/ai-jobs`
// (clients/node, compiled to clients/node/dist: `make node-client`), then reports each job's
// outcome as seen from Node.
//
// Input (stdin, JSON): {redis, prefix, queue, sync, jobs: [{name, data, opts, raw}], wait,
// timeoutMs}.
// - async queue: VamuAiJobs.enqueue (inspire / chat / runAgent), then VamuAiJobs.accepted;
// - sync queue (`sync: true`): VamuAiJobs.inspireNow / chatNow / runAgentNow;
// - `raw: true`: plain bullmq `Queue.add(name, data, opts)` + `job.waitUntilFinished`, for what
//   the typed client cannot send (data that is not an object, a BullMQ jobId without requestId).
// `opts` are BullMQ job options (`jobOptions` of the package; its jobId is the requestId).
// Output (stdout): one JSON line per job {index, id, state, returnvalue?, failedReason?,
// error?: {kind, message, jobId?}, attemptsMade?, addedAt, finishedAt}, then {"done": true}.
'use strict';
const { randomUUID } = require('node:crypto');
const path = require('node:path');
const { pathToFileURL } = require('node:url');
const { Queue, QueueEvents, Job } = require('bullmq');
const IORedis = require('ioredis');

const CLIENT = path.resolve(__dirname, '../../../clients/node/dist/index.js');

async function readStdin() {
  const chunks = [];
  for await (const chunk of process.stdin) chunks.push(chunk);
  return JSON.parse(Buffer.concat(chunks).toString('utf8'));
}

const NOW = {
  'inspiration.generate': 'inspireNow',
  'chatbot.reply': 'chatNow',
  'agent.run': 'runAgentNow',
};

async function main() {
  const { VamuAiJobs, VamuJobError } = await import(pathToFileURL(CLIENT).href);
  const spec = await readStdin();
  const timeoutMs = spec.timeoutMs || 20000;
  const connection = new IORedis(spec.redis, { maxRetriesPerRequest: null });
  const queue = new Queue(spec.queue, { connection, prefix: spec.prefix || 'bull' });
  const eventsConnection = new IORedis(spec.redis, { maxRetriesPerRequest: null });
  const events = new QueueEvents(spec.queue, {
    connection: eventsConnection,
    prefix: spec.prefix || 'bull',
  });
  await events.waitUntilReady();
  const client = spec.sync
    ? new VamuAiJobs(queue, { syncQueue: queue, syncQueueEvents: events, queueEvents: events })
    : new VamuAiJobs(queue, { queueEvents: events });

  // Each entry: {index, addedAt, id, wait: () => Promise<returnvalue>}.
  const added = [];
  for (const [index, job] of spec.jobs.entries()) {
    const addedAt = Date.now();
    const options = { jobOptions: job.opts || {} };
    if (job.raw) {
      const j = await queue.add(job.name, job.data, job.opts || {});
      added.push({ index, addedAt, id: j.id, wait: () => j.waitUntilFinished(events, timeoutMs) });
    } else if (spec.sync && spec.wait && NOW[job.name]) {
      // The *Now methods add and wait in one call; the add is done when the job has an id.
      const requestId = job.data.requestId || randomUUID();
      const result = client[NOW[job.name]]({ ...job.data, requestId }, { ...options, timeoutMs });
      result.catch(() => {}); // handled below
      added.push({ index, addedAt, id: requestId, wait: () => result });
    } else {
      const enqueued = await client.enqueue(job.name, job.data, options);
      added.push({
        index, addedAt, id: enqueued.bullmqJobId,
        wait: () => client.accepted(enqueued, { timeoutMs }),
      });
    }
    if (!spec.wait) console.log(JSON.stringify({ index, id: added.at(-1).id, state: 'added', addedAt }));
  }
  if (spec.wait) {
    await Promise.all(added.map(async ({ index, addedAt, id, wait }) => {
      const out = { index, id, addedAt };
      try {
        out.returnvalue = await wait();
        out.state = 'completed';
      } catch (err) {
        const error = err instanceof VamuJobError ? err : VamuJobError.fromWaitError(err);
        out.state = error.kind === 'wait_timeout' ? 'timeout' : 'failed';
        out.failedReason = error.reason;
        out.error = { kind: error.kind, message: error.message };
        if (error.jobId) out.error.jobId = error.jobId;
      }
      out.finishedAt = Date.now();
      const fresh = await Job.fromId(queue, id);
      if (fresh) out.attemptsMade = fresh.attemptsMade;
      console.log(JSON.stringify(out));
    }));
  }
  console.log(JSON.stringify({ done: true }));
  await events.close();
  await queue.close();
  // bullmq leaves connections it was given open: close them so the process can exit.
  await eventsConnection.quit();
  await connection.quit();
}

main().catch((err) => {
  console.error(err && err.stack || err);
  process.exit(1);
});
