// The NestJS side of the chaos tests: adds BullMQ jobs with Node's `Queue.add` at a steady pace,
// then follows each job by polling its state (not QueueEvents), so it keeps counting through a
// Redis restart. Uses the packages of tests/e2e/node (NODE_PATH points there).
//
// Input (stdin, JSON): {redis, prefix, queue, jobs: [{name, data, opts}], ratePerSec, wait,
//                       timeoutMs, sentinels?: [[host, port]], sentinelMaster?}
// With `sentinels`, ioredis asks them for the primary (the URL gives the db and password only)
// and follows a failover, as a NestJS producer on Sentinel does.
// Output (stdout): {"added": index, id, addedAt} per job as it is added, then with `wait` one
// {"index", id, state, returnvalue?, failedReason?, attemptsMade, addedAt, finishedAt} per job,
// then {"done": true}. state is completed | failed | timeout.
'use strict';
const { Queue, Job } = require('bullmq');
const IORedis = require('ioredis');

function print(obj) {
  process.stdout.write(JSON.stringify(obj) + '\n');
}

async function readStdin() {
  const chunks = [];
  for await (const chunk of process.stdin) chunks.push(chunk);
  return JSON.parse(Buffer.concat(chunks).toString('utf8'));
}

const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

async function main() {
  const spec = await readStdin();
  // maxRetriesPerRequest null: commands wait through a Redis restart instead of failing.
  const sentinel = spec.sentinels
    ? { sentinels: spec.sentinels.map(([host, port]) => ({ host, port })),
        name: spec.sentinelMaster || 'mymaster' }
    : {};
  const connection = new IORedis(spec.redis, { maxRetriesPerRequest: null, ...sentinel });
  connection.on('error', () => {}); // reconnects by itself; errors are expected in a restart
  const queue = new Queue(spec.queue, { connection, prefix: spec.prefix || 'bull' });
  queue.on('error', () => {});
  const gapMs = spec.ratePerSec ? 1000 / spec.ratePerSec : 0;
  const started = Date.now();
  const added = [];
  for (const [index, job] of spec.jobs.entries()) {
    if (gapMs) {
      const due = started + index * gapMs;
      if (due > Date.now()) await sleep(due - Date.now());
    }
    const addedAt = Date.now();
    const j = await queue.add(job.name, job.data, job.opts || {});
    added.push({ index, id: j.id, addedAt });
    print({ added: index, id: j.id, addedAt });
  }
  if (spec.wait) {
    const deadline = Date.now() + (spec.timeoutMs || 60000);
    const open = new Map(added.map((a) => [a.id, a]));
    while (open.size && Date.now() < deadline) {
      for (const [id, a] of [...open]) {
        let job;
        try {
          job = await Job.fromId(queue, id);
        } catch (err) {
          continue; // Redis away for a moment: ask again next round
        }
        if (!job || !job.finishedOn) continue;
        const state = await job.getState();
        if (state !== 'completed' && state !== 'failed') continue;
        const out = { index: a.index, id, state, attemptsMade: job.attemptsMade,
          addedAt: a.addedAt, finishedAt: job.finishedOn };
        if (state === 'completed') out.returnvalue = job.returnvalue;
        else out.failedReason = job.failedReason;
        print(out);
        open.delete(id);
      }
      if (open.size) await sleep(250);
    }
    for (const a of open.values()) print({ index: a.index, id: a.id, state: 'timeout',
      addedAt: a.addedAt });
  }
  print({ done: true });
  await queue.close();
  await connection.quit();
}

main().catch((err) => {
  process.stderr.write(String((err && err.stack) || err) + '\n');
  process.exit(1);
});
