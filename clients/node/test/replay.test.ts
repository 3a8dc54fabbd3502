// replayChunks on stream entries as vamu_tasks/notify/chunks.py writes them (all values strings).
import assert from 'node:assert/strict';
import { test } from 'node:test';

import { chatStreamKey, replayChunks, type XRangeClient } from '@vamu/ai-jobs';

const JOB = '5b1e2c3d-4e5f-4a6b-8c7d-9e0f1a2b3c4d';

function entry(id: string, fields: Record<string, string | number>): [string, string[]] {
  return [id, Object.entries(fields).flatMap(([k, v]) => [k, String(v)])];
}
const chunk = (id: string, attempt: number, seq: number, delta: string) =>
  entry(id, { event: 'chat-chunk', jobId: JOB, requestId: 'req-1', conversationId: 'c-1', seq,
    delta, attempt });
const restart = (id: string, attempt: number) =>
  entry(id, { event: 'chat-restart', jobId: JOB, requestId: 'req-1', conversationId: 'c-1',
    attempt });

class FakeRedis implements XRangeClient {
  calls: Array<[string, string, string]> = [];
  constructor(private readonly entries: Array<[string, string[]]>) {}
  async xrange(key: string, start: string, end: string) {
    this.calls.push([key, start, end]);
    const after = start.startsWith('(') ? start.slice(1) : null;
    return this.entries.filter(([id]) => after === null || id > after);
  }
}

test('the latest attempt wins; a late chunk of an old attempt is ignored', async () => {
  const redis = new FakeRedis([
    chunk('1-0', 1, 0, 'Hel'), chunk('2-0', 1, 1, 'lo wo'),
    restart('3-0', 2), chunk('4-0', 2, 0, 'Hello'), chunk('5-0', 1, 2, 'rld'),
    chunk('6-0', 2, 1, ', world'),
  ]);
  const replay = await replayChunks(redis, JOB);
  assert.deepEqual(redis.calls, [[chatStreamKey(JOB), '-', '+']]);
  assert.equal(chatStreamKey(JOB), `vamu:chat:${JOB}`);
  assert.equal(replay.attempt, 2);
  assert.equal(replay.lastId, '6-0');
  assert.deepEqual(replay.chunks.map((c) => [c.streamId, c.seq, c.delta]),
    [['4-0', 0, 'Hello'], ['6-0', 1, ', world']]);
  assert.deepEqual(replay.chunks[0], { streamId: '4-0', jobId: JOB, requestId: 'req-1',
    conversationId: 'c-1', seq: 0, delta: 'Hello', attempt: 2 });
});

test('fromId reads only what came after it', async () => {
  const redis = new FakeRedis([chunk('1-0', 1, 0, 'a'), chunk('2-0', 1, 1, 'b')]);
  const replay = await replayChunks(redis, JOB, '1-0');
  assert.deepEqual(redis.calls[0], [chatStreamKey(JOB), '(1-0', '+']);
  assert.deepEqual(replay.chunks.map((c) => c.delta), ['b']);
  const none = await replayChunks(redis, JOB, '2-0');
  assert.deepEqual(none, { chunks: [], attempt: null, lastId: null });
});
