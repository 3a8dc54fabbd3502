// Boots the example: `node --import ... src/main.ts` is not needed to check it; `npm run example`
// type-checks it with tsc --strict.
import 'reflect-metadata';
import { NestFactory } from '@nestjs/core';

import { AppModule } from './app.module.js';

async function main(): Promise<void> {
  // rawBody: the webhook controller verifies the signature on the bytes as received.
  const app = await NestFactory.create(AppModule, { rawBody: true });
  app.enableShutdownHooks();
  await app.listen(Number(process.env.PORT ?? 3000));
}

void main();
