// Adds BullMQ jobs exactly as NestJS's @nestjs/bullmq producer does (Queue.add), then reports
// each job's outcome as seen from Node (QueueEvents + job.waitUntilFinished).
// Input (stdin, JSON): {redis, prefix, queue, jobs: [{name, data, opts}], wait, timeoutMs}
// Output (stdout): one JSON line per job {index, id, state, returnvalue?, failedReason?,
// attemptsMade?, addedAt, finishedAt}, then {"done": true}.
'use strict';
const { Queue, QueueEvents, Job } = require('bullmq');
const IORedis = require('ioredis');

async function readStdin() {
  const chunks = [];
  for await (const chunk of process.stdin) chunks.push(chunk);
  return JSON.parse(Buffer.concat(chunks).toString('utf8'));
}

async function main() {
  const spec = await readStdin();
  const connection = new IORedis(spec.redis, { maxRetriesPerRequest: null });
  const queue = new Queue(spec.queue, { connection, prefix: spec.prefix || 'bull' });
  const eventsConnection = new IORedis(spec.redis, { maxRetriesPerRequest: null });
  const events = new QueueEvents(spec.queue, {
    connection: eventsConnection,
    prefix: spec.prefix || 'bull',
  });
  await events.waitUntilReady();
  const added = [];
  for (const [index, job] of spec.jobs.entries()) {
    const addedAt = Date.now();
    const j = await queue.add(job.name, job.data, job.opts || {});
    added.push({ index, job: j, addedAt });
    if (!spec.wait) console.log(JSON.stringify({ index, id: j.id, state: 'added', addedAt }));
  }
  if (spec.wait) {
    await Promise.all(added.map(async ({ index, job, addedAt }) => {
      const out = { index, id: job.id, addedAt };
      try {
        out.returnvalue = await job.waitUntilFinished(events, spec.timeoutMs || 20000);
        out.state = 'completed';
      } catch (err) {
        const message = String(err && err.message || err);
        out.state = message.includes('timed out before finishing') ? 'timeout' : 'failed';
        out.failedReason = message;
      }
      out.finishedAt = Date.now();
      const fresh = await Job.fromId(queue, job.id);
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
