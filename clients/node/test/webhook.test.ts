// verifyWebhook against bodies signed by vamu_tasks/notify/signing.py: the committed fixture, and
// (when the repository's .venv exists) a body signed by Python during the test.
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { randomUUID } from 'node:crypto';
import { existsSync, readFileSync } from 'node:fs';
import { test } from 'node:test';

import { WebhookSignatureError, verifyWebhook, type TypedWebhookBody } from '@vamu/ai-jobs';

const pkg = new URL('../../', import.meta.url); // build/test/ -> clients/node/
const fixture = JSON.parse(
  readFileSync(new URL('test/fixtures/signed-webhook.json', pkg), 'utf8'),
) as { secret: string; timestamp: number; body: string; header: string };
const at = (t: number) => ({ now: t * 1000 });

test('a body signed by signing.py verifies, with Node, fetch and plain headers', () => {
  const { body, header, secret, timestamp } = fixture;
  for (const headers of [
    { 'x-vamu-signature': header }, // Node's req.headers
    { 'X-Vamu-Signature': header },
    new Headers({ 'X-Vamu-Signature': header }),
  ]) {
    const verified = verifyWebhook(Buffer.from(body), headers, secret, at(timestamp + 10));
    assert.equal(verified.timestamp, timestamp);
    const typed: TypedWebhookBody = verified.body;
    assert.equal(typed.event, 'inspiration-ready');
    if (typed.event === 'inspiration-ready') assert.equal(typed.data.feature, 'inspiration');
  }
  assert.equal(verifyWebhook(body, { 'x-vamu-signature': header }, secret, at(timestamp)).timestamp,
    timestamp);
});

function rejects(fn: () => unknown, message: RegExp) {
  assert.throws(fn, (err: unknown) => err instanceof WebhookSignatureError && message.test(err.message));
}

test('a changed body, another secret, a missing or malformed header are refused', () => {
  const { body, header, secret, timestamp } = fixture;
  const ok = at(timestamp);
  rejects(() => verifyWebhook(Buffer.from(body.replace('u-ada', 'u-eve')),
    { 'x-vamu-signature': header }, secret, ok), /does not match/);
  rejects(() => verifyWebhook(body, { 'x-vamu-signature': header }, 'other', ok), /does not match/);
  rejects(() => verifyWebhook(body, {}, secret, ok), /Missing X-Vamu-Signature/);
  rejects(() => verifyWebhook(body, { 'x-vamu-signature': 'v1=abc' }, secret, ok), /no valid t=/);
  rejects(() => verifyWebhook(body, { 'x-vamu-signature': 't=soon,v1=abc' }, secret, ok),
    /no valid t=/);
  const upper = header.replace(/v1=([0-9a-f]+)/, (_, hex: string) => `v1=${hex.toUpperCase()}`);
  rejects(() => verifyWebhook(body, { 'x-vamu-signature': upper }, secret, ok), /does not match/);
});

test('the timestamp must be within the tolerance either way (replays of old deliveries)', () => {
  const { body, header, secret, timestamp } = fixture;
  const h = { 'x-vamu-signature': header };
  assert.equal(verifyWebhook(body, h, secret, at(timestamp + 300)).timestamp, timestamp);
  assert.equal(verifyWebhook(body, h, secret, at(timestamp - 300)).timestamp, timestamp);
  rejects(() => verifyWebhook(body, h, secret, at(timestamp + 301)), /outside the 300s/);
  rejects(() => verifyWebhook(body, h, secret, at(timestamp - 301)), /outside the 300s/);
  assert.equal(
    verifyWebhook(body, h, secret, { now: (timestamp + 3000) * 1000, toleranceS: 3600 }).timestamp,
    timestamp);
});

test('any matching v1 passes (several signatures in one header)', () => {
  const { body, header, secret, timestamp } = fixture;
  const [t, v1] = header.split(',');
  const h = { 'x-vamu-signature': `${t}, v1=${'0'.repeat(64)},${v1}` };
  assert.equal(verifyWebhook(body, h, secret, at(timestamp)).timestamp, timestamp);
});

const python = new URL('../../.venv/bin/python', pkg);
test('a fresh body signed by signing.py now verifies', { skip: !existsSync(python) && 'no .venv' },
  () => {
    const body = JSON.stringify({ id: randomUUID(), event: 'agent-step', userId: 'u-ü',
      data: { jobId: randomUUID(), step: 1, kind: 'model' } });
    const secret = `whsec-${randomUUID()}`;
    const header = execFileSync(python.pathname, ['-c',
      'import sys; from vamu_tasks.notify.signing import sign; '
      + 'print(sign(sys.stdin.buffer.read(), sys.argv[1]), end="")', secret],
    { input: Buffer.from(body), cwd: new URL('../../', pkg).pathname }).toString();
    const verified = verifyWebhook(Buffer.from(body), { 'x-vamu-signature': header }, secret);
    assert.equal(verified.body.event, 'agent-step');
    assert.ok(Math.abs(verified.timestamp - Date.now() / 1000) < 60);
  });
