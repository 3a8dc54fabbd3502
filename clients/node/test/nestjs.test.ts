// VamuAiModule in a real Nest application context, on a real Redis (skipped when none answers
// at VAMU_TEST_REDIS_URL, default redis://127.0.0.1:6379): the queues come from
// @nestjs/bullmq, VamuAiJobs adds to them, and its QueueEvents see a stand-in bridge's answers.
import 'reflect-metadata';

import assert from 'node:assert/strict';
import { randomUUID } from 'node:crypto';
import { createConnection } from 'node:net';
import { after, before, test } from 'node:test';

import { Module, type INestApplicationContext } from '@nestjs/common';
import { NestFactory } from '@nestjs/core';
import { getQueueToken } from '@nestjs/bullmq';
import { Worker, type Queue } from 'bullmq';

import { VamuAiJobs, VamuJobError } from '@vamu/ai-jobs';
import { VamuAiModule } from '@vamu/ai-jobs/nestjs';

const url = new URL(process.env.VAMU_TEST_REDIS_URL ?? 'redis://127.0.0.1:6379');
// Database 12, as the Python tests' app Redis; keys under a prefix of this run, removed after.
const connection = { host: url.hostname, port: Number(url.port || 6379), db: 12 };
const prefix = `vamu-node-test-${randomUUID().slice(0, 8)}`;
const JOB = randomUUID();

const redisUp = await new Promise<boolean>((resolve) => {
  const socket = createConnection({ host: connection.host, port: connection.port });
  socket.once('connect', () => { socket.destroy(); resolve(true); });
  socket.once('error', () => resolve(false));
});

let app: INestApplicationContext;
const workers: Worker[] = [];

before(async () => {
  if (!redisUp) return;
  @Module({ imports: [VamuAiModule.forRootAsync({ useFactory: async () => ({ connection, prefix }) })] })
  class AppModule {}
  app = await NestFactory.createApplicationContext(AppModule, { logger: false });
  // A stand-in for the bridge: accepts `vamu-ai` jobs, fails `vamu-ai-sync` jobs as a row would.
  workers.push(
    new Worker('vamu-ai', async () => ({ jobId: JOB, celeryTaskId: 'celery-1' }),
      { connection, prefix }),
    new Worker('vamu-ai-sync', async (job) => {
      if (job.data.userId === 'u-ghost') throw new Error(`user_not_found: no such user (job ${JOB})`);
      return { jobId: JOB, celeryTaskId: null, status: 'succeeded',
        result: { ideas: [{ title: 'T', description: 'D', category: 'music' }] } };
    }, { connection, prefix }),
  );
});

after(async () => {
  if (!redisUp) return;
  await Promise.all(workers.map((w) => w.close()));
  for (const name of ['vamu-ai', 'vamu-ai-sync']) {
    await app.get<Queue>(getQueueToken(name)).obliterate({ force: true });
  }
  await app.close(); // closes the queues and VamuAiModule's QueueEvents
});

const skip = !redisUp && `no Redis at ${url.host}`;

test('VamuAiJobs adds to the vamu-ai queue registered through @nestjs/bullmq', { skip }, async () => {
  const jobs = app.get(VamuAiJobs);
  const enqueued = await jobs.inspire({ userId: 'u-ada', count: 2 }, { traceparent: '00-t-01' });
  const job = await app.get<Queue>(getQueueToken('vamu-ai')).getJob(enqueued.requestId);
  assert.ok(job);
  assert.equal(job.name, 'inspiration.generate');
  assert.deepEqual(job.data, { userId: 'u-ada', count: 2, requestId: enqueued.requestId,
    traceparent: '00-t-01' });
  assert.deepEqual(job.opts.removeOnComplete, { age: 3600, count: 1000 });
  assert.deepEqual(await jobs.accepted(enqueued, { timeoutMs: 10_000 }),
    { jobId: JOB, celeryTaskId: 'celery-1', requestId: enqueued.requestId });
});

test('the *Now methods wait on vamu-ai-sync and throw VamuJobError', { skip }, async () => {
  const jobs = app.get(VamuAiJobs);
  const done = await jobs.inspireNow({ userId: 'u-ada' }, { timeoutMs: 10_000 });
  assert.equal(done.result.ideas[0]?.title, 'T');
  await assert.rejects(jobs.inspireNow({ userId: 'u-ghost' }, { timeoutMs: 10_000 }),
    (err: unknown) => err instanceof VamuJobError && err.kind === 'user_not_found'
      && err.jobId === JOB && err.message === 'no such user');
});
