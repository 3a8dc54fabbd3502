// BullMQ's failedReason for a vamu-tasks job, parsed; and the error the package throws.
import { FailedReasonKindValues, type FailedReasonKind } from './generated.js';

/**
 * A failedReason that is not of the vamu-tasks form: BullMQ's own (for example `job stalled
 * more than allowable limit`) or one from another producer's worker.
 */
export const UNRECOGNIZED = 'unrecognized';

/**
 * The parts of a failedReason. The bridge fails every BullMQ job it fails with
 * `<kind>: <message>`, followed by ` (job <uuid>)` exactly when a job row exists
 * (docs/contracts.md, "What the bridge does with a job").
 */
export interface FailedReason {
  /** A {@link FailedReasonKind}, or `'unrecognized'` for text of another form. */
  kind: FailedReasonKind | typeof UNRECOGNIZED;
  /** What went wrong, for a person to read, without the kind and the `(job …)` suffix. */
  message: string;
  /** The job row (`ai_jobs.id`, the `jobId` of the events), when one exists. */
  jobId?: string;
}

const FAILED_REASON =
  /^([a-z_]+): ([\s\S]*?)(?: \(job ([0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12})\))?$/;
const KINDS: ReadonlySet<string> = new Set(FailedReasonKindValues);

export function isFailedReasonKind(value: string): value is FailedReasonKind {
  return KINDS.has(value);
}

/** Splits a BullMQ failedReason into `{kind, message, jobId?}`; never throws. */
export function parseFailedReason(reason: string): FailedReason {
  const match = FAILED_REASON.exec(reason);
  if (match === null || !isFailedReasonKind(match[1]!)) {
    return { kind: UNRECOGNIZED, message: reason };
  }
  const parsed: FailedReason = { kind: match[1], message: match[2]! };
  if (match[3] !== undefined) parsed.jobId = match[3];
  return parsed;
}

/**
 * `wait_timeout`: the caller's own time limit (`timeoutMs` of the `*Now` methods or of
 * `accepted`) passed before the bridge answered. The job may still run: the bridge goes on
 * holding it, and the app hears of its end through the events.
 */
export type VamuJobErrorKind = FailedReason['kind'] | 'wait_timeout';

/** A job that failed, was refused, or did not answer in time, as the package reports it. */
export class VamuJobError extends Error {
  override readonly name = 'VamuJobError';
  readonly kind: VamuJobErrorKind;
  /** `ai_jobs.id`, when the job has a row. */
  readonly jobId: string | undefined;
  /** The `requestId` of the job (also its BullMQ job id). */
  readonly requestId: string | undefined;
  /** BullMQ's text, unparsed. */
  readonly reason: string;

  constructor(
    kind: VamuJobErrorKind,
    message: string,
    options: { jobId?: string; requestId?: string; reason?: string; cause?: unknown } = {},
  ) {
    super(message, options.cause === undefined ? undefined : { cause: options.cause });
    this.kind = kind;
    this.jobId = options.jobId;
    this.requestId = options.requestId;
    this.reason = options.reason ?? message;
  }

  /** The error for the rejection of `job.waitUntilFinished` (its message is the failedReason). */
  static fromWaitError(err: unknown, requestId?: string): VamuJobError {
    const reason = err instanceof Error ? err.message : String(err);
    // bullmq: "Job wait <name> timed out before finishing, no finish notification arrived
    // after <ttl>ms (id=<id>)"
    if (/^Job wait .* timed out before finishing/.test(reason)) {
      return new VamuJobError('wait_timeout', reason, { requestId, reason, cause: err });
    }
    const parsed = parseFailedReason(reason);
    return new VamuJobError(parsed.kind, parsed.message, {
      jobId: parsed.jobId,
      requestId,
      reason,
      cause: err,
    });
  }
}
