// Async and sync inspiration through VamuAiJobs.
import {
  BadRequestException,
  Body,
  Controller,
  GatewayTimeoutException,
  HttpException,
  HttpStatus,
  NotFoundException,
  Post,
} from '@nestjs/common';
import {
  VamuAiJobs,
  VamuJobError,
  type EnqueuedJob,
  type Idea,
  type InspirationGenerateData,
} from '@vamu/ai-jobs';

type IdeasRequest = Pick<InspirationGenerateData, 'userId' | 'count' | 'hint'>;

@Controller('ideas')
export class IdeasController {
  constructor(private readonly ai: VamuAiJobs) {}

  /** Queues the job; the ideas arrive later as `inspiration-ready` (with this requestId). */
  @Post()
  async request(@Body() body: IdeasRequest): Promise<EnqueuedJob> {
    return this.ai.inspire({ userId: body.userId, count: body.count ?? 3, hint: body.hint });
  }

  /** Waits up to 10 s for the ideas (set VAMU_BRIDGE_SYNC_TIMEOUT_S to about 8). */
  @Post('now')
  async now(@Body() body: IdeasRequest): Promise<{ jobId: string; ideas: Idea[] }> {
    try {
      const done = await this.ai.inspireNow({ userId: body.userId, count: body.count ?? 3 },
        { timeoutMs: 10_000 });
      return { jobId: done.jobId, ideas: done.result.ideas };
    } catch (err) {
      if (!(err instanceof VamuJobError)) throw err;
      switch (err.kind) {
        case 'invalid_job':
          throw new BadRequestException(err.message);
        case 'user_not_found':
          throw new NotFoundException(err.message);
        case 'quota_exceeded':
          throw new HttpException(err.message, HttpStatus.TOO_MANY_REQUESTS);
        case 'sync_timeout': // the job goes on: its event will come (err.jobId names it)
        case 'wait_timeout':
          throw new GatewayTimeoutException(err.message);
        default:
          throw err;
      }
    }
  }
}
