// `@vamu/ai-jobs/nestjs`: VamuAiModule registers the two queues through @nestjs/bullmq and
// provides VamuAiJobs. Needs @nestjs/common, @nestjs/core and @nestjs/bullmq (peers).
import { BullModule, getQueueToken } from '@nestjs/bullmq';
import {
  Module,
  type DynamicModule,
  type InjectionToken,
  type ModuleMetadata,
  type OnModuleDestroy,
  type OptionalFactoryDependency,
} from '@nestjs/common';
import { QueueEvents, type ConnectionOptions, type Queue } from 'bullmq';

import { VamuAiJobs, type Retention } from './producer.js';

export const VAMU_AI_OPTIONS = Symbol('VAMU_AI_OPTIONS');
const VAMU_AI_QUEUE_EVENTS = Symbol('VAMU_AI_QUEUE_EVENTS');

export const DEFAULT_QUEUE = 'vamu-ai';
export const DEFAULT_SYNC_QUEUE = 'vamu-ai-sync';

/** What the factory of {@link VamuAiModule.forRootAsync} returns. */
export interface VamuAiModuleOptions {
  /**
   * The Redis of `VAMU_REDIS_URL`: same server **and database** (database 1 in
   * docker-compose.yml). On another database jobs wait for ever, and nothing reports it.
   * Connection options, not an ioredis instance (each queue and QueueEvents opens its own).
   */
  connection: ConnectionOptions;
  /** BullMQ key prefix, as `VAMU_BULLMQ_PREFIX` (default `bull`). */
  prefix?: string;
  /** Overrides the default retention (an hour / 1000 completed jobs, a day for failed ones). */
  retention?: Partial<Retention>;
}

export interface VamuAiModuleAsyncOptions extends Pick<ModuleMetadata, 'imports'> {
  useFactory: (...args: any[]) => VamuAiModuleOptions | Promise<VamuAiModuleOptions>;
  inject?: Array<InjectionToken | OptionalFactoryDependency>;
  /** `VAMU_BULLMQ_QUEUE` (default `vamu-ai`). */
  queueName?: string;
  /** `VAMU_BULLMQ_SYNC_QUEUE` (default `vamu-ai-sync`). */
  syncQueueName?: string;
  /** Make VamuAiJobs injectable in every module (default false: import VamuAiModule). */
  isGlobal?: boolean;
}

/** The QueueEvents VamuAiJobs waits on; closed with the module. */
class QueueEventsPair implements OnModuleDestroy {
  constructor(readonly async: QueueEvents, readonly sync: QueueEvents) {}

  async onModuleDestroy(): Promise<void> {
    await Promise.all([this.async.close(), this.sync.close()]);
  }
}

@Module({})
export class VamuAiModule {
  /**
   * Registers `vamu-ai` and `vamu-ai-sync` with `BullModule.registerQueueAsync` and provides
   * {@link VamuAiJobs}, with QueueEvents for both queues (so `accepted` and the `*Now`
   * methods work). The queues are also exported: `@InjectQueue('vamu-ai')` works too.
   */
  static forRootAsync(options: VamuAiModuleAsyncOptions): DynamicModule {
    const queueName = options.queueName ?? DEFAULT_QUEUE;
    const syncQueueName = options.syncQueueName ?? DEFAULT_SYNC_QUEUE;
    const optionsProvider = {
      provide: VAMU_AI_OPTIONS,
      useFactory: options.useFactory,
      inject: options.inject ?? [],
    };
    // One module holds the options, for the queues' factories and for ours.
    const optionsModule: DynamicModule = {
      module: VamuAiOptionsModule,
      imports: options.imports ?? [],
      providers: [optionsProvider],
      exports: [VAMU_AI_OPTIONS],
    };
    const queue = (name: string) => ({
      name,
      imports: [optionsModule],
      inject: [VAMU_AI_OPTIONS],
      useFactory: (o: VamuAiModuleOptions) => ({ connection: o.connection, prefix: o.prefix }),
    });
    const queues = BullModule.registerQueueAsync(queue(queueName), queue(syncQueueName));
    return {
      module: VamuAiModule,
      global: options.isGlobal ?? false,
      imports: [optionsModule, queues],
      providers: [
        {
          provide: VAMU_AI_QUEUE_EVENTS,
          inject: [VAMU_AI_OPTIONS],
          useFactory: async (o: VamuAiModuleOptions) => {
            const events = (name: string) =>
              new QueueEvents(name, { connection: o.connection, prefix: o.prefix });
            const pair = new QueueEventsPair(events(queueName), events(syncQueueName));
            await Promise.all([pair.async.waitUntilReady(), pair.sync.waitUntilReady()]);
            return pair;
          },
        },
        {
          provide: VamuAiJobs,
          inject: [
            getQueueToken(queueName),
            getQueueToken(syncQueueName),
            VAMU_AI_QUEUE_EVENTS,
            VAMU_AI_OPTIONS,
          ],
          useFactory: (q: Queue, syncQueue: Queue, events: QueueEventsPair,
            o: VamuAiModuleOptions) =>
            new VamuAiJobs(q, {
              syncQueue,
              syncQueueEvents: events.sync,
              queueEvents: events.async,
              retention: o.retention,
            }),
        },
      ],
      exports: [VamuAiJobs, queues],
    };
  }
}

@Module({})
class VamuAiOptionsModule {}
