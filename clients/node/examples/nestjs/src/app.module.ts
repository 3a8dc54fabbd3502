// The example app's root module: VamuAiModule registers `vamu-ai` and `vamu-ai-sync` through
// @nestjs/bullmq and provides VamuAiJobs.
import { Module } from '@nestjs/common';
import { VamuAiModule } from '@vamu/ai-jobs/nestjs';

import { AiGateway } from './ai.gateway.js';
import { IdeasController } from './ideas.controller.js';
// A stub of the internal API vamu-tasks reads (docs/openapi/internal-api.json), serving the
// sample users and events: point VAMU_API_BASE_URL at this app to try the workers against it.
import { InternalApiController } from './internal-api.controller.js';
import { VamuWebhookController } from './webhook.controller.js';

@Module({
  imports: [
    VamuAiModule.forRootAsync({
      // Same Redis server and database as VAMU_REDIS_URL: database 1 in docker-compose.yml.
      useFactory: () => ({
        connection: {
          host: process.env.REDIS_HOST ?? '127.0.0.1',
          port: Number(process.env.REDIS_PORT ?? 6379),
          db: Number(process.env.REDIS_DB ?? 1),
        },
      }),
    }),
  ],
  controllers: [IdeasController, VamuWebhookController, InternalApiController],
  providers: [AiGateway],
})
export class AppModule {}
