// The vamu-tasks webhook, verified on the raw body (create the app with { rawBody: true }).
import {
  Controller,
  Headers,
  HttpCode,
  Post,
  Req,
  UnauthorizedException,
  type RawBodyRequest,
} from '@nestjs/common';
import { WebhookSignatureError, verifyWebhook } from '@vamu/ai-jobs';
import type { IncomingMessage } from 'node:http';

const seen = new Set<string>(); // use a store shared by your instances

@Controller('hooks/vamu')
export class VamuWebhookController {
  @Post()
  @HttpCode(204)
  receive(
    @Req() req: RawBodyRequest<IncomingMessage>,
    @Headers() headers: Record<string, string | undefined>,
  ): void {
    let body;
    try {
      ({ body } = verifyWebhook(req.rawBody ?? Buffer.alloc(0), headers,
        process.env.VAMU_WEBHOOK_SECRET ?? ''));
    } catch (err) {
      if (err instanceof WebhookSignatureError) throw new UnauthorizedException(err.message);
      throw err;
    }
    if (seen.has(body.id)) return; // a retry of a delivery already handled
    seen.add(body.id);
    switch (body.event) {
      case 'inspiration-ready':
        console.log(`ideas of job ${body.data.jobId} (request ${body.data.requestId}) are ready`);
        break;
      case 'ai-job-failed':
        console.log(`job ${body.data.jobId} failed: ${body.data.errorKind}`);
        break;
      case 'agent-step':
        console.log(`job ${body.data.jobId} step ${body.data.step} (${body.data.kind})`);
        break;
      case 'chat-reply-ready':
      case 'agent-finished':
        break;
    }
  }
}
