// @vamu/ai-jobs: the typed Node client of vamu-tasks. The NestJS module is in
// `@vamu/ai-jobs/nestjs`, so plain Node apps need no NestJS package.
export * from './generated.js';
export {
  DEFAULT_RETENTION,
  VamuAiJobs,
  type AcceptedRequest,
  type EnqueueOptions,
  type EnqueuedJob,
  type NowOptions,
  type NowResult,
  type Retention,
  type VamuAiJobsOptions,
} from './producer.js';
export {
  UNRECOGNIZED,
  VamuJobError,
  isFailedReasonKind,
  parseFailedReason,
  type FailedReason,
  type VamuJobErrorKind,
} from './errors.js';
export {
  chatStreamKey,
  replayChunks,
  type ChatReplay,
  type ReplayedChunk,
  type XRangeClient,
} from './replay.js';
export {
  DEFAULT_TOLERANCE_S,
  EVENT_ID_HEADER,
  SIGNATURE_HEADER,
  WebhookSignatureError,
  verifySignature,
  verifyWebhook,
  type HeadersLike,
  type TypedWebhookBody,
  type WebhookEventName,
  type VerifiedWebhook,
  type VerifyOptions,
} from './webhook.js';
