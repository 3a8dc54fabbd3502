// Webhook signature check, the same rules as vamu_tasks/notify/signing.py.
import { createHmac, timingSafeEqual } from 'node:crypto';

import type { EventPayloadMap, WebhookBody } from './generated.js';

export const SIGNATURE_HEADER = 'X-Vamu-Signature';
export const EVENT_ID_HEADER = 'X-Vamu-Event-Id';
export const DEFAULT_TOLERANCE_S = 300;

/** The events sent to the webhook: all but `chat-chunk` and `chat-restart`. */
export type WebhookEventName = WebhookBody['event'];

/**
 * {@link WebhookBody} with `data` tied to `event`: `switch (body.event)` narrows `body.data`
 * to that event's payload.
 */
export type TypedWebhookBody = {
  [E in WebhookEventName]: Omit<WebhookBody, 'event' | 'data'> & {
    event: E;
    data: EventPayloadMap[E];
  };
}[WebhookEventName];

/** The signature is missing, malformed, too old (or too far ahead), or does not match. */
export class WebhookSignatureError extends Error {
  override readonly name = 'WebhookSignatureError';
}

/** Node's `req.headers` (lower-case keys), a fetch `Headers`, or a plain object. */
export type HeadersLike =
  | { get(name: string): string | null }
  | Record<string, string | string[] | undefined>;

export interface VerifyOptions {
  /** Seconds the signed time may be away from now (default 300), against replays. */
  toleranceS?: number;
  /** The current time in ms (default `Date.now()`), for tests. */
  now?: number;
}

export interface VerifiedWebhook {
  /** The parsed body. Dedupe by `body.id`: a retry sends the same id, signed again. */
  body: TypedWebhookBody;
  /** The signed Unix time (`t=`). */
  timestamp: number;
}

function header(headers: HeadersLike, name: string): string | undefined {
  if (typeof headers.get === 'function') {
    return (headers as { get(name: string): string | null }).get(name) ?? undefined;
  }
  const wanted = name.toLowerCase();
  for (const [key, value] of Object.entries(headers as Record<string, unknown>)) {
    if (key.toLowerCase() !== wanted) continue;
    if (Array.isArray(value)) return value.join(',');
    return typeof value === 'string' ? value : undefined;
  }
  return undefined;
}

/**
 * Checks `X-Vamu-Signature: t=<unix>,v1=<hex HMAC-SHA256 of "<t>." + raw body>` and returns the
 * parsed body. Pass the raw body bytes as received (in NestJS: `{ rawBody: true }` and
 * `req.rawBody`), never re-serialised JSON. Throws {@link WebhookSignatureError}.
 */
export function verifyWebhook(
  rawBody: Buffer | Uint8Array | string,
  headers: HeadersLike,
  secret: string,
  options: VerifyOptions = {},
): VerifiedWebhook {
  const body = typeof rawBody === 'string' ? Buffer.from(rawBody, 'utf8') : Buffer.from(rawBody);
  const timestamp = verifySignature(body, header(headers, SIGNATURE_HEADER), secret, options);
  return { body: JSON.parse(body.toString('utf8')) as TypedWebhookBody, timestamp };
}

/** The signature check alone: returns the signed timestamp. */
export function verifySignature(
  body: Buffer,
  signature: string | undefined,
  secret: string,
  { toleranceS = DEFAULT_TOLERANCE_S, now = Date.now() }: VerifyOptions = {},
): number {
  if (!signature) throw new WebhookSignatureError(`Missing ${SIGNATURE_HEADER} header.`);
  const fields = new Map<string, string[]>();
  for (const part of signature.split(',')) {
    const trimmed = part.trim();
    const eq = trimmed.indexOf('=');
    const [k, v] = eq < 0 ? [trimmed, ''] : [trimmed.slice(0, eq), trimmed.slice(eq + 1)];
    fields.set(k, [...(fields.get(k) ?? []), v]);
  }
  const t = fields.get('t')?.[0]?.trim();
  if (t === undefined || !/^[+-]?\d+$/.test(t) || !Number.isSafeInteger(Number(t))) {
    throw new WebhookSignatureError('Signature header has no valid t=<unix time>.');
  }
  const timestamp = Number(t);
  if (Math.abs(now / 1000 - timestamp) > toleranceS) {
    throw new WebhookSignatureError(`Signature timestamp is outside the ${toleranceS}s tolerance.`);
  }
  const expected = Buffer.from(
    createHmac('sha256', secret).update(`${timestamp}.`).update(body).digest('hex'),
  );
  const ok = (fields.get('v1') ?? []).some((given) => {
    const candidate = Buffer.from(given);
    return candidate.length === expected.length && timingSafeEqual(candidate, expected);
  });
  if (!ok) throw new WebhookSignatureError('Signature does not match the body.');
  return timestamp;
}
