// The producer: adds vamu-tasks jobs to the BullMQ queues the bridge consumes.
import { randomUUID } from 'node:crypto';
import type { Job, JobsOptions, KeepJobs, Queue, QueueEvents } from 'bullmq';

import { VamuJobError } from './errors.js';
import type {
  AcceptedJob,
  AgentRunData,
  ChatbotReplyData,
  InspirationGenerateData,
  JobDataMap,
  JobName,
  JobResultMap,
  SyncJobResult,
} from './generated.js';

/** How long BullMQ keeps finished jobs in Redis (vamu-tasks keeps every job in `ai_jobs`). */
export interface Retention {
  removeOnComplete: boolean | number | KeepJobs;
  removeOnFail: boolean | number | KeepJobs;
}

/** Completed jobs: an hour, at most 1000; failed jobs: a day (docs/contracts.md). */
export const DEFAULT_RETENTION: Readonly<Retention> = Object.freeze({
  removeOnComplete: { age: 3600, count: 1000 },
  removeOnFail: { age: 86400 },
});

export interface VamuAiJobsOptions {
  /** The `vamu-ai-sync` queue: needed by `inspireNow`, `chatNow` and `runAgentNow`. */
  syncQueue?: Queue;
  /** `QueueEvents` of the sync queue (its own connection): needed by the `*Now` methods. */
  syncQueueEvents?: QueueEvents;
  /** `QueueEvents` of the `vamu-ai` queue: needed only by {@link VamuAiJobs.accepted}. */
  queueEvents?: QueueEvents;
  /** Overrides {@link DEFAULT_RETENTION}, field by field. */
  retention?: Partial<Retention>;
  /** BullMQ options for every async job (for example `attempts` and `backoff`). */
  jobOptions?: Omit<JobsOptions, 'jobId'>;
}

export interface EnqueueOptions {
  /** W3C trace context; put into the job data as `traceparent` (wins over `data.traceparent`). */
  traceparent?: string;
  /** BullMQ options for this job (`jobId` is always the requestId). */
  jobOptions?: Omit<JobsOptions, 'jobId'>;
}

export interface NowOptions extends EnqueueOptions {
  /**
   * How long to wait for the result (default 10 000 ms). Keep the bridge's
   * `VAMU_BRIDGE_SYNC_TIMEOUT_S` below it, so `sync_timeout` (which names the job) comes
   * first rather than `wait_timeout`.
   */
  timeoutMs?: number;
}

/**
 * A job on the async queue. There is no `jobId` here on purpose: `ai_jobs.id`, the `jobId` of
 * every event, webhook body and row, exists only once the bridge has accepted the job. Until
 * then the job is known by its `requestId`, which is also its BullMQ job id and, from
 * vamu-tasks, in every event of the job. Call {@link VamuAiJobs.accepted} for the `jobId`.
 */
export interface EnqueuedJob {
  /** Your idempotency key: the data's `requestId`, generated (UUID) when absent. */
  requestId: string;
  /** BullMQ's id of the job: always equal to `requestId`. */
  bullmqJobId: string;
}

/** The bridge's return value on `vamu-ai` (`jobId` is `ai_jobs.id`), with the requestId. */
export interface AcceptedRequest extends AcceptedJob {
  requestId: string;
}

/** The sync queue's return value, with the result typed for the job. */
export type NowResult<N extends JobName> = Omit<SyncJobResult, 'result'> & {
  result: JobResultMap[N];
  requestId: string;
};

/**
 * Typed producer for vamu-tasks. Sets the BullMQ `jobId` from the data's `requestId` (a UUID is
 * generated and put into the data when absent), a retention policy, and `traceparent` when
 * given. Failures come as {@link VamuJobError} with the parsed failedReason.
 */
export class VamuAiJobs {
  readonly queue: Queue;
  readonly syncQueue: Queue | undefined;
  private readonly syncQueueEvents: QueueEvents | undefined;
  private readonly queueEvents: QueueEvents | undefined;
  private readonly retention: Retention;
  private readonly jobOptions: Omit<JobsOptions, 'jobId'>;

  constructor(queue: Queue, options: VamuAiJobsOptions = {}) {
    this.queue = queue;
    this.syncQueue = options.syncQueue;
    this.syncQueueEvents = options.syncQueueEvents;
    this.queueEvents = options.queueEvents;
    this.retention = { ...DEFAULT_RETENTION, ...definedOnly(options.retention ?? {}) };
    this.jobOptions = options.jobOptions ?? {};
  }

  /** Adds an `inspiration.generate` job; the ideas arrive as `inspiration-ready`. */
  inspire(data: InspirationGenerateData, options?: EnqueueOptions): Promise<EnqueuedJob> {
    return this.enqueue('inspiration.generate', data, options);
  }

  /** Adds a `chatbot.reply` job; the reply streams as `chat-chunk`, then `chat-reply-ready`. */
  chat(data: ChatbotReplyData, options?: EnqueueOptions): Promise<EnqueuedJob> {
    return this.enqueue('chatbot.reply', data, options);
  }

  /** Adds an `agent.run` job; steps arrive as `agent-step`, the end as `agent-finished`. */
  runAgent(data: AgentRunData, options?: EnqueueOptions): Promise<EnqueuedJob> {
    return this.enqueue('agent.run', data, options);
  }

  /** `inspiration.generate` on the sync queue: resolves with the ideas, or throws. */
  inspireNow(
    data: InspirationGenerateData,
    options?: NowOptions,
  ): Promise<NowResult<'inspiration.generate'>> {
    return this.now('inspiration.generate', data, options);
  }

  /** `chatbot.reply` on the sync queue: resolves with the stored reply, or throws. */
  chatNow(data: ChatbotReplyData, options?: NowOptions): Promise<NowResult<'chatbot.reply'>> {
    return this.now('chatbot.reply', data, options);
  }

  /** `agent.run` on the sync queue: resolves with the run's result, or throws. */
  runAgentNow(data: AgentRunData, options?: NowOptions): Promise<NowResult<'agent.run'>> {
    return this.now('agent.run', data, options);
  }

  /** Adds a job of any name to the async queue (what `inspire`, `chat`, `runAgent` do). */
  async enqueue<N extends JobName>(
    name: N,
    data: JobDataMap[N],
    options: EnqueueOptions = {},
  ): Promise<EnqueuedJob> {
    const job = await this.add(this.queue, name, data, options, this.jobOptions);
    return { requestId: job.requestId, bullmqJobId: job.requestId };
  }

  /**
   * Waits until the bridge has accepted an async job and returns its `jobId` (`ai_jobs.id`).
   * Throws {@link VamuJobError}: `invalid_job`, `unknown_job`, `quota_exceeded` or
   * `budget_exceeded` when the bridge refused it, `wait_timeout` when it did not answer within
   * `timeoutMs` (default 35 000; the job stays queued). Needs `queueEvents` (of the async
   * queue).
   */
  async accepted(job: EnqueuedJob | string, options: { timeoutMs?: number } = {})
    : Promise<AcceptedRequest> {
    const events = this.queueEvents;
    if (events === undefined) {
      throw new TypeError('VamuAiJobs.accepted needs the queueEvents option (of the async queue)');
    }
    const requestId = typeof job === 'string' ? job : job.requestId;
    const found: Job | undefined = await this.queue.getJob(requestId);
    if (found === undefined) {
      throw new VamuJobError('unrecognized',
        `no BullMQ job ${requestId} in ${this.queue.name} (never added, or removed by retention)`,
        { requestId });
    }
    const value = await waitFor<AcceptedJob>(found, events, options.timeoutMs, requestId);
    return { ...value, requestId };
  }

  private async now<N extends JobName>(
    name: N,
    data: JobDataMap[N],
    options: NowOptions = {},
  ): Promise<NowResult<N>> {
    const { syncQueue, syncQueueEvents } = this;
    if (syncQueue === undefined || syncQueueEvents === undefined) {
      throw new TypeError(
        `VamuAiJobs.${name}: the *Now methods need the syncQueue and syncQueueEvents options`);
    }
    const { job, requestId } = await this.add(syncQueue, name, data, options, {});
    const value = await waitFor<SyncJobResult>(job, syncQueueEvents, options.timeoutMs,
      requestId);
    return { ...value, result: value.result as unknown as JobResultMap[N], requestId };
  }

  private async add<N extends JobName>(
    queue: Queue,
    name: N,
    data: JobDataMap[N],
    options: EnqueueOptions,
    defaults: Omit<JobsOptions, 'jobId'>,
  ): Promise<{ job: Job; requestId: string }> {
    const requestId = data.requestId ?? randomUUID();
    if (requestId.includes(':') || /^\d+$/.test(requestId)) {
      // BullMQ refuses such custom job ids; a UUID is fine.
      throw new TypeError(`requestId ${JSON.stringify(requestId)} cannot be a BullMQ job id: `
        + 'it must not contain ":" nor be all digits');
    }
    const withIds: JobDataMap[N] = { ...data, requestId };
    if (options.traceparent !== undefined) withIds.traceparent = options.traceparent;
    const job = await queue.add(name, withIds, {
      ...this.retention,
      ...defaults,
      ...options.jobOptions,
      jobId: requestId,
    });
    return { job, requestId };
  }
}

// The bridge's own limit (VAMU_BRIDGE_SYNC_TIMEOUT_S, 30 s) plus a margin: by default its
// sync_timeout, which names the job, arrives before this wait gives up.
const DEFAULT_TIMEOUT_MS = 35_000;

async function waitFor<T>(
  job: Job,
  events: QueueEvents,
  timeoutMs = DEFAULT_TIMEOUT_MS,
  requestId?: string,
)
  : Promise<T> {
  try {
    return (await job.waitUntilFinished(events, timeoutMs)) as T;
  } catch (err) {
    throw VamuJobError.fromWaitError(err, requestId);
  }
}

function definedOnly<T extends object>(value: T): Partial<T> {
  return Object.fromEntries(Object.entries(value).filter(([, v]) => v !== undefined)) as Partial<T>;
}
