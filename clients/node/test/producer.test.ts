// VamuAiJobs on a stand-in Queue: ids, retention, traceparent, errors. (The e2e tests drive the
// real bridge through it: tests/e2e/node/producer.js.)
import assert from 'node:assert/strict';
import { test } from 'node:test';

import type { Queue, QueueEvents } from 'bullmq';

import { DEFAULT_RETENTION, VamuAiJobs, VamuJobError } from '@vamu/ai-jobs';

const JOB = '5b1e2c3d-4e5f-4a6b-8c7d-9e0f1a2b3c4d';
type Added = { name: string; data: Record<string, unknown>; opts: Record<string, unknown> };

function fakeQueue(name: string, outcome: () => Promise<unknown>) {
  const added: Added[] = [];
  const queue = {
    name,
    async add(jobName: string, data: Record<string, unknown>, opts: Record<string, unknown>) {
      added.push({ name: jobName, data, opts });
      return { id: opts.jobId, waitUntilFinished: outcome };
    },
    async getJob(id: string) {
      return added.some((a) => a.opts.jobId === id) ? { id, waitUntilFinished: outcome } : undefined;
    },
  };
  return { queue: queue as unknown as Queue, added };
}
const events = {} as QueueEvents;

test('inspire generates a requestId, puts it in the data and makes it the BullMQ job id', async () => {
  const { queue, added } = fakeQueue('vamu-ai', async () => ({}));
  const jobs = new VamuAiJobs(queue);
  const enqueued = await jobs.inspire({ userId: 'u-ada', count: 2 });
  assert.match(enqueued.requestId, /^[0-9a-f-]{36}$/);
  assert.equal(enqueued.bullmqJobId, enqueued.requestId);
  assert.deepEqual(added, [{
    name: 'inspiration.generate',
    data: { userId: 'u-ada', count: 2, requestId: enqueued.requestId },
    opts: { ...DEFAULT_RETENTION, jobId: enqueued.requestId },
  }]);
  assert.deepEqual(DEFAULT_RETENTION, {
    removeOnComplete: { age: 3600, count: 1000 }, removeOnFail: { age: 86400 } });
});

test("the caller's requestId, traceparent, retention and job options are kept", async () => {
  const { queue, added } = fakeQueue('vamu-ai', async () => ({}));
  const jobs = new VamuAiJobs(queue, {
    retention: { removeOnFail: { age: 60 } },
    jobOptions: { attempts: 3, backoff: { type: 'exponential', delay: 1000 } },
  });
  await jobs.chat({ userId: 'u-ada', conversationId: 'c-1', message: 'hi', requestId: 'r-1' },
    { traceparent: '00-abc-def-01', jobOptions: { attempts: 5 } });
  await jobs.runAgent({ userId: 'u-ada', goal: 'jazz', traceparent: '00-in-data-01' });
  assert.deepEqual(added[0], {
    name: 'chatbot.reply',
    data: { userId: 'u-ada', conversationId: 'c-1', message: 'hi', requestId: 'r-1',
      traceparent: '00-abc-def-01' },
    opts: { removeOnComplete: { age: 3600, count: 1000 }, removeOnFail: { age: 60 }, attempts: 5,
      backoff: { type: 'exponential', delay: 1000 }, jobId: 'r-1' },
  });
  assert.equal(added[1]!.name, 'agent.run');
  assert.equal(added[1]!.data.traceparent, '00-in-data-01');
});

test('a requestId BullMQ cannot take as a job id is refused before anything is added', async () => {
  const { queue, added } = fakeQueue('vamu-ai', async () => ({}));
  const jobs = new VamuAiJobs(queue);
  for (const requestId of ['a:b', '12345']) {
    await assert.rejects(jobs.inspire({ userId: 'u-ada', requestId }), TypeError);
  }
  assert.equal(added.length, 0);
});

test('the *Now methods need the sync queue and its QueueEvents', async () => {
  const { queue } = fakeQueue('vamu-ai', async () => ({}));
  await assert.rejects(new VamuAiJobs(queue).inspireNow({ userId: 'u-ada' }),
    /need the syncQueue and syncQueueEvents/);
  await assert.rejects(new VamuAiJobs(queue).accepted('r-1'), /needs the queueEvents option/);
});

test('inspireNow resolves with the typed result, on the sync queue', async () => {
  const value = { jobId: JOB, celeryTaskId: 't-1', status: 'succeeded',
    result: { ideas: [{ title: 'T', description: 'D', category: 'music' }] } };
  const sync = fakeQueue('vamu-ai-sync', async () => value);
  const jobs = new VamuAiJobs(fakeQueue('vamu-ai', async () => ({})).queue,
    { syncQueue: sync.queue, syncQueueEvents: events });
  const now = await jobs.inspireNow({ userId: 'u-ada', requestId: 'r-2' }, { timeoutMs: 50 });
  assert.equal(now.result.ideas[0]!.title, 'T');
  assert.deepEqual(now, { ...value, requestId: 'r-2' });
  assert.equal(sync.added[0]!.opts.jobId, 'r-2');
});

test('a failed sync job throws VamuJobError with kind, message and jobId', async () => {
  const sync = fakeQueue('vamu-ai-sync', async () => {
    throw new Error(`user_not_found: User u-ghost not found. (job ${JOB})`);
  });
  const jobs = new VamuAiJobs(fakeQueue('vamu-ai', async () => ({})).queue,
    { syncQueue: sync.queue, syncQueueEvents: events });
  await assert.rejects(jobs.chatNow({ userId: 'u-ghost', conversationId: 'c', message: 'm',
    requestId: 'r-3' }), (err: unknown) => {
    assert.ok(err instanceof VamuJobError);
    assert.deepEqual([err.kind, err.message, err.jobId, err.requestId],
      ['user_not_found', 'User u-ghost not found.', JOB, 'r-3']);
    return true;
  });
});

test('accepted returns the row id of an async job, or the refusal', async () => {
  const ok = fakeQueue('vamu-ai', async () => ({ jobId: JOB, celeryTaskId: 't' }));
  const jobs = new VamuAiJobs(ok.queue, { queueEvents: events });
  const enqueued = await jobs.inspire({ userId: 'u-ada' });
  assert.deepEqual(await jobs.accepted(enqueued),
    { jobId: JOB, celeryTaskId: 't', requestId: enqueued.requestId });
  await assert.rejects(jobs.accepted('never-added'), /no BullMQ job never-added/);

  const refused = fakeQueue('vamu-ai', async () => {
    throw new Error('invalid_job: count: expected integer, got string');
  });
  const jobs2 = new VamuAiJobs(refused.queue, { queueEvents: events });
  await assert.rejects(jobs2.accepted(await jobs2.inspire({ userId: 'u-ada' })),
    (err: unknown) => err instanceof VamuJobError && err.kind === 'invalid_job'
      && err.jobId === undefined);
});
