// Run-time half of scripts/check-captured.mjs (the compile-time half is tsc on
// build/captured/payloads.ts): the payloads of a real run, from VAMU_CAPTURED, against the
// schemas the types are generated from and against the package's helpers. Skipped without it.
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { test } from 'node:test';

import { Redis } from 'ioredis';

import {
  EventNames,
  JobNames,
  parseFailedReason,
  replayChunks,
  verifyWebhook,
} from '@vamu/ai-jobs';

import { validate } from './schema.js';

interface Captured {
  redisUrl: string;
  webhookSecret: string;
  events: Array<{ event: string; data: unknown }>;
  webhooks: Array<{ body: string; signature: string }>;
  bullmq: Array<{ name: string; sync: boolean; data: unknown; returnvalue?: any; nowResult?: any }>;
  failedReasons: Array<{ reason: string; kind: string; jobId: string | null }>;
  rows: Array<Record<string, any>>;
  chats: Array<{ jobId: string; reply: string }>;
}

const file = process.env.VAMU_CAPTURED;
const skip = file === undefined && 'VAMU_CAPTURED is not set (tests/e2e/test_node_client.py sets it)';
const captured: Captured = file === undefined ? ({} as Captured) : JSON.parse(readFileSync(file, 'utf8'));
const contracts = JSON.parse(readFileSync(
  new URL('../../../../docs/schemas/contracts.json', import.meta.url), 'utf8'));

function valid(def: string, value: unknown, what: string) {
  assert.ok(def in contracts.$defs, `no $def ${def}`);
  const problems = validate(contracts, { $ref: `#/$defs/${def}` }, value);
  assert.deepEqual(problems, [], `${what} does not match ${def}: ${JSON.stringify(value)}`);
}

test('every Socket.IO event was seen, and each payload matches its schema', { skip }, () => {
  assert.deepEqual(new Set(captured.events.map((e) => e.event)), new Set(EventNames));
  for (const { event, data } of captured.events) {
    valid(contracts['x-vamu-events'][event], data, event);
  }
});

test('every webhook delivery verifies and matches WebhookBody, for every webhook event',
  { skip }, () => {
    const names = new Set<string>();
    for (const { body, signature } of captured.webhooks) {
      const verified = verifyWebhook(Buffer.from(body, 'utf8'), { 'x-vamu-signature': signature },
        captured.webhookSecret, { toleranceS: 3600 });
      valid('WebhookBody', verified.body, 'webhook body');
      valid(contracts['x-vamu-events'][verified.body.event], verified.body.data, verified.body.event);
      names.add(verified.body.event);
    }
    assert.deepEqual(names, new Set(contracts.$defs.WebhookBody.properties.event.enum));
  });

test('job data, return values and results of every job match their schemas', { skip }, () => {
  const jobs = contracts['x-vamu-jobs'];
  const seen = { data: new Set(), accepted: 0, sync: new Set(), now: new Set() };
  for (const job of captured.bullmq) {
    valid(jobs[job.name].data, job.data, `${job.name} data`);
    seen.data.add(job.name);
    if (job.returnvalue === undefined) continue;
    if (job.sync) {
      valid('SyncJobResult', job.returnvalue, `${job.name} sync return value`);
      valid(jobs[job.name].result, job.returnvalue.result, `${job.name} result`);
      seen.sync.add(job.name);
    } else {
      valid('AcceptedJob', job.returnvalue, `${job.name} return value`);
      seen.accepted += 1;
    }
    if (job.nowResult !== undefined) {
      const { requestId, ...rest } = job.nowResult;
      assert.deepEqual(rest, job.returnvalue);
      assert.equal(requestId, (job.data as { requestId: string }).requestId);
      seen.now.add(job.name);
    }
  }
  assert.deepEqual(seen.data, new Set(JobNames));
  assert.deepEqual(seen.sync, new Set(JobNames));
  assert.deepEqual(seen.now, new Set(JobNames));
  assert.ok(seen.accepted >= JobNames.length);
});

test('every failedReason parses into a known kind, with the job when it has a row', { skip }, () => {
  assert.ok(captured.failedReasons.length > 0);
  for (const { reason, kind, jobId } of captured.failedReasons) {
    const parsed = parseFailedReason(reason);
    assert.equal(parsed.kind, kind, reason);
    assert.ok(contracts.$defs.FailedReasonKind.enum.includes(parsed.kind), reason);
    assert.equal(parsed.jobId, jobId ?? undefined, reason);
    if (jobId !== null) assert.ok(captured.rows.some((r) => r.id === jobId), `no row ${jobId}`);
  }
});

test('the job rows match AiJobRow, with results of their job', { skip }, () => {
  assert.ok(captured.rows.length > 0);
  const byFeature = { inspiration: 'inspiration.generate', chatbot: 'chatbot.reply',
    agent: 'agent.run' } as const;
  for (const row of captured.rows) {
    valid('AiJobRow', row, `row ${row.id}`);
    const name = byFeature[row.feature as keyof typeof byFeature];
    valid(contracts['x-vamu-jobs'][name].data, row.request, `row ${row.id} request`);
    if (row.result !== null) valid(contracts['x-vamu-jobs'][name].result, row.result, `row ${row.id} result`);
  }
  const actions = captured.rows.flatMap((r) => r.result?.proposals ?? []).map((p) => p.action);
  assert.deepEqual(new Set(actions), new Set(
    contracts.$defs.Proposal.oneOf.map((s: { $ref: string }) =>
      contracts.$defs[s.$ref.split('/').pop()!].properties.action.const)));
});

test('replayChunks reads the real chat stream back to the stored reply', { skip }, async () => {
  const redis = new Redis(captured.redisUrl);
  try {
    for (const { jobId, reply } of captured.chats) {
      const replay = await replayChunks(redis, jobId);
      assert.ok(replay.attempt !== null && replay.attempt > 1, 'the run had a chat-restart');
      assert.deepEqual(replay.chunks.map((c) => c.seq), replay.chunks.map((_, i) => i));
      assert.equal(replay.chunks.map((c) => c.delta).join(''), reply);
      for (const chunk of replay.chunks) {
        const { streamId, ...payload } = chunk;
        valid('ChatChunkEvent', payload, `replayed chunk ${streamId}`);
      }
      const rest = await replayChunks(redis, jobId, replay.chunks[0]!.streamId);
      assert.deepEqual(rest.chunks, replay.chunks.slice(1));
    }
  } finally {
    redis.disconnect();
  }
});
