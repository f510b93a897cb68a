import { type AppConfig, loadConfig } from '#config';
import { createHttpApp, type FeatureModules, type OpenApiOptions } from '#http';
import { createLogger } from '#logging';
import { type NestFastifyApplication } from '@nestjs/platform-fastify';

/** A started app on a random loopback port, and how to reach and close it. */
export interface TestApp {
  readonly app: NestFastifyApplication;
  readonly baseUrl: string;
  close(): Promise<void>;
}

/**
 * Starts the shared HTTP core plus `imports` against the Redis at `redisUrl`, configured from
 * `env` (validated like a real process), on a free port of 127.0.0.1.
 */
export async function startTestApp(options: {
  readonly redisUrl: string;
  readonly env?: Record<string, string>;
  readonly imports?: FeatureModules;
  readonly openApi?: OpenApiOptions;
}): Promise<TestApp> {
  const config: AppConfig = loadConfig({ LOG_LEVEL: 'silent', ...options.env });
  const app = await createHttpApp({
    config,
    logger: createLogger(config, 'test'),
    redis: { url: options.redisUrl, source: 'configured', stop: () => Promise.resolve() },
    ...(options.imports === undefined ? {} : { imports: options.imports }),
    ...(options.openApi === undefined ? {} : { openApi: options.openApi }),
  });
  await app.listen(0, '127.0.0.1');
  const baseUrl = (await app.getUrl()).replace('[::1]', '127.0.0.1');
  return { app, baseUrl, close: () => app.close() };
}
