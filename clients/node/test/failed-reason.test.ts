// parseFailedReason and VamuJobError, on the failedReason forms of vamu_tasks/bridge/contract.py:
// `<kind>: <message>`, then ` (job <uuid>)` exactly when a job row exists.
import assert from 'node:assert/strict';
import { test } from 'node:test';

import {
  FailedReasonKindValues,
  VamuJobError,
  isFailedReasonKind,
  parseFailedReason,
} from '@vamu/ai-jobs';

const JOB = '5b1e2c3d-4e5f-4a6b-8c7d-9e0f1a2b3c4d';

test('a refusal has a kind and a message, and no job', () => {
  assert.deepEqual(parseFailedReason('invalid_job: count: expected integer, got string'), {
    kind: 'invalid_job',
    message: 'count: expected integer, got string',
  });
  assert.deepEqual(
    parseFailedReason("quota_exceeded: user 'u-1' already started 25 jobs this hour"),
    { kind: 'quota_exceeded', message: "user 'u-1' already started 25 jobs this hour" },
  );
});

test('a reason with a row ends in (job <uuid>), which becomes jobId', () => {
  assert.deepEqual(
    parseFailedReason(`sync_timeout: did not finish within 8s; it goes on (job ${JOB})`),
    { kind: 'sync_timeout', message: 'did not finish within 8s; it goes on', jobId: JOB },
  );
  assert.deepEqual(parseFailedReason(`user_not_found: User u-ghost not found. (job ${JOB})`), {
    kind: 'user_not_found',
    message: 'User u-ghost not found.',
    jobId: JOB,
  });
});

test('the message may be empty, span lines and hold parentheses; only the last (job …) counts',
  () => {
    assert.deepEqual(parseFailedReason(`internal:  (job ${JOB})`), {
      kind: 'internal', message: '', jobId: JOB,
    });
    const message = `provider_error: 500 (upstream)\nsecond line (job not-a-uuid) (job ${JOB}) end`;
    assert.deepEqual(parseFailedReason(message), {
      kind: 'provider_error',
      message: `500 (upstream)\nsecond line (job not-a-uuid) (job ${JOB}) end`,
    });
    assert.deepEqual(parseFailedReason(`timeout: a (b) (job ${JOB})`), {
      kind: 'timeout', message: 'a (b)', jobId: JOB,
    });
  });

test('text of another form is unrecognized, kept whole', () => {
  for (const reason of [
    'job stalled more than allowable limit',
    'not_a_kind: something',
    'invalid_job:no space',
    'Invalid_job: capital',
    '',
  ]) {
    assert.deepEqual(parseFailedReason(reason), { kind: 'unrecognized', message: reason });
  }
});

test('every kind of the schema parses as itself', () => {
  for (const kind of FailedReasonKindValues) {
    assert.equal(isFailedReasonKind(kind), true);
    assert.equal(parseFailedReason(`${kind}: x (job ${JOB})`).kind, kind);
  }
  assert.equal(isFailedReasonKind('unrecognized'), false);
});

test('VamuJobError from a waitUntilFinished rejection carries the parsed reason', () => {
  const err = VamuJobError.fromWaitError(new Error(`user_not_found: gone (job ${JOB})`), 'req-1');
  assert.ok(err instanceof Error);
  assert.equal(err.name, 'VamuJobError');
  assert.equal(err.kind, 'user_not_found');
  assert.equal(err.message, 'gone');
  assert.equal(err.jobId, JOB);
  assert.equal(err.requestId, 'req-1');
  assert.equal(err.reason, `user_not_found: gone (job ${JOB})`);
});

test("bullmq's own wait time limit becomes wait_timeout", () => {
  const text = 'Job wait inspiration.generate timed out before finishing, no finish notification '
    + 'arrived after 10ms (id=req-1)';
  const err = VamuJobError.fromWaitError(new Error(text), 'req-1');
  assert.equal(err.kind, 'wait_timeout');
  assert.equal(err.jobId, undefined);
  assert.equal(err.reason, text);
});
